"""One training run in a folder: arch.json, config.json, checkpoint.pt, metrics.json."""

from __future__ import annotations

import json
import shutil
from pathlib import Path
from typing import Any

import torch

from rankitect.arch.graph import Architecture
from rankitect.cost import cost_of
from rankitect.data.dataset import Dataset
from rankitect.errors import UserError
from rankitect.train.config import TrainConfig
from rankitect.train.trainer import Trainer, evaluate, training_model

METRICS_FILE = "metrics.json"
ARCH_FILE = "arch.json"
CONFIG_FILE = "config.json"


def prepare_run_dir(out: Path, resume: bool, force: bool) -> None:
    """Create `out`; an existing run is continued only with `resume`, replaced only with `force`."""
    if resume:
        if not (out / "checkpoint.pt").is_file():
            raise UserError(f"--resume: {out} holds no checkpoint.pt to continue from")
        return
    if out.exists() and any(out.iterdir()):
        if not force:
            raise UserError(f"{out} already exists; pass --resume to continue it or --force to "
                            f"start over")
        if not ((out / ARCH_FILE).is_file() or (out / "checkpoint.pt").is_file()):
            raise UserError(f"{out} exists and is not a Rankitect run; refusing to replace it")
        shutil.rmtree(out)
    out.mkdir(parents=True, exist_ok=True)


def train_run(dataset: Dataset, arch: Architecture, train_dates: list[str], eval_dates: list[str],
              config: TrainConfig, out: Path, resume: bool = False, force: bool = False,
              progress: bool | None = None) -> dict[str, Any]:
    """Train `arch` on `train_dates`, evaluate on `eval_dates`, write the run folder, return metrics."""
    config.check()
    overlap = sorted(set(train_dates) & set(eval_dates))
    if overlap:
        raise UserError(f"--eval-dates overlap --train-dates on {overlap}; evaluate on other dates")
    out = Path(out)
    cost = cost_of(arch, dataset.schema)  # validates before anything is written
    prepare_run_dir(out, resume, force)
    arch.save(out / ARCH_FILE)
    run_config = {"data": dataset.uri, "train_dates": train_dates, "eval_dates": eval_dates,
                  **config.to_dict()}
    (out / CONFIG_FILE).write_text(json.dumps(run_config, indent=2) + "\n")
    torch.manual_seed(config.seed)
    model = training_model(arch, dataset.schema, config)
    trainer = Trainer(model, dataset, train_dates, config, run_dir=out, progress=progress)
    stats = trainer.fit(resume=resume)
    overall, by_date = evaluate(trainer.model, dataset, eval_dates, config.eval_batch_size, trainer.device)
    metrics: dict[str, Any] = {
        "arch": arch.name,
        **overall.to_dict(),
        "flops_per_example": cost.flops,
        "params": cost.params,
        "embedding_params": cost.embedding_params,
        "embedding_training": trainer.embedding_training,
        "dense_params": cost.dense_params,
        "examples_per_second": stats.examples_per_second,
        "train_seconds": stats.seconds,
        "train_examples": stats.examples,
        "train_logloss": stats.last_epoch_logloss,
        "steps": stats.steps,
        "train_dates": train_dates,
        "eval_dates": eval_dates,
        "by_date": {d: m.to_dict() for d, m in by_date.items()},
        "config": config.to_dict(),
    }
    (out / METRICS_FILE).write_text(json.dumps(metrics, indent=2) + "\n")
    return metrics
