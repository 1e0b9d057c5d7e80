"""The run's side of a planning phase (rankitect.searchers.planned): its jobs run on the pool of
workers, with a bar over the steps the jobs report and the phase's log in the events."""

from __future__ import annotations

import sys
import time
from collections.abc import Hashable, Mapping
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rankitect.errors import UserError
from rankitect.experiment.events import NO_EVENTS, SearchEvents
from rankitect.experiment.executor import CallFailed, TrialPool
from rankitect.searchers.planned import PLANNING_DIR, PlanningJob
from rankitect.searchers.supernet_train import read_progress

PROGRESS_EVERY_S = 2.0  # at most this often a progress event of the planning phase


class PoolJobRunner:
    """`JobRunner` over a TrialPool: jobs start as slots free up."""

    def __init__(self, pool: TrialPool, progress: bool, events: SearchEvents = NO_EVENTS) -> None:
        self.pool, self.progress, self.events = pool, progress, events

    @property
    def workers(self) -> int:
        return self.pool.size

    def log(self, message: str) -> None:
        self.events.log(f"[{PLANNING_DIR}] {message}")
        if self.progress:
            print(f"[{PLANNING_DIR}] {message}", file=sys.stderr, flush=True)

    def run(self, jobs: Mapping[Hashable, PlanningJob]) -> dict[Hashable, Any]:
        pending, results = list(jobs), {}
        reported, reported_at = (-1, -1), 0.0
        files = {k: Path(job.kwargs["progress_file"]) for k, job in jobs.items() if job.kwargs.get("progress_file")}
        for path in files.values():
            path.unlink(missing_ok=True)
        bar = tqdm(total=0, unit="step", disable=not self.progress or not files, file=sys.stderr,
                   dynamic_ncols=True, desc=PLANNING_DIR)
        try:
            while pending or self.pool.busy:
                while pending and self.pool.free > 0:
                    key = pending.pop(0)
                    self.pool.submit_call(key, jobs[key].fn, **jobs[key].kwargs)
                for key, result, _ in self.pool.wait(timeout=0.5):
                    if isinstance(result, CallFailed):
                        raise UserError(f"planning job {jobs[key].label!r} failed: {result.error}")
                    results[key] = result
                    self.log(f"{jobs[key].label} done ({len(results)}/{len(jobs)})")
                steps = [read_progress(path) for path in files.values()]
                bar.total = max(bar.total or 0, sum(total for _, total in steps))
                bar.n = sum(step for step, _ in steps)
                bar.refresh()
                if files and (bar.n, bar.total) != reported and time.monotonic() - reported_at >= PROGRESS_EVERY_S:
                    reported, reported_at = (bar.n, bar.total), time.monotonic()
                    self.events.progress(PLANNING_DIR, bar.n, bar.total, "steps")
        finally:
            bar.close()
        return results
