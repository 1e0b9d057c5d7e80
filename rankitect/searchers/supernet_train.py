"""What the planning jobs of the one-shot, DNAS and proxy searchers share on a Ray worker:
opening the data and the space by name, the training batches with their lr schedule, and a
small evaluation set kept in memory.

Job functions take plain arguments (paths, names, option mappings) so Ray can ship them.
"""

from __future__ import annotations

import json
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch

from rankitect.data.batch import Batch
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.metrics import evaluate_logits
from rankitect.space import SearchSpace, make_space
from rankitect.train.config import TrainConfig, lr_factor

_DATASETS: dict[str, Dataset] = {}


def open_space(data_path: str, space_name: str, space_options: Mapping[str, Any]) -> tuple[Dataset, SearchSpace]:
    """The dataset (opened once per worker process) and the space built on its schema."""
    if data_path not in _DATASETS:
        _DATASETS[data_path] = Dataset.open(data_path)
    dataset = _DATASETS[data_path]
    return dataset, make_space(space_name, dataset.schema, dict(space_options))


@dataclass(frozen=True)
class Step:
    index: int  # 0-based over all epochs
    total: int
    lr_factor: float  # of the configured schedule at this step
    batch: Batch


def train_steps(dataset: Dataset, dates: tuple[str, ...] | list[str], cfg: TrainConfig, epochs: int | None,
                seed: int, max_steps: int | None = None) -> Iterator[Step]:
    """`epochs` passes over the shuffled train dates (batch size and schedule from `cfg`), or
    with `epochs` None as many as `max_steps` needs; at most `max_steps` steps."""
    loader = BatchLoader(dataset, list(dates), cfg.batch_size, shuffle=True, seed=seed,
                         buffer_rows=max(cfg.shuffle_buffer, cfg.batch_size))
    if epochs is None:
        if max_steps is None:
            raise ValueError("train_steps: give epochs or max_steps")
        epochs = -(-max_steps // max(len(loader), 1))
    total = len(loader) * epochs if max_steps is None else min(len(loader) * epochs, max_steps)
    index = 0
    for epoch in range(epochs):
        for batch in loader.epoch(epoch):
            if index >= total:
                return
            yield Step(index, total, lr_factor(cfg.lr_schedule, index, total), batch)
            index += 1


def set_lr(optimizer: torch.optim.Optimizer, lr: float) -> None:
    for group in optimizer.param_groups:
        group["lr"] = lr


@dataclass(frozen=True)
class EvalSet:
    """The first `max_rows` rows of the given dates (rounded up to whole batches), in memory."""

    batches: list[Batch]

    @staticmethod
    def load(dataset: Dataset, dates: tuple[str, ...] | list[str], max_rows: int,
             batch_size: int = 4096) -> "EvalSet":
        batches, rows = [], 0
        for batch in BatchLoader(dataset, list(dates), min(batch_size, max_rows), shuffle=False, prefetch=0):
            batches.append(batch)
            rows += len(batch)
            if rows >= max_rows:
                break
        return EvalSet(batches)

    @property
    def labels(self) -> np.ndarray:
        return np.concatenate([b.labels.numpy() for b in self.batches])

    def ne(self, logits: list[torch.Tensor]) -> float:
        """NE of per-batch logits (each (B,)) against this set's labels."""
        scores = torch.cat(logits).detach().float().numpy()
        return evaluate_logits(scores, self.labels).ne


def write_json(path: Path, value: Any) -> None:
    """Atomically: a reader sees the whole file or none."""
    tmp = path.with_suffix(path.suffix + ".tmp")
    tmp.write_text(json.dumps(value, indent=2) + "\n")
    tmp.replace(path)


def read_json(path: Path) -> Any | None:
    return json.loads(path.read_text()) if path.is_file() else None
