"""Jobs: a spec, a bounded queue and worker pool that drives the fooling methods step by step, the
live state streams read, the SQLite record and the files a finished job leaves. Knows nothing of HTTP."""
