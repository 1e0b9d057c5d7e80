"""The loggers a config's `logging` section asks for, as search callbacks."""

from __future__ import annotations

from rankitect.experiment.config import LoggingSection
from rankitect.experiment.events import SearchEvents


def loggers_from_config(section: LoggingSection) -> list[SearchEvents]:
    """TensorBoardLogger for `logging.tensorboard`, MLflowLogger for `logging.mlflow`; UserError
    naming the key when its package is missing or its store cannot be opened."""
    loggers: list[SearchEvents] = []
    if section.tensorboard:
        from rankitect.experiment.log_tensorboard import TensorBoardLogger

        loggers.append(TensorBoardLogger(section.tensorboard))
    if section.mlflow:
        from rankitect.experiment.log_mlflow import MLflowLogger

        loggers.append(MLflowLogger(section.mlflow, section.mlflow_experiment))
    return loggers
