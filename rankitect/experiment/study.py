"""The study a search keeps its trials in: opened (or created) here, once per run."""

from __future__ import annotations

import warnings
from collections.abc import Sequence

import optuna

from rankitect.errors import ConfigError

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
