"""`search(config)`: one search run, from config to result.json, on a Ray cluster or a local Ray.

The driver asks the searcher for candidates, rejects those over `budget.max_flops` from the
registry's cost, runs the rest and the baselines on a pool of Ray workers, and tells results
to the searcher in trial-number order. Trial n is asked only once trials 0..n-C-1 are told
(C = `searcher.concurrency`, by default the number of workers), so what the searcher knows
at each ask, and hence every choice it makes, does not depend on timing.

The run folder holds everything needed to continue: the study (trials and their outcomes),
baselines.json, config.json. Running the same command again (after Ctrl-C, a SIGKILL, or with
a larger budget) continues: finished trials are kept, interrupted ones run again under their
numbers. RUN/best/ follows the best trial as trials are told, and only the checkpoints that
`budget.keep_checkpoints` names stay on disk (rankitect/searchers/retention.py).
"""

from __future__ import annotations

import json
import shutil
import statistics
import sys
import time
from collections.abc import Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from tqdm import tqdm

from rankitect.arch.graph import Architecture
from rankitect.blocks.fused_tables import CUDA_ONLY_OPTIMIZERS
from rankitect.cost import cost_of
from rankitect.data.dataset import Dataset
from rankitect.errors import ArchitectureError, ConfigError, UserError
from rankitect.searchers.base import Candidate, Searcher, make_searcher, searcher_class, searcher_options
from rankitect.searchers.config import OBJECTIVES, SearchConfig
from rankitect.searchers.events import NO_EVENTS, SearchEvents
from rankitect.searchers.planned import PlannedSearcher, PlanningContext
from rankitect.searchers.pruning import PastTrial, PruningSnapshot
from rankitect.searchers.ray_pool import TrialPool, cluster_slots, ray_session
from rankitect.searchers.report import write_pareto_plot
from rankitect.searchers.result import (
    BASELINES_DIR,
    SearchResult,
    collect,
    json_safe,
    load_baselines,
    save_baselines,
)
from rankitect.searchers.retention import CheckpointRetention
from rankitect.searchers.trial import TrialOutcome, TrialSpec, read_outcome
from rankitect.space import SearchSpace, get_space, make_space, resolve_architecture, space_names
from rankitect.train.run import ARCH_FILE

CONFIG_FILE = "config.json"
STUDY_FILE = "study.db"
_RESUMABLE_KEYS = ("budget", "final")  # may change between runs of the same search
MAX_REJECTED_IN_A_ROW = 500


class SearchInterrupted(UserError):
    """The driver was stopped with Ctrl-C; running the same command again continues."""


@dataclass(frozen=True)
class Plan:
    """Everything checked before anything starts."""

    config: SearchConfig
    run_dir: Path
    dataset: Dataset
    train_dates: tuple[str, ...]
    valid_dates: tuple[str, ...]
    test_dates: tuple[str, ...]
    space: SearchSpace
    baselines: dict[str, Architecture]


def plan_search(config: SearchConfig, out: Path) -> Plan:
    """Open the data, resolve dates, space and baselines; ConfigError/UserError if anything is off."""
    dataset = Dataset.open(config.data.path)
    dates = {key: tuple(dataset.select_dates(getattr(config.data, key), f"data.{key}"))
             for key in ("train_dates", "valid_dates", "test_dates")}
    for a, b in (("train_dates", "valid_dates"), ("train_dates", "test_dates"), ("valid_dates", "test_dates")):
        overlap = sorted(set(dates[a]) & set(dates[b]))
        if overlap:
            raise ConfigError(f"data.{b}: overlaps data.{a} on {overlap}")
    space = make_space(config.space.name, dataset.schema, config.space.options)
    searcher_options(config.searcher.name, config.searcher.options, config.directions)
    needs_supernet = searcher_class(config.searcher.name).needs_supernet
    if needs_supernet and not space.has_supernets():
        with_supernets = [n for n in space_names() if get_space(n).has_supernets()]
        raise ConfigError(f"searcher.name: {config.searcher.name!r} needs a space that builds supernets; "
                          f"space {space.name!r} does not (spaces that do: {with_supernets})")
    trains_supernet = needs_supernet or (space.has_supernets() and config.searcher.options.get("warmup_steps", 0))
    if trains_supernet and config.train.embedding_optimizer in CUDA_ONLY_OPTIMIZERS:
        raise ConfigError(f"train.embedding_optimizer: {config.train.embedding_optimizer!r} runs on CUDA only, and "
                          f"searcher {config.searcher.name!r} trains supernets on CPU; use rowwise_adagrad, "
                          f"adagrad, sgd or dense")
    baselines = {}
    for i, name in enumerate(config.baselines):
        arch = resolve_architecture(name, dataset.schema, field=f"baselines[{i}]")
        try:
            cost_of(arch, dataset.schema)
        except ArchitectureError as exc:
            raise ConfigError(f"baselines[{i}] ({name}): {exc}") from None
        baselines[arch.name or Path(name).stem] = arch
    return Plan(config, Path(out), dataset, dates["train_dates"], dates["valid_dates"], dates["test_dates"],
                space, baselines)


