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
        if self.progress:  # on a line of its own, above the bar when one is drawn
            tqdm.write(f"[{PLANNING_DIR}] {message}", file=sys.stderr)

    def run(self, jobs: Mapping[Hashable, PlanningJob]) -> dict[Hashable, Any]:
        pending, results = list(jobs), {}
        reported, reported_at = (-1, -1), 0.0
        files = {k: Path(job.kwargs["progress_file"]) for k, job in jobs.items() if job.kwargs.get("progress_file")}
        for path in files.values():
            path.unlink(missing_ok=True)
        # The bar counts jobs, each as far as its reported steps go: its total is known from the
        # start (a total in steps grows as each job starts and reports its own).
        bar = tqdm(total=len(files), disable=not self.progress or not files, file=sys.stderr, dynamic_ncols=True,
                   desc=PLANNING_DIR, bar_format="{desc}: {percentage:3.0f}%|{bar}| {n:.1f}/{total} jobs "
                                                 "[{elapsed}<{remaining}]")
        try:
            while pending or self.pool.busy:
                while pending and self.pool.free > 0:
                    key = pending.pop(0)
                    self.pool.submit_call(key, jobs[key].fn, task_name=jobs[key].label, **jobs[key].kwargs)
                for key, result, _ in self.pool.wait(timeout=0.5):
                    if isinstance(result, CallFailed):
                        raise UserError(f"planning job {jobs[key].label!r} failed: {result.error}")
                    results[key] = result
                    self.log(f"{jobs[key].label} done ({len(results)}/{len(jobs)})")
                steps = [read_progress(path) for path in files.values()]
                bar.n = sum(min(1.0, step / total) for step, total in steps if total)
                bar.refresh()
                done_total = (sum(step for step, _ in steps), sum(total for _, total in steps))
                if files and done_total != reported and time.monotonic() - reported_at >= PROGRESS_EVERY_S:
                    reported, reported_at = done_total, time.monotonic()
                    self.events.progress(PLANNING_DIR, *done_total, "steps")
        finally:
            bar.close()
        return results
