"""What the planning jobs of the one-shot, DNAS and proxy searchers share on a worker: the
training batches with their lr schedule, a small evaluation set kept in memory, progress and
epoch checkpoints.

Job functions take the dataset's path (opened once per worker process, `Dataset.shared`), the
space object and the searcher's options object; all of them pickle, so the run ships them as
they are.
"""

from __future__ import annotations

import json
import os
import time
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
from rankitect.train.config import TrainConfig, lr_factor


@dataclass(frozen=True)
class Step:
    index: int  # 0-based over all epochs
    total: int
    lr_factor: float  # of the configured schedule at this step
    batch: Batch
    epoch: int
    ends_epoch: bool  # the last step of its epoch


def train_steps(dataset: Dataset, dates: tuple[str, ...] | list[str], cfg: TrainConfig, epochs: int | None,
                seed: int, max_steps: int | None = None, start_epoch: int = 0, min_steps: int = 0) -> Iterator[Step]:
    """`epochs` passes over the shuffled train dates (batch size and schedule from `cfg`), more
    when fewer would give under `min_steps` steps, or with `epochs` None as many as `max_steps`
    needs; at most `max_steps` steps. Starting at `start_epoch` gives the steps a run from 0
    would have given from there."""
    loader = BatchLoader(dataset, list(dates), cfg.batch_size, shuffle=True, seed=seed,
                         buffer_rows=max(cfg.shuffle_buffer, cfg.batch_size))
    per_epoch = max(len(loader), 1)
    if epochs is None:
        if max_steps is None:
            raise ValueError("train_steps: give epochs or max_steps")
        epochs = -(-max_steps // per_epoch)
    epochs = max(epochs, -(-min_steps // per_epoch))
    total = per_epoch * epochs if max_steps is None else min(per_epoch * epochs, max_steps)
    for epoch in range(start_epoch, epochs):
        for i, batch in enumerate(loader.epoch(epoch)):
            index = epoch * per_epoch + i
            if index >= total:
                return
            ends = i == per_epoch - 1 or index == total - 1
            yield Step(index, total, lr_factor(cfg.lr_schedule, index, total), batch, epoch, ends)


def scale_lr(optimizer: Any, factor: float) -> None:
    """Every param group's lr at `factor` x its base_lr (rankitect.train.optimizers). Call it
    before the zero_grad and backward of a step: fused tables take their rate there."""
    for group in optimizer.param_groups:
        group["lr"] = group["base_lr"] * factor


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


class JobProgress:
    """A planning job's progress, written to a small JSON file the driver polls:
    {"step": k, "total": n, "what": "...", "pid": the worker process}; at most every `every_s`
    seconds, and when forced (at epoch ends)."""

    def __init__(self, path: str | None, what: str, every_s: float = 2.0) -> None:
        self.path, self.what, self.every_s = (Path(path) if path else None), what, every_s
        self._last = 0.0

    def update(self, step: int, total: int, force: bool = False) -> None:
        now = time.monotonic()
        if self.path is None or (not force and now - self._last < self.every_s):
            return
        self._last = now
        write_json(self.path, {"step": step, "total": total, "what": self.what, "pid": os.getpid()})


def read_progress(path: Path) -> tuple[int, int]:
    """(step, total) of a job's progress file; (0, 0) before it wrote one."""
    try:
        raw = json.loads(path.read_text())
        return int(raw["step"]), int(raw["total"])
    except (OSError, ValueError, KeyError, TypeError):
        return 0, 0


class EpochCheckpoint:
    """Resume a planning job's training at an epoch boundary. `save(epochs_done, parts,
    **extra)` after each epoch (atomically): the state_dicts of `parts` (name -> a module or an
    optimizer) and plain `extra` values. `resume(parts)` loads them back into `parts` and
    returns (epochs done, extra), or (0, {}) when there is no checkpoint."""

    def __init__(self, path: Path) -> None:
        self.path = path

    def resume(self, parts: Mapping[str, Any]) -> tuple[int, dict[str, Any]]:
        if not self.path.is_file():
            return 0, {}
        state = torch.load(self.path, weights_only=False)
        for name, part in parts.items():
            part.load_state_dict(state["parts"][name])
        return int(state["epochs_done"]), state["extra"]

    def save(self, epochs_done: int, parts: Mapping[str, Any], **extra: Any) -> None:
        tmp = self.path.with_suffix(".tmp")
        torch.save({"epochs_done": epochs_done, "parts": {n: p.state_dict() for n, p in parts.items()},
                    "extra": extra}, tmp)
        tmp.replace(self.path)

    def remove(self) -> None:
        self.path.unlink(missing_ok=True)
