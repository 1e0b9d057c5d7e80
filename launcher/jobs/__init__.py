"""Search jobs of `rankitect serve`: the SQLite job store, the runner that starts each job as a
driver process on the server's Ray, and that process's entry point.

- `store.JobStore`: jobs, their numbered events and their results, in one SQLite file (WAL).
- `runner.JobRunner`: queue, at most `max_jobs` driver processes at once, cancel, resume,
  recovery of the jobs a killed server left running.
- `worker`: `python -m launcher.jobs.worker`, one job's search (then its export), reporting
  structured events as JSON lines on stdout.
"""
