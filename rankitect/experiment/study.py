"""The study a search keeps its trials in: opened (or created) here, once per run; the
baselines trained beside the search are recorded in it once its trials are done."""

from __future__ import annotations

import math
import warnings
from collections.abc import Mapping, Sequence
from typing import Any

import optuna

from rankitect.errors import ConfigError
from rankitect.json_values import json_safe
from rankitect.searchers.base import BESIDE_SEARCH

STUDY_NAME = "rankitect"


def open_study(storage: str, directions: Sequence[str], metric_names: Sequence[str] = ()) -> optuna.Study:
    """The run's study at `storage` (any Optuna storage URL), created when missing; ConfigError
    when a stored one optimizes other directions than the config's objectives. `metric_names`
    (the objectives, e.g. ne, flops) name the values in optuna-dashboard and the study's
    dataframes."""
    study = optuna.create_study(storage=storage, study_name=STUDY_NAME, directions=list(directions),
                                load_if_exists=True)
    stored = [d.name.lower() for d in study.directions]
    if stored != list(directions):
        raise ConfigError(f"objectives: the stored study optimizes {stored}, the config {list(directions)}")
    if metric_names and study.metric_names != list(metric_names):
        with warnings.catch_warnings():  # "experimental" since Optuna 3.2, and what the dashboard reads
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            study.set_metric_names(list(metric_names))
    return study


def record_baselines(study: optuna.Study, baselines: Mapping[str, Mapping[str, Any]]) -> list[str]:
    """Add each complete baseline of `baselines` (result.json's entries, with `values`) that the
    study holds no trial of as a COMPLETE trial with no choices, marked `baseline: NAME` and
    BESIDE_SEARCH, so optuna-dashboard plots it with the search's trials. A baseline whose
    nearest member of the space ran as a trial is not added again. Returns the names added.

    Nothing is added while the study holds a trial not finished (a search stopped by
    budget.seconds with enqueued trials, say): the search's trials keep consecutive numbers
    until it ends, and a later run records the baselines."""
    trials = study.get_trials(deepcopy=False)
    if any(not t.state.is_finished() for t in trials):
        return []
    present = {t.user_attrs.get("baseline") for t in trials}
    added = []
    for name, entry in sorted(baselines.items()):
        values = entry.get("values")
        if name in present or entry.get("status") != "complete" or not values \
                or not all(math.isfinite(v) for v in values):
            continue
        attrs = json_safe({"baseline": name, BESIDE_SEARCH: True, "arch": entry.get("arch"),
                           "metrics": entry.get("metrics", {}), "test_metrics": entry.get("test_metrics", {})})
        study.add_trial(optuna.trial.create_trial(state=optuna.trial.TrialState.COMPLETE, values=list(values),
                                                  user_attrs=attrs))
        added.append(name)
    return added
