"""One trial: train an architecture on the train dates, score it on the validation dates (what
searchers select on) and on the test dates (reported only). Plain Python: the pool's worker
calls `run_trial`, and so can a test.

The trial folder is a `rankitect train` run folder (written by rankitect.train.run), so the
best trial can be exported as it is. The architecture arrives validated: the driver validated
it once, when it decoded the trial's choices and screened its FLOPs.
"""

from __future__ import annotations

import dataclasses
import json
import math
import os
import socket
import time
import traceback
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankitect.arch.validate import ValidatedArchitecture
from rankitect.data.dataset import Dataset
from rankitect.errors import UserError
from rankitect.experiment.pruning import EpochPruner, PruningSnapshot
from rankitect.metrics import EvalMetrics
from rankitect.test_gate import wait_at_gate
from rankitect.train.config import TrainConfig
from rankitect.train.run import RunDates, train_and_score

OUTCOME_FILE = "outcome.json"


@dataclass(frozen=True)
class TrialSpec:
    name: str  # "trial 7", "baseline dlrm", ...
    arch: ValidatedArchitecture
    data_path: str
    dates: RunDates
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


def run_trial(spec: TrialSpec) -> TrialOutcome:
    """Train and score `spec`; never raises for a problem of the trial itself (status failed)."""
    wait_at_gate(spec.name)  # a test hook (rankitect/test_gate.py): returns at once unless a test armed it
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
    dataset = Dataset.shared(spec.data_path)
    pruner = EpochPruner(spec.pruning) if spec.pruning is not None else None

    def on_epoch(epochs_done: int, valid: EvalMetrics) -> bool:
        metric = getattr(valid, spec.prune_metric)
        outcome.intermediate[epochs_done] = metric  # the learning curve (Optuna's intermediate values)
        return pruner is not None and math.isfinite(metric) and pruner.should_prune(epochs_done, metric)

    # With early stopping every epoch is scored anyway: the curve costs nothing; without it (and
    # without pruning) only the last epoch is, and the curve is that one point.
    curve = pruner is not None or spec.train.early_stopping > 0
    metrics = train_and_score(spec.arch, dataset, spec.dates, spec.train, out, progress=False,
                              on_epoch=on_epoch if curve else None,
                              latency_batch=spec.latency_batch)
    outcome.intermediate[metrics["epochs_trained"]] = metrics[spec.prune_metric]
    outcome.test_metrics = metrics.pop("test_metrics", {})
    outcome.status = metrics["status"]
    outcome.metrics = metrics
