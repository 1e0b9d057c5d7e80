"""One training run in a folder, the one writer of it: `rankitect train`, a search's trials,
its baselines and final-seed runs all go through `train_and_score`.

The folder holds arch.json, config.json, checkpoint.pt and metrics.json. config.json has the
shape of a search config's `data` and `train` sections:
{"data": {"path", "train_dates", "valid_dates", "test_dates"}, "train": {TrainConfig fields}}.
"""

from __future__ import annotations

import json
import shutil
import statistics
import time
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch

from rankitect.arch.graph import Architecture
from rankitect.arch.validate import ValidatedArchitecture, validate
from rankitect.bootstrap import ne_replicates
from rankitect.cost import cost_of
from rankitect.data.batch import Batch
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.errors import UserError
from rankitect.metrics import EvalMetrics
from rankitect.train.checkpoint import CHECKPOINT_FILE
from rankitect.train.config import TrainConfig, resolve_device
from rankitect.train.early_stopping import EarlyStopping
from rankitect.train.trainer import Trainer, concatenated, evaluate, predict_dates, scored, training_model

METRICS_FILE = "metrics.json"
ARCH_FILE = "arch.json"
CONFIG_FILE = "config.json"


@dataclass(frozen=True)
class RunDates:
    train: tuple[str, ...]
    valid: tuple[str, ...]  # scored into metrics.json (what a search selects on)
    test: tuple[str, ...] = ()  # scored into metrics.json's test_metrics, reported only


