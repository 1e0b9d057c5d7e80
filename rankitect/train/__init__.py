"""Training: the trainer loop, evaluation, checkpoints, and one function for a whole run.

`Trainer` and `evaluate` (torch) are imported when first asked for: the CLI's parsers read
`TrainConfig`'s defaults without importing torch."""

from typing import Any

from rankitect.train.config import TrainConfig

__all__ = ["TrainConfig", "Trainer", "evaluate"]


def __getattr__(name: str) -> Any:
    if name in ("Trainer", "evaluate"):
        from rankitect.train import trainer

        return getattr(trainer, name)
    raise AttributeError(f"module {__name__!r} has no attribute {name!r}")
