"""What a running search reports as it goes, for whoever watches it: callbacks passed to
`rankitect.search(..., callbacks=[...])`, the loggers of the config's `logging` section, a job
server, a notebook.

The driver calls these methods on its own thread, in the order things happen:

    search_started
    phase("planning"), progress...           one-shot, DNAS and proxy searchers only
    phase("trials")
      trial_started                          a trial is handed to the pool of workers
      trial_epoch... then trial              a trial's outcome reached the driver
      baseline                               a baseline finished
      best, pareto                           after a trial or baseline changed them
    phase("final")                           with final.seeds >= 2
    search_finished

Each method is a no-op here, so a watcher overrides only what it needs. A method that raises
stops the search like any driver error (running the same command again continues it): a
watcher should catch its own failures. Trials are passed in their result.json form
(`rankitect.experiment.results.trial_record`), whose `curve` holds the per-epoch validation
metric. Workers run in other processes, so a trial's epochs reach the driver with its outcome:
`trial_epoch` is called for each recorded epoch just before `trial`, not live.
"""

from __future__ import annotations

import logging
from collections.abc import Sequence
from pathlib import Path
from typing import Any

log = logging.getLogger(__name__)


class SearchEvents:
    """No-op base of search watchers and callbacks (see the module doc)."""

    def search_started(self, run_dir: Path, config: dict[str, Any], continued: bool) -> None:
        """The search starts in `run_dir`, `continued` when the folder held it already (a run
        again after Ctrl-C, or with a larger budget; False after --force); `config` as
        RUN/config.json holds it."""

    def phase(self, phase: str, message: str) -> None:
        """A phase starts: "planning" (one-shot / DNAS / proxy work), "trials", "final"."""

    def progress(self, phase: str, done: int, total: int, unit: str) -> None:
        """Work done within a phase, e.g. supernet steps of the planning phase."""

    def trial_started(self, number: int, choices: dict[str, Any], arch: dict[str, Any]) -> None:
        """Trial `number` was handed to a worker: its choices and architecture (JSON form)."""

    def trial_epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None:
        """One recorded epoch of trial `number`: `metrics` maps the curve's metric (e.g. ne) to
        its validation value after `epoch` epochs (1-based)."""

    def trial(self, trial: dict[str, Any], done: int, total: int) -> None:
        """A trial was told to the searcher; `done` of `total` trials are finished now."""

    def best(self, trial: dict[str, Any]) -> None:
        """The best trial (lowest validation NE) changed to `trial`."""

    def pareto(self, points: list[dict[str, Any]]) -> None:
        """The front over trials and baselines changed; `points` by FLOPs."""

    def baseline(self, name: str, record: dict[str, Any]) -> None:
        """A baseline finished (`record` as baselines.json holds it)."""

    def log(self, text: str) -> None:
        """A line worth showing (what the driver prints with --progress)."""

    def search_finished(self, result: Any) -> None:
        """The search ended with `result` (a SearchResult, as written to result.json); not
        called when it was interrupted or failed."""


NO_EVENTS = SearchEvents()


class EventFanout(SearchEvents):
    """Every event to each of `watchers`, in their order."""

    def __init__(self, watchers: Sequence[SearchEvents]) -> None:
        if isinstance(watchers, SearchEvents) or not isinstance(watchers, (list, tuple)):
            raise TypeError(f"callbacks: must be a list of rankitect.SearchCallback objects, "
                            f"got {type(watchers).__name__}")
        for i, watcher in enumerate(watchers):
            if not isinstance(watcher, SearchEvents):
                raise TypeError(f"callbacks[{i}]: must be a rankitect.SearchCallback (SearchEvents), "
                                f"got {type(watcher).__name__}")
        self.watchers = list(watchers)

    def _each(self, method: str, *args: Any) -> None:
        for watcher in self.watchers:
            getattr(watcher, method)(*args)

    def search_started(self, run_dir: Path, config: dict[str, Any], continued: bool) -> None:
        self._each("search_started", run_dir, config, continued)

    def phase(self, phase: str, message: str) -> None:
        self._each("phase", phase, message)

    def progress(self, phase: str, done: int, total: int, unit: str) -> None:
        self._each("progress", phase, done, total, unit)

    def trial_started(self, number: int, choices: dict[str, Any], arch: dict[str, Any]) -> None:
        self._each("trial_started", number, choices, arch)

    def trial_epoch(self, number: int, epoch: int, metrics: dict[str, float]) -> None:
        self._each("trial_epoch", number, epoch, metrics)

    def trial(self, trial: dict[str, Any], done: int, total: int) -> None:
        self._each("trial", trial, done, total)

    def best(self, trial: dict[str, Any]) -> None:
        self._each("best", trial)

    def pareto(self, points: list[dict[str, Any]]) -> None:
        self._each("pareto", points)

    def baseline(self, name: str, record: dict[str, Any]) -> None:
        self._each("baseline", name, record)

    def log(self, text: str) -> None:
        self._each("log", text)

    def search_finished(self, result: Any) -> None:
        self._each("search_finished", result)

    def close(self) -> None:
        """Close every watcher that has a `close` (the loggers' files and runs). One that fails
        to close is logged and the others are still closed: the search's own outcome (its
        result, its error, Ctrl-C) is what the caller sees."""
        for watcher in self.watchers:
            close = getattr(watcher, "close", None)
            if callable(close):
                try:
                    close()
                except Exception as exc:  # noqa: BLE001 - a logger's store may be gone by now
                    log.warning("%s did not close: %s: %s", type(watcher).__name__, type(exc).__name__, exc)
