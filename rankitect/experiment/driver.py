"""The ask / run / tell loop of a search, in objects with one job each:

- `AskGate` decides when the searcher may be asked (budget, concurrency, time);
- `TellOrder` holds finished trials until every lower number is told;
- `BaselineRuns` trains the baselines beside the trials and keeps baselines.json;
- `ProgressView` shows the bar and tells the events what a tell changed;
- `Driver` joins them: asks, screens FLOPs, submits to the pool, tells in order.

Trial n is asked only once trials 0..n-C-1 are told (C = `searcher.concurrency`, by default
the number of workers), so what the searcher knows at each ask, and hence every choice it
makes, does not depend on timing. A trial's choices are decoded and its architecture
validated once, at its ask; the worker gets the validated architecture.
"""

from __future__ import annotations

import sys
import time
from dataclasses import dataclass, field
from typing import Any

from tqdm import tqdm

from rankitect.arch.graph import Architecture
from rankitect.arch.validate import ValidatedArchitecture, validate
from rankitect.cost import cost_of
from rankitect.errors import ArchitectureError, ConfigError
from rankitect.experiment.events import NO_EVENTS, SearchEvents
from rankitect.experiment.executor import TrialPool
from rankitect.experiment.plan import Plan
from rankitect.experiment.pruning import PastTrial, PruningSnapshot
from rankitect.experiment.results import (
    BASELINES_DIR,
    SearchResult,
    collect,
    curve_metric,
    curve_of,
    load_baselines,
    objective_values,
    save_baselines,
)
from rankitect.experiment.retention import CheckpointRetention
from rankitect.experiment.trial import TrialOutcome, TrialSpec, read_outcome
from rankitect.json_values import json_safe
from rankitect.searchers.base import Candidate, Searcher, is_search_trial, search_trials
from rankitect.searchers.screen import CostScreen
from rankitect.train.run import ARCH_FILE


@dataclass
class AskedTrial:
    """A candidate as the driver holds it from its ask to its tell: decoded and validated once."""

    candidate: Candidate
    arch: Architecture | None = None  # None: its choices do not decode
    validated: ValidatedArchitecture | None = None  # None: it does not decode or validate
    attrs: dict[str, Any] = field(default_factory=dict)  # stored on the study trial at its tell

    @property
    def number(self) -> int:
        return self.candidate.number


def trial_spec(plan: Plan, name: str, validated: ValidatedArchitecture, seed: int, folder: str,
               pruning: PruningSnapshot | None = None) -> TrialSpec:
    """What a worker needs to train and score `validated` into RUN/`folder`."""
    return TrialSpec(name=name, arch=validated, data_path=plan.dataset.uri, dates=plan.dates,
                     train=plan.config.trial_train(seed), out_dir=str(plan.run_dir / folder),
                     prune_metric=curve_metric(plan.config.objectives), pruning=pruning)


class AskGate:
    """When the searcher may be asked: fewer than `limit` trials to train were asked, the
    asks lead the tells by less than `concurrency`, and `seconds` have not passed."""

    def __init__(self, limit: int, concurrency: int, seconds: float | None, asked: int, told: int,
                 to_train: int) -> None:
        self.limit, self.concurrency, self.seconds = limit, concurrency, seconds
        self.asked, self.told, self.to_train = asked, told, to_train
        self.started = time.monotonic()

    def open(self) -> bool:
        in_time = self.seconds is None or time.monotonic() - self.started < self.seconds
        return self.to_train < self.limit and self.asked < self.told + self.concurrency and in_time


class TellOrder:
    """Finished trials wait here until every lower number is told; `skipped` numbers (baselines
    recorded in the study beside the search) are never told."""

    def __init__(self, next_number: int, skipped: frozenset[int] = frozenset()) -> None:
        self.next, self.skipped = next_number, skipped
        self.waiting: dict[int, tuple[AskedTrial, TrialOutcome, int]] = {}
        self._skip()

    def _skip(self) -> None:
        while self.next in self.skipped:
            self.next += 1

    def put(self, trial: AskedTrial, outcome: TrialOutcome, attempts: int) -> None:
        self.waiting[trial.number] = (trial, outcome, attempts)

    def pop_next(self) -> tuple[AskedTrial, TrialOutcome, int] | None:
        item = self.waiting.pop(self.next, None)
        if item is not None:
            self.next += 1
            self._skip()
        return item


class BaselineRuns:
    """The baselines not complete yet: submitted while slots are free, recorded in baselines.json."""

    def __init__(self, plan: Plan, retention: CheckpointRetention, events: SearchEvents) -> None:
        self.plan, self.retention, self.events = plan, retention, events
        self.records = load_baselines(plan.run_dir)
        self.queue = [n for n in plan.baselines if self.records.get(n, {}).get("status") != "complete"]

    def submit(self, pool: TrialPool) -> None:
        while pool.free > 0 and self.queue:
            name = self.queue.pop(0)
            pool.submit(("baseline", name), trial_spec(self.plan, f"baseline {name}", self.plan.baselines[name],
                                                       self.plan.config.seed, f"{BASELINES_DIR}/{name}"))

    def finished(self, name: str, outcome: TrialOutcome) -> None:
        self.records[name] = {"status": outcome.status, "arch": self.plan.baselines[name].arch.to_dict(),
                              "metrics": outcome.metrics, "test_metrics": outcome.test_metrics,
                              "seconds": outcome.seconds, **({"error": outcome.error} if outcome.error else {})}
        curve = curve_of(outcome.intermediate, curve_metric(self.plan.config.objectives))
        if curve:
            self.records[name]["curve"] = curve
        save_baselines(self.plan.run_dir, self.records)
        self.retention.discard_baselines([name])  # a failed one runs again from scratch
        self.events.baseline(name, self.records[name])