def prepare_run_dir(plan: Plan, force: bool) -> bool:
    """Create the run folder, or check that it holds this search; True when continuing one."""
    run_dir, saved_path = plan.run_dir, plan.run_dir / CONFIG_FILE
    current = plan.config.to_dict()
    if saved_path.is_file() and not force:
        saved = json.loads(saved_path.read_text())
        differs = sorted(k for k in set(saved) | set(current)
                         if k not in _RESUMABLE_KEYS and saved.get(k) != current.get(k))
        if differs:
            raise UserError(f"{run_dir} holds a search with another {differs[0]!r} "
                            f"({saved.get(differs[0])!r} there, {current.get(differs[0])!r} now); "
                            f"use another --out, or --force to start over")
        saved_path.write_text(json.dumps(current, indent=2) + "\n")
        return True
    if run_dir.exists() and any(run_dir.iterdir()):
        if not force:
            raise UserError(f"{run_dir} exists and is not a search run; use another --out")
        if not saved_path.is_file():
            raise UserError(f"{run_dir} exists and is not a search run; refusing to replace it")
        shutil.rmtree(run_dir)
    run_dir.mkdir(parents=True, exist_ok=True)
    saved_path.write_text(json.dumps(current, indent=2) + "\n")
    return False


def search(config: SearchConfig | Mapping[str, Any], out: Path | str, address: str | None = None,
           force: bool = False, progress: bool | None = None, events: SearchEvents = NO_EVENTS) -> SearchResult:
    """Run (or continue) a search; returns its result, also written to `out`/result.json.
    `events` hears of phases, planning progress, trials, best, front and baselines as they happen."""
    cfg = config if isinstance(config, SearchConfig) else SearchConfig.from_dict(config)
    plan = plan_search(cfg, Path(out))
    storage = cfg.searcher.options.get("storage") or f"sqlite:///{(plan.run_dir / STUDY_FILE).resolve()}"
    prepare_run_dir(plan, force)
    retention = CheckpointRetention(plan.run_dir, cfg.budget)
    searcher = make_searcher(cfg.searcher.name, cfg.searcher.options, plan.space, cfg.directions, cfg.seed,
                             storage)
    try:
        with ray_session(address):
            slots = cluster_slots(cfg.train.cpus_per_trial, cfg.train.gpus_per_trial)
            pool = TrialPool(slots, cfg.train.cpus_per_trial, cfg.train.gpus_per_trial, cfg.budget.max_retries)
            show = sys.stderr.isatty() if progress is None else progress
            try:
                if isinstance(searcher, PlannedSearcher):
                    events.phase("planning", f"{searcher.name}: planning phase on {pool.size} workers")
                    searcher.prepare(planning_context(plan, pool, show, events))
                events.phase("trials", f"training trials on {pool.size} workers")
                _Driver(plan, searcher, pool, show, events, retention).run()
                result = collect(plan.run_dir, searcher.study)
                if cfg.final.seeds >= 2:
                    events.phase("final", f"retraining the best and the baselines with {cfg.final.seeds} seeds")
                    result.final = _final_seeds(plan, result, pool, retention)
            finally:
                pool.shutdown()
    except KeyboardInterrupt:
        # Wherever Ctrl-C lands (Ray calls included), what was told is in the study already.
        interrupted = collect(plan.run_dir, searcher.study)
        retention.describe(interrupted)
        interrupted.save()
        raise SearchInterrupted(f"search interrupted; run the same command again to continue "
                                f"({plan.run_dir})") from None
    retention.apply(result)  # RUN/best/ and the checkpoints kept, before result.json says so
    result.save()
    write_pareto_plot(result, plan.run_dir / "pareto.png")
    return result


