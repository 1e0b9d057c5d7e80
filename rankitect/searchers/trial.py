"""One trial: build an architecture, train it on the train dates, score it on the validation
dates (what searchers select on) and on the test dates (reported only). Plain Python: the Ray
worker calls `run_trial`, and so can a test.

The trial folder is laid out like a `rankitect train` run (arch.json, config.json,
checkpoint.pt, metrics.json), so the best trial can be exported as it is.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import statistics
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

import torch

from rankitect.arch.graph import Architecture
from rankitect.cost import cost_of
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.errors import UserError
from rankitect.searchers.pruning import EpochPruner, PruningSnapshot
from rankitect.searchers.test_gate import wait_at_gate
from rankitect.train.config import TrainConfig
from rankitect.train.run import ARCH_FILE, CONFIG_FILE, METRICS_FILE
from rankitect.train.trainer import Trainer, evaluate, training_model

_DATASETS: dict[str, Dataset] = {}  # opened once per worker process


@dataclass(frozen=True)
class TrialSpec:
    name: str  # "trial 7", "baseline dlrm", ...
    arch: dict[str, Any]
    data_path: str
    train_dates: tuple[str, ...]
    valid_dates: tuple[str, ...]
    test_dates: tuple[str, ...]
    train: TrainConfig
    out_dir: str
    prune_metric: str = "ne"
    pruning: PruningSnapshot | None = None
    latency_batch: int = 256


@dataclass
class TrialOutcome:
    status: str  # "complete", "failed" or "pruned"
    metrics: dict[str, Any] = field(default_factory=dict)  # validation metrics
    test_metrics: dict[str, Any] = field(default_factory=dict)
    intermediate: dict[int, float] = field(default_factory=dict)  # epoch -> validation value
    seconds: float = 0.0  # inside the worker: build, train, evaluate
    wall_seconds: float = 0.0  # seen by the driver: submit to result (scheduling included)
    error: str | None = None
    worker: dict[str, Any] = field(default_factory=dict)


def _dataset(path: str) -> Dataset:
    if path not in _DATASETS:
        _DATASETS[path] = Dataset.open(path)
    return _DATASETS[path]


def measure_latency(model: torch.nn.Module, batch: Any, repeats: int = 5) -> float:
    """Median forward time per example in microseconds, eval mode, on one batch."""
    model.eval()
    times = []
    with torch.no_grad():
        model(batch.dense, batch.sparse)
        for _ in range(repeats):
            start = time.perf_counter()
            model(batch.dense, batch.sparse)
            times.append(time.perf_counter() - start)
    return statistics.median(times) / len(batch) * 1e6


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """Train and score `spec`; never raises for a problem of the trial itself (status failed)."""
    wait_at_gate(spec.name)  # a test hook (test_gate.py): returns at once unless a test armed it
    started = time.perf_counter()
    out = Path(spec.out_dir)
    out.mkdir(parents=True, exist_ok=True)
    worker = {"pid": os.getpid(), "host": socket.gethostname()}
    (out / "worker.json").write_text(json.dumps(worker) + "\n")
    outcome = TrialOutcome(status="failed", worker=worker)
    try:
        _train_and_score(spec, out, outcome)
    except (UserError, RuntimeError, ValueError) as exc:
        outcome.status, outcome.error = "failed", f"{type(exc).__name__}: {exc}"
        (out / "error.txt").write_text(traceback.format_exc())
    outcome.seconds = time.perf_counter() - started
    write_outcome(out, outcome)
    return outcome


OUTCOME_FILE = "outcome.json"


def write_outcome(out: Path, outcome: TrialOutcome) -> None:
    """The whole outcome, written last: its presence means the trial ran to its end."""
    tmp = out / f"{OUTCOME_FILE}.tmp"
    tmp.write_text(json.dumps(dataclasses.asdict(outcome), default=str) + "\n")
    tmp.replace(out / OUTCOME_FILE)


def read_outcome(out: Path) -> TrialOutcome | None:
    """The outcome a worker left in `out`, or None if it did not finish."""
    path = out / OUTCOME_FILE
    if not path.is_file():
        return None
    raw = json.loads(path.read_text())
    raw["intermediate"] = {int(k): v for k, v in raw.get("intermediate", {}).items()}
    return TrialOutcome(**raw)


def _train_and_score(spec: TrialSpec, out: Path, outcome: TrialOutcome) -> None:
    dataset = _dataset(spec.data_path)
    arch = Architecture.from_dict(spec.arch)
    cost = cost_of(arch, dataset.schema)
    arch.save(out / ARCH_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(
        {"data": spec.data_path, "train_dates": list(spec.train_dates), "eval_dates": list(spec.valid_dates),
         "test_dates": list(spec.test_dates), **spec.train.to_dict()}, indent=2) + "\n")
    torch.manual_seed(spec.train.seed)
    model = training_model(arch, dataset.schema, spec.train)
    pruner = EpochPruner(spec.pruning) if spec.pruning is not None else None
    valid = list(spec.valid_dates)

    def on_epoch(epochs_done: int) -> bool:
        if pruner is None:
            return False
        value = evaluate(trainer.model, dataset, valid, spec.train.eval_batch_size, trainer.device)[0]
        metric = getattr(value, spec.prune_metric)
        outcome.intermediate[epochs_done] = metric
        return math.isfinite(metric) and pruner.should_prune(epochs_done, metric)

    trainer = Trainer(model, dataset, list(spec.train_dates), spec.train, run_dir=out, progress=False,
                      on_epoch=on_epoch)
    stats = trainer.fit()
    overall, by_date = evaluate(trainer.model, dataset, valid, spec.train.eval_batch_size, trainer.device)
    test, test_by_date = evaluate(trainer.model, dataset, list(spec.test_dates), spec.train.eval_batch_size,
                                  trainer.device)
    outcome.intermediate[trainer.epochs_done] = getattr(overall, spec.prune_metric)
    batch = next(iter(BatchLoader(dataset, valid, spec.latency_batch, prefetch=0))).to(trainer.device)
    common = {"flops_per_example": cost.flops, "params": cost.params, "embedding_params": cost.embedding_params,
              "embedding_training": trainer.embedding_training,
              "examples_per_second": stats.examples_per_second, "train_seconds": stats.seconds,
              "train_dates": list(spec.train_dates), "epochs_trained": trainer.epochs_done,
              "latency": measure_latency(trainer.model, batch)}
    outcome.metrics = {**overall.to_dict(), **common, "eval_dates": valid,
                       "by_date": {d: m.to_dict() for d, m in by_date.items()}}
    outcome.test_metrics = {**test.to_dict(), "eval_dates": list(spec.test_dates),
                            "by_date": {d: m.to_dict() for d, m in test_by_date.items()}}
    outcome.status = "pruned" if trainer.stopped_early else "complete"
    (out / METRICS_FILE).write_text(json.dumps({**outcome.metrics, "test_metrics": outcome.test_metrics,
                                                "status": outcome.status}, indent=2) + "\n")