class ProgressView:
    """The trial bar (best NE, front size) and the events of each tell: the trial, a new best,
    a changed front."""

    def __init__(self, limit: int, finished: int, show: bool, events: SearchEvents) -> None:
        self.limit, self.finished, self.events = limit, finished, events
        self.bar = tqdm(total=limit, initial=min(finished, limit), unit="trial", disable=not show,
                        file=sys.stderr, dynamic_ncols=True)
        self.shown_best: int | None = None
        self.shown_front: list[int] = []

    def told(self, result: SearchResult, number: int | None) -> None:
        """After a tell: `number` the trial told, None for a rejected one (not counted)."""
        best = result.best["metrics"].get("ne", float("nan")) if result.best else float("nan")
        self.bar.set_postfix(best_ne=f"{best:.4f}", front=len(result.pareto))
        if number is None:
            return
        self.finished += 1
        self.bar.update(1)
        record = next(t for t in result.trials if t["number"] == number)
        curve = record.get("curve") or {"epochs": [], "values": []}
        for epoch, value in zip(curve["epochs"], curve["values"]):
            self.events.trial_epoch(number, epoch, {curve["metric"]: value})
        self.events.trial(record, min(self.finished, self.limit), self.limit)
        if result.best is not None and result.best["number"] != self.shown_best:
            self.shown_best = result.best["number"]
            self.events.best(result.best)
        self.front(result)

    def front(self, result: SearchResult) -> None:
        """Tell the events of the front (over trials and baselines) when it changed."""
        front = [t["number"] if "number" in t else t["baseline"] for t in result.pareto]
        if front != self.shown_front:
            self.shown_front = front
            self.events.pareto(result.pareto)

    def close(self) -> None:
        self.bar.close()


