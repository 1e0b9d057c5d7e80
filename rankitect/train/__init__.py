"""Training: the trainer loop, evaluation, checkpoints, and one function for a whole run."""

from rankitect.train.config import TrainConfig
from rankitect.train.trainer import Trainer, evaluate

__all__ = ["TrainConfig", "Trainer", "evaluate"]