class _Driver:
    """The ask / run / tell loop. Not thread-safe; one per search.

    Asks happen only inside `_flush`, right after the tell that allows them, never because a
    worker happens to be free: what the searcher has been told at ask(n) is exactly trials
    0..n-C (C = concurrency), whatever the timing. Asked candidates wait in `queue` for a slot.
    """

    def __init__(self, plan: Plan, searcher: Searcher, pool: TrialPool, progress: bool,
                 events: SearchEvents = NO_EVENTS, retention: CheckpointRetention | None = None) -> None:
        self.plan, self.cfg, self.searcher, self.pool = plan, plan.config, searcher, pool
        self.events = events
        self.retention = retention or CheckpointRetention(plan.run_dir, plan.config.budget)
        self.shown_best: int | None = None
        self.shown_front: list[int] = []
        self.trial_limit = searcher.trial_limit(self.cfg.budget.trials)
        self.concurrency = searcher.options.concurrency or pool.size
        self.buffer: dict[int, tuple[Candidate, TrialOutcome, int, dict[str, Any]]] = {}
        self.in_flight: dict[int, Candidate] = {}
        self.queue: list[Candidate] = searcher.pending()  # asked by an earlier driver, never told
        told = searcher.told()
        self.told_count = len(told)
        self.finished = sum(1 for t in told if not self._was_rejected(t.number))
        self.asked = len(searcher.study.trials)
        self.asked_to_train = self.finished + len(self.queue)  # asked and not rejected
        self.next_to_tell = min([c.number for c in self.queue] + [self.asked])
        self.rejected_in_a_row = 0
        self.baselines = load_baselines(plan.run_dir)
        self.baseline_queue = [n for n in plan.baselines if self.baselines.get(n, {}).get("status") != "complete"]
        self.started = time.monotonic()
        self.bar = tqdm(total=self.trial_limit, initial=min(self.finished, self.trial_limit),
                        unit="trial", disable=not progress, file=sys.stderr, dynamic_ncols=True)

    def _was_rejected(self, number: int) -> bool:
        return bool(self.searcher.study.trials[number].user_attrs.get("rejected"))

    # -- the loop --------------------------------------------------------------------------
    def run(self) -> None:
        try:
            # An earlier driver may have died before applying the policy to what it told.
            self.retention.apply(collect(self.plan.run_dir, self.searcher.study, with_planning=False))
            self.retention.discard_baselines(sorted(self.baselines))
            self.queue = [c for c in self.queue if not self._adopt(c)]
            self._flush()
            while True:
                self._fill()
                if not self.pool.busy:
                    self._flush()
                    if self.queue or self.baseline_queue:
                        continue
                    if not self.buffer and not self.in_flight:
                        return
                    raise RuntimeError(f"results wait for trial {self.next_to_tell}, which is not running "
                                       f"(buffered: {sorted(self.buffer)})")
                for job_id, outcome, attempts in self.pool.wait(timeout=0.5):
                    self._finished(job_id, outcome, attempts)
                self._flush()
        finally:
            self.bar.close()

    def _time_left(self) -> bool:
        seconds = self.cfg.budget.seconds
        return seconds is None or time.monotonic() - self.started < seconds

    def _may_ask(self) -> bool:
        within_budget = self.asked_to_train < self.trial_limit
        within_lag = self.asked < self.told_count + self.concurrency
        return within_budget and within_lag and self._time_left()

    def _adopt(self, candidate: Candidate) -> bool:
        """Buffer the outcome a worker already left for `candidate` (the driver died before
        telling it), instead of training it again. False if there is none to adopt."""
        folder = self.plan.run_dir / "trials" / f"{candidate.number:04d}"
        outcome = read_outcome(folder)
        arch_file = folder / ARCH_FILE
        if outcome is None or outcome.status == "failed" or not arch_file.is_file():
            return False
        if Architecture.load(arch_file).to_dict() != self.plan.space.decode(candidate.choices).to_dict():
            return False
        self._buffer(candidate, outcome, 1, {"adopted": True})
        return True

    def _fill(self) -> None:
        while self.pool.free > 0 and self.baseline_queue:
            name = self.baseline_queue.pop(0)
            self.pool.submit(("baseline", name), trial_spec(self.plan, f"baseline {name}",
                                                            self.plan.baselines[name], self.cfg.seed,
                                                            f"{BASELINES_DIR}/{name}"))
        while self.pool.free > 0 and self.queue:
            self._submit(self.queue.pop(0))

    def _ask(self) -> None:
        """Ask one candidate: queue it, or buffer its rejection (invalid, over max_flops)."""
        candidate = self.searcher.ask()
        self.asked += 1
        try:
            arch = self.plan.space.decode(candidate.choices)
            flops = cost_of(arch, self.plan.dataset.schema).flops
        except (ArchitectureError, ConfigError) as exc:
            self.asked_to_train += 1
            self._buffer(candidate, TrialOutcome(status="failed", error=f"invalid architecture: {exc}"), 0, {})
            return
        limit = self.cfg.budget.max_flops
        if limit is not None and flops > limit:
            self.rejected_in_a_row += 1
            if self.rejected_in_a_row > MAX_REJECTED_IN_A_ROW:
                raise ConfigError(f"budget.max_flops: {MAX_REJECTED_IN_A_ROW} candidates in a row were over "
                                  f"{limit:,} FLOPs per example; the space rarely fits it (last: {flops:,})")
            outcome = TrialOutcome(status="pruned", error=f"rejected before training: {flops:,} FLOPs per "
                                                          f"example > budget.max_flops {limit:,}")
            self._buffer(candidate, outcome, 0, {"rejected": True, "arch": arch.to_dict()})
            return
        self.rejected_in_a_row = 0
        self.asked_to_train += 1
        self.queue.append(candidate)

    def _submit(self, candidate: Candidate) -> None:
        arch = self.plan.space.decode(candidate.choices)
        spec = trial_spec(self.plan, f"trial {candidate.number}", arch, self.cfg.seed + candidate.number,
                          f"trials/{candidate.number:04d}", self._pruning(candidate.number))
        self.in_flight[candidate.number] = candidate
        self.pool.submit(("trial", candidate.number), spec)

    def _pruning(self, number: int) -> PruningSnapshot | None:
        """The history trial `number` is pruned against: trials 0..number-C, as at its ask."""
        kind = self.searcher.options.pruner
        if kind == "none":
            return None
        history = tuple(PastTrial(t.state, t.values[0] if t.values else None, t.intermediate)
                        for t in self.searcher.told()
                        if t.state in ("complete", "pruned") and t.number <= number - self.concurrency)
        return PruningSnapshot(kind, self.cfg.directions[0], history)

    # -- results ---------------------------------------------------------------------------
    def _finished(self, job_id: tuple[str, Any], outcome: TrialOutcome, attempts: int) -> None:
        kind, key = job_id
        if kind == "baseline":
            self.baselines[key] = {"status": outcome.status, "arch": self.plan.baselines[key].to_dict(),
                                   "metrics": outcome.metrics, "test_metrics": outcome.test_metrics,
                                   "seconds": outcome.seconds, **({"error": outcome.error} if outcome.error else {})}
            save_baselines(self.plan.run_dir, self.baselines)
            self.retention.discard_baselines([key])  # a failed one runs again from scratch
            self.events.baseline(key, self.baselines[key])
            return
        candidate = self.in_flight.pop(key)
        self._buffer(candidate, outcome, attempts, {})

    def _buffer(self, candidate: Candidate, outcome: TrialOutcome, attempts: int, attrs: dict[str, Any]) -> None:
        self.buffer[candidate.number] = (candidate, outcome, attempts, attrs)

    def _flush(self) -> None:
        """Tell buffered results in trial-number order, asking whatever each tell allows."""
        while True:
            while self._may_ask():
                self._ask()
            if self.next_to_tell not in self.buffer:
                return
            candidate, outcome, attempts, attrs = self.buffer.pop(self.next_to_tell)
            self._tell(candidate, outcome, attempts, attrs)
            self.next_to_tell += 1

    def _tell(self, candidate: Candidate, outcome: TrialOutcome, attempts: int, attrs: dict[str, Any]) -> None:
        values = None
        if outcome.status == "complete":
            values = [_objective(name, outcome.metrics) for name in self.cfg.objectives]
        arch = attrs.pop("arch", None) or self.plan.space.decode(candidate.choices).to_dict()
        stored = {"arch": arch, "metrics": outcome.metrics, "test_metrics": outcome.test_metrics,
                  "seconds": outcome.seconds, "wall_seconds": outcome.wall_seconds, "attempts": attempts,
                  "worker": outcome.worker, **attrs}
        if outcome.error:
            stored["error"] = outcome.error
        self.searcher.tell(candidate.number, values, outcome.status, outcome.intermediate,
                           json_safe(stored))
        self.told_count += 1
        rejected = bool(attrs.get("rejected"))
        if not rejected:
            self.finished += 1
            self.bar.update(1)
        self._show_progress(None if rejected else candidate.number)

    def _show_progress(self, told: int | None) -> None:
        """The bar's best NE and front size; events for the told trial and what it changed."""
        result = collect(self.plan.run_dir, self.searcher.study, with_planning=False)
        self.retention.apply(result)  # the told trial is in the study: best/ first, then removals
        best = result.best["metrics"]["ne"] if result.best else float("nan")
        self.bar.set_postfix(best_ne=f"{best:.4f}", front=len(result.pareto))
        if told is None:
            return
        record = next(t for t in result.trials if t["number"] == told)
        self.events.trial(record, min(self.finished, self.trial_limit), self.trial_limit)
        if result.best is not None and result.best["number"] != self.shown_best:
            self.shown_best = result.best["number"]
            self.events.best(result.best)
        front = [t["number"] for t in result.pareto]
        if front != self.shown_front:
            self.shown_front = front
            self.events.pareto(result.pareto)