class Driver:
    """Runs a search's trials and baselines to its budget. Not thread-safe; one per search."""

    def __init__(self, plan: Plan, searcher: Searcher, pool: TrialPool, show: bool,
                 events: SearchEvents = NO_EVENTS, retention: CheckpointRetention | None = None) -> None:
        self.plan, self.searcher, self.pool, self.events = plan, searcher, pool, events
        self.retention = retention or CheckpointRetention(plan.run_dir, plan.config.budget, plan.config.directions,
                                                          plan.config.final.candidates)
        self.screen = CostScreen(plan.config.budget.max_flops, plan.config.budget.max_params)
        self.baselines = BaselineRuns(plan, self.retention, events)
        self.queue = [self._decoded(c) for c in searcher.pending()]  # asked by an earlier driver, never told
        self.running: dict[int, AskedTrial] = {}
        told = searcher.told()
        stored = searcher.study.get_trials(deepcopy=False)
        rejected = sum(1 for t in told if stored[t.number].user_attrs.get("rejected"))
        asked = len(search_trials(searcher.study))
        # Trial numbers that record baselines beside the search: a trial's place among the
        # search's own (its seed, its pruning history) leaves them out.
        self.beside = frozenset(t.number for t in stored if not is_search_trial(t))
        seeded = {t.user_attrs.get("baseline") for t in stored}
        for name, choices in plan.seeds.items():  # asked first; they do not count against budget.trials
            if name not in seeded:
                searcher.enqueue(choices, {"baseline": name})
        limit = searcher.trial_limit(plan.config.budget.trials) + len(plan.seeds)
        self.gate = AskGate(limit, searcher.options.concurrency or pool.size, plan.config.budget.seconds,
                            asked=asked, told=len(told), to_train=len(told) - rejected + len(self.queue))
        self.order = TellOrder(min([t.number for t in self.queue] + [len(stored)]), self.beside)
        self.view = ProgressView(limit, len(told) - rejected, show, events)

    def run(self) -> None:
        try:
            # An earlier driver may have died before applying the policy to what it told.
            self.retention.apply(self._collect())
            self.retention.discard_baselines(sorted(self.baselines.records))
            self.queue = [t for t in self.queue if not self._settled(t)]
            self._tell_ready()
            while True:
                self.baselines.submit(self.pool)
                while self.pool.free > 0 and self.queue:
                    self._submit(self.queue.pop(0))
                if not self.pool.busy:
                    self._tell_ready()
                    if self.queue or self.baselines.queue:
                        continue
                    if not self.order.waiting and not self.running:
                        return
                    raise RuntimeError(f"results wait for trial {self.order.next}, which is not running "
                                       f"(waiting: {sorted(self.order.waiting)})")
                for (kind, key), outcome, attempts in self.pool.wait(timeout=0.5):
                    if kind == "baseline":
                        self.baselines.finished(key, outcome)
                        self.view.front(self._collect())  # a baseline can change the front
                    else:
                        self.order.put(self.running.pop(key), outcome, attempts)
                self._tell_ready()
        finally:
            self.view.close()

    def _collect(self) -> SearchResult:
        """The result as the study holds it now (no planning summary: this runs after every tell)."""
        return collect(self.plan.run_dir, self.searcher.study, self.plan.config.objectives, with_planning=False)

    # -- asking ----------------------------------------------------------------------------
    def _decoded(self, candidate: Candidate) -> AskedTrial:
        trial = AskedTrial(candidate)
        try:
            trial.arch = self.plan.space.decode(candidate.choices)
            trial.validated = validate(trial.arch, self.plan.space.schema)
        except (ArchitectureError, ConfigError) as exc:
            trial.attrs["error"] = f"invalid architecture: {exc}"
        return trial

    def _ask(self) -> None:
        """Ask one candidate: queue it, or have its rejection told (invalid, over max_flops or
        max_params)."""
        trial = self._decoded(self.searcher.ask())
        self.gate.asked += 1
        if trial.validated is None:
            self.gate.to_train += 1
            self.order.put(trial, TrialOutcome(status="failed", error=trial.attrs.pop("error")), 0)
            return
        cost = cost_of(trial.validated)
        if not self.screen.admits(cost):
            trial.attrs["rejected"] = True
            self.order.put(trial, TrialOutcome(status="pruned", error=self.screen.reason(cost)), 0)
            return
        self.gate.to_train += 1
        self.queue.append(trial)

    def _settled(self, trial: AskedTrial) -> bool:
        """Whether a trial asked by an earlier driver needs no training now: its choices do not
        make a valid architecture (told failed), or a worker already left its outcome."""
        if trial.validated is None:
            self.order.put(trial, TrialOutcome(status="failed", error=trial.attrs.pop("error")), 0)
            return True
        return self._adopt(trial)

    def _adopt(self, trial: AskedTrial) -> bool:
        """Have the outcome a worker already left for `trial` told (the driver died before
        telling it), instead of training it again. False if there is none to adopt."""
        folder = self.plan.run_dir / "trials" / f"{trial.number:04d}"
        outcome = read_outcome(folder)
        if outcome is None or outcome.status == "failed" or trial.arch is None:
            return False
        if not (folder / ARCH_FILE).is_file() or Architecture.load(folder / ARCH_FILE).to_dict() != trial.arch.to_dict():
            return False
        trial.attrs["adopted"] = True
        self.order.put(trial, outcome, 1)
        return True

    def _submit(self, trial: AskedTrial) -> None:
        assert trial.validated is not None  # only valid trials are queued (_ask, _settled)
        number = trial.number
        spec = trial_spec(self.plan, f"trial {number}", trial.validated, self.plan.config.seed + self._place(number),
                          f"trials/{number:04d}", self._pruning(number))
        self.running[number] = trial
        self.pool.submit(("trial", number), spec)
        self.events.trial_started(number, dict(trial.candidate.choices), trial.validated.arch.to_dict())

    def _place(self, number: int) -> int:
        """Trial `number`'s place among the search's own trials (its number, less the baselines
        recorded beside the search before it)."""
        return number - sum(1 for b in self.beside if b < number)

    def _pruning(self, number: int) -> PruningSnapshot | None:
        """The history trial `number` is pruned against: trials 0..number-C, as at its ask."""
        kind = self.searcher.options.pruner
        if kind == "none":
            return None
        history = tuple(PastTrial(t.state, t.values[0] if t.values else None, t.intermediate)
                        for t in self.searcher.told()
                        if t.state in ("complete", "pruned")
                        and self._place(t.number) <= self._place(number) - self.gate.concurrency)
        return PruningSnapshot(kind, self.plan.config.directions[0], history)

    # -- telling ---------------------------------------------------------------------------
    def _tell_ready(self) -> None:
        """Tell waiting results in trial-number order, asking whatever each tell allows."""
        while True:
            while self.gate.open():
                self._ask()
            ready = self.order.pop_next()
            if ready is None:
                return
            self._tell(*ready)

    def _tell(self, trial: AskedTrial, outcome: TrialOutcome, attempts: int) -> None:
        values = objective_values(self.plan.config.objectives, outcome.metrics) if outcome.status == "complete" \
            else None
        stored = {"arch": trial.arch.to_dict() if trial.arch else None, "metrics": outcome.metrics,
                  "test_metrics": outcome.test_metrics, "seconds": outcome.seconds,
                  "wall_seconds": outcome.wall_seconds, "attempts": attempts, "worker": outcome.worker, **trial.attrs}
        if outcome.error:
            stored["error"] = outcome.error
        self.searcher.tell(trial.number, values, outcome.status, outcome.intermediate, json_safe(stored))
        self.gate.told += 1
        result = self._collect()
        self.retention.apply(result)  # the told trial is in the study: best/ first, then removals
        self.view.told(result, None if trial.attrs.get("rejected") else trial.number)
