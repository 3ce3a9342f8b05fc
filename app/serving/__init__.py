"""Serving models: the single compute thread, dynamic batching, scoring, image decoding and the
resident Lab state (settings + registry + scorer). Reads the registry; knows nothing of jobs or HTTP."""