def planning_context(plan: Plan, pool: TrialPool, progress: bool, events: SearchEvents = NO_EVENTS) -> PlanningContext:
    cfg = plan.config
    return PlanningContext(data_path=plan.dataset.uri, schema=plan.dataset.schema, train_dates=plan.train_dates,
                           valid_dates=plan.valid_dates, train=cfg.train.train_config(cfg.seed),
                           objectives=cfg.objectives, budget_trials=cfg.budget.trials,
                           max_flops=cfg.budget.max_flops, run_dir=plan.run_dir, pool=pool, progress=progress,
                           events=events)


def trial_spec(plan: Plan, name: str, arch: Architecture, seed: int, folder: str,
               pruning: PruningSnapshot | None = None) -> TrialSpec:
    """What a worker needs to train and score `arch` into RUN/`folder`."""
    first = plan.config.objectives[0]
    return TrialSpec(name=name, arch=arch.to_dict(), data_path=plan.dataset.uri,
                     train_dates=plan.train_dates, valid_dates=plan.valid_dates, test_dates=plan.test_dates,
                     train=plan.config.train.train_config(seed), out_dir=str(plan.run_dir / folder),
                     prune_metric=first if first in ("ne", "logloss", "auc") else "ne", pruning=pruning)


def _objective(name: str, metrics: Mapping[str, Any]) -> float:
    key = {"flops": "flops_per_example"}.get(name, name)
    if name not in OBJECTIVES or key not in metrics:
        return float("nan")
    return float(metrics[key])


