"""What the GPU benchmark's sections share: fixed sizes, the data, timing with device syncs.

Timing on CUDA: every timed callable ends with `torch.cuda.synchronize`, warm-up rounds run
first (cuBLAS handles, allocator growth), then the contestants run in turn per round and the
median rate is kept (`benchmarks.common.interleaved_rates`).
"""

from __future__ import annotations

import dataclasses
import gc
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from benchmarks.common import interleaved_rates
from rankitect.data.batch import Batch
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.data.synth import SynthConfig, generate
from rankitect.schema import Schema
from rankitect.train.config import autocast

MLPERF_BOTTOM = (512, 256)  # MLPerf DLRM (Criteo): bottom 13-512-256-E, top 1024-1024-512-256-1, E=128
MLPERF_TOP = (1024, 1024, 512, 256)
BASELINE_BOTTOM = (64,)  # search_spaces.baselines.dlrm's defaults
BASELINE_TOP = (128, 64)


@dataclass(frozen=True)
class Sizes:
    """Every size the run uses; printed and written to the JSON."""

    tables: int = 26  # sparse columns, one table each
    dense: int = 13
    hash_size: int = 100_000  # rows per table
    dim: int = 64  # E of the baseline DLRM, the supernet and the NE runs
    mlperf_dim: int = 128  # E of the MLPerf-size DLRM
    batch: int = 8192
    timed_batches: int = 40  # distinct batches of a timed pass (moved to the device once)
    rounds: int = 5  # timed passes per contestant (median kept), after one warm-up pass
    supernet_rounds: int = 3
    days: int = 3  # synthetic dataset: days 1-2 train, day 3 evaluates
    rows_per_day: int = 400_000
    ne_epochs: int = 3
    ne_seeds: tuple[int, ...] = (0, 1)
    ne_lr: float = 3e-3
    matmul_n: int = 8192  # square matmul of the ceiling
    matmul_iters: int = 20
    mlp_batches: tuple[int, ...] = (8192, 65536)
    mlp_iters: int = 30

    def describe(self) -> str:
        return (f"{self.tables} tables x {self.hash_size:,} rows, {self.dense} dense, batch "
                f"{self.batch:,}; E={self.dim} (baseline DLRM, supernet, NE runs), E={self.mlperf_dim} "
                f"(MLPerf-size DLRM); {self.timed_batches} batches x {self.rounds} rounds per rate; "
                f"synthetic data {self.days} days x {self.rows_per_day:,} rows")


FULL = Sizes()
QUICK = Sizes(hash_size=1000, dim=16, mlperf_dim=32, batch=256, timed_batches=4, rounds=2,
              supernet_rounds=1, rows_per_day=3000, ne_epochs=1, ne_seeds=(0,), matmul_n=256,
              matmul_iters=2, mlp_batches=(256,), mlp_iters=2)


def sync(device: torch.device) -> None:
    if device.type == "cuda":
        torch.cuda.synchronize(device)


def free(device: torch.device) -> None:
    """Drop what the last contestant left: Python garbage and the CUDA allocator's cache."""
    gc.collect()
    if device.type == "cuda":
        torch.cuda.empty_cache()


def fit_timed(build: Callable[[Callable[[int], bool]], Any], device: torch.device) -> tuple[Any, Any, float | None]:
    """Fit the Trainer `build(on_epoch)` makes, its epoch ends clocked: (trainer, TrainStats,
    examples/s of its last epoch by the wall clock, the run's start-up and warm-up left out;
    None for one epoch)."""
    ends: list[float] = []

    def epoch_ended(done: int) -> bool:
        ends.append(time.perf_counter())
        return False  # never stop early

    trainer = build(epoch_ended)
    stats = trainer.fit()
    sync(device)
    last = (stats.examples / trainer.config.epochs) / (time.perf_counter() - ends[-1]) if ends else None
    return trainer, stats, last


def rates(runs: dict[str, Callable[[], int]], rounds: int, device: torch.device,
          warmup: int = 1) -> dict[str, float]:
    """Median items/s of each callable, synced, after `warmup` untimed calls of each."""
    def synced(fn: Callable[[], int]) -> Callable[[], int]:
        def run() -> int:
            n = fn()
            sync(device)
            return n
        return run

    wrapped = {name: synced(fn) for name, fn in runs.items()}
    for _ in range(warmup):
        for fn in wrapped.values():
            fn()
    return interleaved_rates(wrapped, rounds)


def seconds_per_call(fn: Callable[[], Any], iters: int, device: torch.device, warmup: int = 2) -> float:
    for _ in range(warmup):
        fn()
    sync(device)
    start = time.perf_counter()
    for _ in range(iters):
        fn()
    sync(device)
    return (time.perf_counter() - start) / iters


def train_pass(model: torch.nn.Module, batches: Iterable[Batch], optimizer: torch.optim.Optimizer,
               device: torch.device, precision: str = "fp32",
               forward: Callable[[torch.nn.Module, Batch], torch.Tensor] | None = None) -> Callable[[], int]:
    """A callable: one training pass over `batches` as the Trainer steps (loss not read back)."""
    def run() -> int:
        n = 0
        for b in batches:
            with autocast(device, precision):
                logits = forward(model, b) if forward else model(b.dense, b.sparse)
            loss = F.binary_cross_entropy_with_logits(logits.float(), b.labels)
            optimizer.zero_grad(set_to_none=True)
            loss.backward()
            optimizer.step()
            n += len(b)
        return n
    return run


def with_dim(schema: Schema, dim: int) -> Schema:
    return dataclasses.replace(schema, embedding_dim=dim)


def make_dataset(work: Path, sizes: Sizes) -> Dataset:
    """The Criteo-like synthetic dataset every section reads (one table per sparse column)."""
    cfg = SynthConfig(days=sizes.days, rows_per_day=sizes.rows_per_day, num_sparse=sizes.tables,
                      num_dense=sizes.dense, cardinality=sizes.hash_size - 1, tag_mean_len=0.0,
                      embedding_dim=sizes.dim)
    generate(work / "criteo_like", cfg, force=True)
    return Dataset.open(str(work / "criteo_like"))


def make_quality_dataset(work: Path, sizes: Sizes) -> Dataset:
    """Default-difficulty synthetic data (known Bayes NE, a few ids per field) for NE runs."""
    generate(work / "quality", SynthConfig(days=sizes.days, rows_per_day=sizes.rows_per_day,
                                           embedding_dim=sizes.dim), force=True)
    return Dataset.open(str(work / "quality"))


def first_batches(dataset: Dataset, sizes: Sizes) -> list[Batch]:
    """`timed_batches` full shuffled batches of the first day (host memory)."""
    out = []
    for b in BatchLoader(dataset, dataset.dates[:1], sizes.batch, shuffle=True, seed=0, drop_last=True):
        out.append(b)
        if len(out) == sizes.timed_batches:
            break
    if len(out) < sizes.timed_batches:
        raise ValueError(f"the first day holds {len(out)} batches of {sizes.batch}, "
                         f"fewer than timed_batches={sizes.timed_batches}")
    return out


def batch_bytes(batch: Batch) -> int:
    s = batch.sparse
    return sum(t.numel() * t.element_size() for t in (batch.dense, batch.labels, s.values(), s.lengths()))