def claim_folder(out: Path, force: bool, is_ours: Callable[[Path], bool], what: str, hint: str) -> None:
    """Make `out` an empty folder. An existing non-empty one is replaced only with `force` (else
    UserError ending with `hint`), and only when `is_ours(out)` says it holds a `what`."""
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserError(f"{out} already exists; {hint}")
        if not is_ours(out):
            raise UserError(f"{out} exists and is not a {what}; refusing to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def _is_training_run(out: Path) -> bool:
    return (out / ARCH_FILE).is_file() or (out / CHECKPOINT_FILE).is_file()


def run_config(dataset: Dataset, dates: RunDates, config: TrainConfig) -> dict[str, Any]:
    """config.json of a run."""
    return {"data": {"path": dataset.uri, "train_dates": list(dates.train), "valid_dates": list(dates.valid),
                     "test_dates": list(dates.test)},
            "train": config.to_dict()}


def measure_latency(model: torch.nn.Module, batch: Batch, repeats: int = 5) -> float:
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


def train_and_score(validated: ValidatedArchitecture, dataset: Dataset, dates: RunDates, config: TrainConfig,
                    out: Path, resume: bool = False, progress: bool | None = None,
                    on_epoch: Callable[[int, EvalMetrics], bool] | None = None,
                    latency_batch: int = 0) -> dict[str, Any]:
    """Train on `dates.train`, score on `dates.valid` (and `dates.test`), write the folder; the
    metrics (metrics.json). With validation dates the run stops early when its validation NE
    stops improving (`config.early_stopping` epochs; rankitect.train.early_stopping) and ends
    on its best epoch. `on_epoch(epochs_done, validation metrics)` True stops training there:
    the metrics then say `status: pruned`. With `latency_batch` rows, the forward latency on a
    validation batch of that size too (`latency`, microseconds per example)."""
    cost = cost_of(validated)
    validated.arch.save(out / ARCH_FILE)
    (out / CONFIG_FILE).write_text(json.dumps(run_config(dataset, dates, config), indent=2) + "\n")
    torch.manual_seed(config.seed)
    model = training_model(validated, dataset.schema, config)
    watch = EarlyStopping(out, config.early_stopping if dates.valid else 0, resume=resume)
    pruned = False
    # Validation predictions of the latest and the best epoch this process scored: the run's
    # last scoring reuses them instead of predicting the same weights again.
    scored_epochs: dict[int, dict[str, tuple[Any, Any]]] = {}

    def predictions(epoch: int) -> dict[str, tuple[Any, Any]]:
        if epoch not in scored_epochs:
            scored_epochs[epoch] = predict_dates(trainer.model, dataset, list(dates.valid), config.eval_batch_size,
                                                 trainer.device)
        return scored_epochs[epoch]

    def after_epoch(done: int) -> bool:
        nonlocal pruned
        if not (dates.valid and (watch.patience or on_epoch is not None)):
            return False
        valid = scored(predictions(done))[0]
        stop = watch.record(done, valid.ne, trainer.model)
        for epoch in [e for e in scored_epochs if e not in (done, watch.best_epoch)]:
            del scored_epochs[epoch]
        pruned = not stop and on_epoch is not None and on_epoch(done, valid)
        return stop or pruned

    trainer = Trainer(model, dataset, list(dates.train), config, run_dir=out, progress=progress, on_epoch=after_epoch)
    stats = trainer.fit(resume=resume)
    valid = predictions(trainer.epochs_done)
    overall, by_date = scored(valid)
    if dates.valid:
        if trainer.epochs_done not in watch.curve:
            watch.record(trainer.epochs_done, overall.ne, trainer.model)
        if watch.restore_best(trainer.model, trainer.epochs_done):
            trainer.save()  # the checkpoint holds the best epoch's weights from now on
            valid = predictions(watch.best_epoch)  # scored before, unless this run resumed after it
            overall, by_date = scored(valid)
        watch.finish()
    metrics: dict[str, Any] = {
        "arch": validated.arch.name, **overall.to_dict(),
        "flops_per_example": cost.flops, "params": cost.params, "embedding_params": cost.embedding_params,
        "dense_params": cost.dense_params, "embedding_training": trainer.embedding_training,
        "examples_per_second": stats.examples_per_second, "train_seconds": stats.seconds,
        "train_examples": stats.examples, "train_logloss": stats.last_epoch_logloss, "steps": stats.steps,
        "epochs_trained": trainer.epochs_done, "status": "pruned" if pruned else "complete",
        "early_stopped": trainer.stopped_early and not pruned, **(watch.summary() if dates.valid else {}),
        "train_dates": list(dates.train), "eval_dates": list(dates.valid),
        "by_date": {d: m.to_dict() for d, m in by_date.items()}, "config": config.to_dict(),
    }
    if dates.valid:
        replicates = ne_replicates(*concatenated(valid))
        metrics["valid_ne_replicates"] = [round(float(v), 6) for v in replicates]
    if dates.test:
        test, test_by_date = evaluate(trainer.model, dataset, list(dates.test), config.eval_batch_size,
                                      trainer.device)
        metrics["test_metrics"] = {**test.to_dict(), "eval_dates": list(dates.test),
                                   "by_date": {d: m.to_dict() for d, m in test_by_date.items()}}
    if latency_batch:
        batch = next(iter(BatchLoader(dataset, list(dates.valid), latency_batch, prefetch=0))).to(trainer.device)
        metrics["latency"] = measure_latency(trainer.model, batch)
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics


def train_run(dataset: Dataset, arch: Architecture, train_dates: list[str], eval_dates: list[str],
              config: TrainConfig, out: Path, resume: bool = False, force: bool = False,
              progress: bool | None = None, test_dates: list[str] | None = None) -> dict[str, Any]:
    """`rankitect train`: train `arch` on `train_dates`, validate on `eval_dates` (and score
    `test_dates`), write the run folder, return the metrics. An existing run is continued only
    with `resume`, replaced only with `force`."""
    resolve_device(config.check().device)  # a missing GPU is said before anything is written
    test_dates = list(test_dates or [])
    for flag, dates, other_flag, other in (("--eval-dates", eval_dates, "--train-dates", train_dates),
                                           ("--test-dates", test_dates, "--train-dates", train_dates),
                                           ("--test-dates", test_dates, "--eval-dates", eval_dates)):
        overlap = sorted(set(dates) & set(other))
        if overlap:
            raise UserError(f"{flag} overlap {other_flag} on {overlap}; use other dates")
    out = Path(out)
    validated = validate(arch, dataset.schema)  # before anything is written
    if resume:
        if not (out / CHECKPOINT_FILE).is_file():
            raise UserError(f"--resume: {out} holds no checkpoint.pt to continue from")
    else:
        claim_folder(out, force, _is_training_run, "Rankitect run",
                     "pass --resume to continue it or --force to start over")
    return train_and_score(validated, dataset, RunDates(tuple(train_dates), tuple(eval_dates), tuple(test_dates)),
                           config, out,
                           resume=resume, progress=progress)
