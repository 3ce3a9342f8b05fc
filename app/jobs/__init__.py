"""Jobs: one job's life without threads (run.py), its live state and controls (job.py), admission
(checks, caps, quotas), the live jobs and how one ends (board.py), the local backend's queue and
workers (workers.py), the runner the web uses (runner.py), the SQLite record and the files a
finished job leaves; the Ray backend in ray/. Knows nothing of HTTP."""
