"""What a running search reports as it goes, for whoever watches it (a job server, a notebook).

`search(..., events=obj)` calls these methods on the driver's thread, in the order things
happen; each is a no-op here, so a watcher overrides only what it needs. A method that raises
stops the search like any driver error: watchers should not raise. Trials are passed in their
result.json form (`rankitect.experiment.results.trial_record`).
"""

from __future__ import annotations

from typing import Any


class SearchEvents:
    """No-op base of search watchers (see the module doc)."""

    def phase(self, phase: str, message: str) -> None:
        """A phase starts: "planning" (one-shot / DNAS / proxy work), "trials", "final"."""

    def progress(self, phase: str, done: int, total: int, unit: str) -> None:
        """Work done within a phase, e.g. supernet steps of the planning phase."""

    def trial(self, trial: dict[str, Any], done: int, total: int) -> None:
        """A trial was told to the searcher; `done` of `total` trials are finished now."""

    def best(self, trial: dict[str, Any]) -> None:
        """The best trial (lowest validation NE) changed to `trial`."""

    def pareto(self, points: list[dict[str, Any]]) -> None:
        """The NE-vs-FLOPs front changed; `points` by FLOPs."""

    def baseline(self, name: str, record: dict[str, Any]) -> None:
        """A baseline finished (`record` as baselines.json holds it)."""

    def log(self, text: str) -> None:
        """A line worth showing (what the driver prints with --progress)."""


NO_EVENTS = SearchEvents()
