"""`search(config)`: one search run, from config to result.json, on a Ray cluster or a local Ray.

The run folder holds everything needed to continue: the study (trials and their outcomes),
baselines.json, config.json. Running the same command again (after Ctrl-C, a SIGKILL, or with
a larger budget) continues: finished trials are kept, interrupted ones run again under their
numbers. RUN/best/ follows the best trial as trials are told, and only the checkpoints that
`budget.keep_checkpoints` names stay on disk (rankitect/experiment/retention.py).
"""

from __future__ import annotations

import sys
from collections.abc import Mapping, Sequence
from pathlib import Path
from typing import Any

import optuna

from rankitect.errors import UserError
from rankitect.experiment.config import SearchConfig
from rankitect.experiment.driver import Driver
from rankitect.experiment.events import NO_EVENTS, EventFanout, SearchEvents
from rankitect.experiment.executor import TrialPool, cluster_slots, ray_session
from rankitect.experiment.final import final_seeds, with_seed_means
from rankitect.experiment.loggers import loggers_from_config
from rankitect.experiment.plan import Plan, plan_search, prepare_search_folder
from rankitect.experiment.planning import PoolJobRunner
from rankitect.experiment.ray_env import loopback_environment
from rankitect.experiment.report import load_truth, write_pareto_plot
from rankitect.experiment.results import SearchResult, collect
from rankitect.experiment.retention import CheckpointRetention
from rankitect.experiment.study import open_study, record_baselines
from rankitect.searchers.base import make_searcher
from rankitect.searchers.planned import PlannedSearcher, PlanningContext


class SearchInterrupted(UserError):
    """The driver was stopped with Ctrl-C; running the same command again continues."""


def search(config: SearchConfig | Mapping[str, Any], out: Path | str, address: str | None = None,
           force: bool = False, progress: bool | None = None, events: SearchEvents = NO_EVENTS,
           dashboard: bool = False, callbacks: Sequence[SearchEvents] = ()) -> SearchResult:
    """Run (or continue) a search; returns its result, also written to `out`/result.json.
    `events` and each of `callbacks` hear of the search as it goes (rankitect/experiment/events.py),
    after the loggers of the config's `logging` section.
    `dashboard`: the local Ray started for the search runs Ray's dashboard (its URL on stderr).
    An entry point: keeps a local Ray on loopback and Optuna's log to warnings."""
    loopback_environment(address)
    optuna.logging.set_verbosity(optuna.logging.WARNING)
    cfg = config if isinstance(config, SearchConfig) else SearchConfig.from_dict(config)
    plan = plan_search(cfg, Path(out))
    callbacks = list(callbacks) if isinstance(callbacks, (list, tuple)) else callbacks
    watchers = EventFanout(callbacks)  # checks them before a logger opens its store
    watchers = EventFanout([*loggers_from_config(cfg.logging), *watchers.watchers, events])
    try:
        continued = prepare_search_folder(plan, force)
        watchers.search_started(plan.run_dir, cfg.to_dict(), continued)
        return _run(plan, cfg, address, progress, watchers, dashboard)
    finally:
        watchers.close()


def _run(plan: Plan, cfg: SearchConfig, address: str | None, progress: bool | None, events: SearchEvents,
         dashboard: bool) -> SearchResult:
    retention = CheckpointRetention(plan.run_dir, cfg.budget, cfg.directions, cfg.final.candidates)
    study = open_study(plan.storage, cfg.directions, cfg.objectives)
    searcher = make_searcher(cfg.searcher.name, plan.searcher_options, plan.space, cfg.directions, cfg.seed, study)
    try:
        with ray_session(address, dashboard=dashboard):
            slots = cluster_slots(cfg.resources.cpus_per_trial, cfg.resources.gpus_per_trial)
            pool = TrialPool(slots, cfg.resources.cpus_per_trial, cfg.resources.gpus_per_trial,
                             cfg.budget.max_retries, label=f"search {plan.run_dir}")
            show = sys.stderr.isatty() if progress is None else progress
            try:
                if isinstance(searcher, PlannedSearcher):
                    events.phase("planning", f"{searcher.name}: planning phase on {pool.size} workers")
                    searcher.prepare(planning_context(plan, PoolJobRunner(pool, show, events)))
                events.phase("trials", f"training trials on {pool.size} workers")
                Driver(plan, searcher, pool, show, events, retention).run()
                result = collect(plan.run_dir, study, cfg.objectives)
                record_baselines(study, result.baselines)  # the result reads the search's own trials only
                if cfg.final.seeds >= 2:
                    events.phase("final", f"retraining the {cfg.final.top_k} best trials and the baselines with "
                                          f"{cfg.final.seeds} seeds")
                    result.final = final_seeds(plan, result, pool, retention)
                    retention.candidates = 0  # the pick is made: the policy alone says what stays
                    with_seed_means(result)
            finally:
                pool.shutdown()
    except KeyboardInterrupt:
        # Wherever Ctrl-C lands (Ray calls included), what was told is in the study already.
        interrupted = collect(plan.run_dir, study, cfg.objectives)
        retention.describe(interrupted)
        interrupted.save()
        raise SearchInterrupted(f"search interrupted; run the same command again to continue "
                                f"({plan.run_dir})") from None
    retention.apply(result)  # RUN/best/ and the checkpoints kept, before result.json says so
    result.save()
    write_pareto_plot(result, plan.run_dir / "pareto.png", load_truth(plan.dataset.uri))
    events.search_finished(result)
    return result


def planning_context(plan: Plan, runner: PoolJobRunner) -> PlanningContext:
    cfg = plan.config
    return PlanningContext(data_path=plan.dataset.uri, schema=plan.dataset.schema, train_dates=plan.dates.train,
                           valid_dates=plan.dates.valid, train=cfg.trial_train(cfg.seed),
                           objectives=cfg.objectives, budget_trials=cfg.budget.trials,
                           max_flops=cfg.budget.max_flops, max_params=cfg.budget.max_params, run_dir=plan.run_dir, runner=runner)
