"""The Ray backend (FOOLING_BACKEND=ray): the cluster connection (cluster.py), engine actors that
keep the models and run jobs with the local workers (engine.py), the server's pool of them
(pool.py), the backend that places jobs on them and mirrors their frames (runner.py), and scoring
on them (scoring.py). See docs/deploy.md."""
