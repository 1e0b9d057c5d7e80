"""Early stopping on the validation dates: a run stops when its validation NE stops improving
and ends on its best epoch's weights, in metrics.json and in checkpoint.pt alike."""

from __future__ import annotations

import json
import subprocess
import sys

import pytest
import torch
from torch import nn

from rankitect.data.dataset import Dataset
from rankitect.errors import ConfigError, UserError
from rankitect.model import build_model
from rankitect.train import TrainConfig, evaluate
from rankitect.train.checkpoint import load_checkpoint
from rankitect.train.early_stopping import BEST_FILE, STATE_FILE, EarlyStopping
from rankitect.train.run import train_run
from search_spaces import baseline
from tests.helpers import tiny_synth


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    return Dataset.open(str(tiny_synth(tmp_path_factory.mktemp("d") / "ds", days=4, rows_per_day=1500)))


def _weights(module: nn.Module) -> torch.Tensor:
    return torch.cat([p.detach().flatten() for p in module.parameters()])


def test_stops_after_patience_epochs_without_improvement_and_restores_the_best(tmp_path):
    model = nn.Linear(3, 1)
    watch = EarlyStopping(tmp_path, patience=2)
    assert not watch.record(1, 0.80, model)
    best = _weights(model).clone()
    with torch.no_grad():
        model.weight.add_(1.0)
    assert not watch.record(2, 0.81, model)  # worse: one epoch without improvement
    assert watch.record(3, 0.82, model)  # two: stop
    assert watch.best_epoch == 1 and (tmp_path / BEST_FILE).is_file()
    assert watch.restore_best(model, last_epoch=3)
    assert torch.equal(_weights(model), best)
    resumed = EarlyStopping(tmp_path, patience=2, resume=True)
    assert resumed.curve == {1: 0.80, 2: 0.81, 3: 0.82} and resumed.best_epoch == 1
    watch.finish()
    assert not (tmp_path / BEST_FILE).exists()
    EarlyStopping(tmp_path, patience=2)  # a fresh run forgets the old curve
    assert not (tmp_path / STATE_FILE).exists()


def test_a_nan_epoch_is_never_the_best(tmp_path):
    model = nn.Linear(2, 1)
    watch = EarlyStopping(tmp_path, patience=1)
    watch.record(1, 0.9, model)
    assert watch.record(2, float("nan"), model)
    assert watch.best_epoch == 1


def test_a_run_keeps_its_best_epoch_in_metrics_and_checkpoint(dataset, tmp_path):
    # a large learning rate makes later epochs worse on validation: the restore path runs
    config = TrainConfig(epochs=6, batch_size=128, lr=0.05, lr_schedule="constant", early_stopping=1,
                         embedding_lr=0.5, checkpoint_every=0)
    arch = baseline("dlrm", dataset.schema)
    metrics = train_run(dataset, arch, dataset.dates[:2], [dataset.dates[2]], config, tmp_path / "run",
                        test_dates=[dataset.dates[3]])
    curve = {int(k): v for k, v in metrics["valid_ne_by_epoch"].items()}
    assert sorted(curve) == list(range(1, metrics["epochs_trained"] + 1))
    assert metrics["best_epoch"] == min(curve, key=curve.get)
    assert metrics["ne"] == pytest.approx(curve[metrics["best_epoch"]], rel=1e-6)
    assert metrics["early_stopped"] and metrics["epochs_trained"] < 6  # the seed's run gets worse after its best
    assert metrics["epochs_trained"] - metrics["best_epoch"] == 1
    assert "test_metrics" in metrics and metrics["test_metrics"]["eval_dates"] == [dataset.dates[3]]
    state = load_checkpoint(tmp_path / "run" / "checkpoint.pt")
    model = build_model(arch, dataset.schema)
    model.load_state_dict(state["model"])
    again, _ = evaluate(model, dataset, [dataset.dates[2]])
    assert again.ne == pytest.approx(metrics["ne"], rel=1e-5)
    assert not (tmp_path / "run" / BEST_FILE).exists()


def test_early_stopping_zero_trains_every_epoch(dataset, tmp_path):
    config = TrainConfig(epochs=2, batch_size=256, early_stopping=0, checkpoint_every=0)
    metrics = train_run(dataset, baseline("lr", dataset.schema), dataset.dates[:2], [dataset.dates[2]], config,
                        tmp_path / "run")
    assert metrics["epochs_trained"] == 2 and not metrics["early_stopped"]


def test_bad_settings_are_named(dataset, tmp_path):
    with pytest.raises(ConfigError, match="early_stopping: must be >= 0"):
        TrainConfig(early_stopping=-1).check()
    with pytest.raises(UserError, match="--test-dates overlap --eval-dates"):
        train_run(dataset, baseline("lr", dataset.schema), dataset.dates[:2], [dataset.dates[2]], TrainConfig(),
                  tmp_path / "r", test_dates=[dataset.dates[2]])


def test_cli_reports_the_kept_epoch_and_refuses_overlapping_test_dates(dataset, tmp_path):
    cli = [sys.executable, "-m", "launcher.cli", "train", "--data", dataset.uri, "--arch", "lr",
           "--train-dates", "first:2", "--eval-dates", dataset.dates[2], "--epochs", "2", "--batch-size", "512"]
    ok = subprocess.run([*cli, "--test-dates", "last:1", "--out", str(tmp_path / "ok")], capture_output=True, text=True)
    assert ok.returncode == 0, ok.stderr
    assert "test dates: NE" in ok.stdout and "kept epoch" in ok.stdout
    assert json.loads((tmp_path / "ok" / "metrics.json").read_text())["test_metrics"]["eval_dates"] == [dataset.dates[3]]
    bad = subprocess.run([*cli, "--test-dates", dataset.dates[2], "--out", str(tmp_path / "bad")],
                         capture_output=True, text=True)
    assert bad.returncode == 2 and "--test-dates overlap --eval-dates" in bad.stderr
    assert "Traceback" not in bad.stderr
