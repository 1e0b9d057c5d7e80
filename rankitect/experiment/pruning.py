"""Pruning of weak trials, decided on the worker with Optuna's own pruners.

The driver hands each trial a snapshot of the told history (each earlier trial's state,
value and per-epoch values). The worker rebuilds it in an in-memory study and asks the
pruner after each epoch, exactly as `trial.should_prune()` would in a single process. The
snapshot is fixed when the trial is asked, so pruning decisions are reproducible.
"""

from __future__ import annotations

from dataclasses import dataclass, field

import optuna
from optuna.distributions import FloatDistribution
from optuna.trial import TrialState

_PRUNERS = {
    "median": lambda: optuna.pruners.MedianPruner(n_startup_trials=4, n_warmup_steps=0),
    "halving": lambda: optuna.pruners.SuccessiveHalvingPruner(min_resource=1, reduction_factor=2),
}


@dataclass(frozen=True)
class PastTrial:
    state: str  # "complete" or "pruned"
    value: float | None
    intermediate: dict[int, float]


@dataclass(frozen=True)
class PruningSnapshot:
    kind: str  # "median" or "halving"
    direction: str  # "minimize" or "maximize"
    history: tuple[PastTrial, ...] = field(default=())


class EpochPruner:
    """`should_prune(epoch, value)` for one running trial against a fixed history."""

    def __init__(self, snapshot: PruningSnapshot) -> None:
        self.study = optuna.create_study(direction=snapshot.direction, pruner=_PRUNERS[snapshot.kind]())
        dist = {"x": FloatDistribution(0.0, 1.0)}
        for past in snapshot.history:
            state = TrialState.COMPLETE if past.state == "complete" else TrialState.PRUNED
            self.study.add_trial(optuna.trial.create_trial(
                state=state, value=past.value if state == TrialState.COMPLETE else None,
                params={"x": 0.5}, distributions=dist, intermediate_values=past.intermediate))
        self.trial = self.study.ask()

    def should_prune(self, epoch: int, value: float) -> bool:
        self.trial.report(value, epoch)
        return self.trial.should_prune()