def _final_seeds(plan: Plan, result: SearchResult, pool: TrialPool,
                 retention: CheckpointRetention) -> dict[str, Any]:
    """Retrain the best architecture and the baselines with several seeds: mean and std (their
    checkpoints are kept only under budget.keep_checkpoints: all)."""
    cfg = plan.config
    archs = dict(plan.baselines)
    if result.best is not None:
        archs = {"best": Architecture.from_dict(result.best["arch"]), **archs}
    jobs = [(name, k) for name in archs for k in range(cfg.final.seeds)]
    outcomes: dict[str, list[TrialOutcome]] = {name: [] for name in archs}
    pending = list(jobs)
    while pending or pool.busy:
        while pending and pool.free > 0:
            name, k = pending.pop(0)
            spec = trial_spec(plan, f"final {name} seed {k}", archs[name], cfg.seed + 10_000 + k,
                              f"final/{name}/seed{k}")
            pool.submit((name, k), spec)
        for (name, k), outcome, _ in pool.wait(timeout=0.5):
            outcomes[name].append(outcome)
            retention.discard(plan.run_dir / "final" / name / f"seed{k}")
    summary = {}
    for name, runs in outcomes.items():
        done = [o for o in runs if o.status == "complete"]
        valid = [o.metrics["ne"] for o in done]
        test = [o.test_metrics["ne"] for o in done]
        summary[name] = {"seeds": len(done), "valid_ne_mean": statistics.fmean(valid) if valid else None,
                         "valid_ne_std": statistics.stdev(valid) if len(valid) > 1 else None,
                         "test_ne_mean": statistics.fmean(test) if test else None,
                         "test_ne_std": statistics.stdev(test) if len(test) > 1 else None}
    return summary
