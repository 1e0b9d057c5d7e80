"""Training: metrics.json, reproducibility, checkpoints and resume after an interruption."""

from __future__ import annotations

import dataclasses
import json
import os
import signal

import pytest
import torch

from rankitect.arch.graph import Architecture
from rankitect.data.dataset import Dataset
from rankitect.errors import ConfigError, UserError
from rankitect.model import build_model
from rankitect.train import TrainConfig, Trainer, evaluate
from rankitect.train.run import train_run
from rankitect.train.trainer import TrainingDiverged, TrainingInterrupted
from search_spaces import baseline
from tests.helpers import tiny_synth

CONFIG = TrainConfig(epochs=2, batch_size=256, lr=3e-3, checkpoint_every=5, shuffle_buffer=1000)
TIMING = {"examples_per_second", "train_seconds"}


@pytest.fixture(scope="module")
def dataset(tmp_path_factory) -> Dataset:
    return Dataset.open(str(tiny_synth(tmp_path_factory.mktemp("d") / "ds", days=3, rows_per_day=2000)))


def _untimed(metrics: dict) -> dict:
    return {k: v for k, v in metrics.items() if k not in TIMING}


def test_metrics_file_and_reproducibility(dataset, tmp_path) -> None:
    arch = baseline("deepfm", dataset.schema)
    a = train_run(dataset, arch, dataset.dates[:2], dataset.dates[2:], CONFIG, tmp_path / "a", progress=False)
    b = train_run(dataset, arch, dataset.dates[:2], dataset.dates[2:], CONFIG, tmp_path / "b", progress=False)
    on_disk = json.loads((tmp_path / "a" / "metrics.json").read_text())
    for key in ("logloss", "ne", "auc", "calibration", "flops_per_example", "params",
                "examples_per_second", "train_dates", "eval_dates"):
        assert key in on_disk
    assert on_disk["train_dates"] == dataset.dates[:2] and on_disk["eval_dates"] == dataset.dates[2:]
    assert _untimed(a) == _untimed(b)
    torch.manual_seed(CONFIG.seed)
    untrained, _ = evaluate(build_model(arch, dataset.schema), dataset, dataset.dates[2:])
    assert a["logloss"] < untrained.logloss and a["auc"] > untrained.auc + 0.03
    assert (tmp_path / "a" / "checkpoint.pt").is_file() and (tmp_path / "a" / "arch.json").is_file()


def _trainer(dataset, run_dir, config=CONFIG, on_step=None) -> Trainer:
    torch.manual_seed(config.seed)
    model = build_model(baseline("deepfm", dataset.schema), dataset.schema)
    return Trainer(model, dataset, dataset.dates[:2], config, run_dir=run_dir, progress=False,
                   on_step=on_step)


def _eval_ne(trainer: Trainer, dataset) -> float:
    return evaluate(trainer.model, dataset, dataset.dates[2:])[0].ne


@pytest.mark.parametrize("how", ["sigint", "keyboard_interrupt"])
def test_interrupted_training_resumes_to_the_same_model(dataset, tmp_path, how: str) -> None:
    """A real SIGINT is honoured after the step (checkpoint of that step); a KeyboardInterrupt
    raised inside a step resumes from the last periodic checkpoint. Both end where an
    uninterrupted run ends."""
    (tmp_path / "full").mkdir()
    (tmp_path / "cut").mkdir()
    full = _trainer(dataset, tmp_path / "full")
    full_stats = full.fit()

    def interrupt(step: int, loss: float) -> None:
        if step == 13:  # mid-epoch, between checkpoints (every 5 steps)
            if how == "sigint":
                os.kill(os.getpid(), signal.SIGINT)
            else:
                raise KeyboardInterrupt

    cut = _trainer(dataset, tmp_path / "cut", on_step=interrupt)
    saved = 13 if how == "sigint" else 10
    with pytest.raises(TrainingInterrupted, match=f"at step 13; resume with --resume \\(checkpoint of step {saved}"):
        cut.fit()
    resumed = _trainer(dataset, tmp_path / "cut")
    stats = resumed.fit(resume=True)
    assert stats.steps == full_stats.steps and stats.examples == full_stats.examples
    assert _eval_ne(resumed, dataset) == pytest.approx(_eval_ne(full, dataset), abs=1e-6)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_resume_refuses_other_settings(dataset, tmp_path) -> None:
    (tmp_path / "r").mkdir()
    _trainer(dataset, tmp_path / "r", config=TrainConfig(epochs=1, batch_size=256, shuffle_buffer=1000)).fit()
    other = TrainConfig(epochs=1, batch_size=256, shuffle_buffer=1000, lr=0.5)
    with pytest.raises(UserError, match=f"lr={TrainConfig().lr} there, 0.5 now"):
        _trainer(dataset, tmp_path / "r", config=other).fit(resume=True)


def test_divergence_is_a_clear_error(dataset) -> None:
    config = TrainConfig(epochs=1, batch_size=256, shuffle_buffer=1000, optimizer="sgd", lr=1e12)
    with pytest.raises(TrainingDiverged, match="lower learning rate"):
        _trainer(dataset, None, config=config).fit()


def test_run_folder_safety(dataset, tmp_path) -> None:
    arch = baseline("lr", dataset.schema)
    cfg = TrainConfig(epochs=1, batch_size=512, shuffle_buffer=1000)
    train_run(dataset, arch, dataset.dates[:2], dataset.dates[2:], cfg, tmp_path / "run", progress=False)
    before = (tmp_path / "run" / "metrics.json").read_text()
    with pytest.raises(UserError, match="already exists"):
        train_run(dataset, arch, dataset.dates[:2], dataset.dates[2:], cfg, tmp_path / "run", progress=False)
    assert (tmp_path / "run" / "metrics.json").read_text() == before
    (tmp_path / "mine").mkdir()
    (tmp_path / "mine" / "notes.txt").write_text("precious")
    with pytest.raises(UserError, match="not a Rankitect run"):
        train_run(dataset, arch, dataset.dates[:2], dataset.dates[2:], cfg, tmp_path / "mine",
                  force=True, progress=False)
    assert (tmp_path / "mine" / "notes.txt").read_text() == "precious"
    with pytest.raises(UserError, match="overlap"):
        train_run(dataset, arch, dataset.dates[:2], dataset.dates[1:], cfg, tmp_path / "o", progress=False)
    assert not (tmp_path / "o").exists()


def test_precision_must_be_fp32_or_bf16() -> None:
    with pytest.raises(ConfigError, match=r"precision: must be one of \('fp32', 'bf16'\), got 'fp16'"):
        TrainConfig(precision="fp16").check()


def test_bf16_autocast_trains_on_cpu(dataset, tmp_path) -> None:
    """bf16 runs the forward pass under CPU autocast: the model learns, its weights stay float32,
    and the result differs from the fp32 run's (the matrix products really ran in bf16)."""
    arch = baseline("dlrm", dataset.schema)
    config = TrainConfig(epochs=1, batch_size=256, lr=3e-3, shuffle_buffer=1000, checkpoint_every=0)
    runs = {p: train_run(dataset, arch, dataset.dates[:2], dataset.dates[2:],
                         dataclasses.replace(config, precision=p), tmp_path / p, progress=False)
            for p in ("fp32", "bf16")}
    assert runs["bf16"]["config"]["precision"] == "bf16"
    assert runs["bf16"]["logloss"] != runs["fp32"]["logloss"]
    assert abs(runs["bf16"]["ne"] - runs["fp32"]["ne"]) < 0.02
    torch.manual_seed(config.seed)
    untrained, _ = evaluate(build_model(arch, dataset.schema), dataset, dataset.dates[2:])
    assert runs["bf16"]["logloss"] < untrained.logloss
    state = torch.load(tmp_path / "bf16" / "checkpoint.pt", weights_only=True)["model"]
    assert all(v.dtype in (torch.float32, torch.int64, torch.int32) for v in state.values())


@pytest.mark.parametrize("table_optimizer", ["rowwise_adagrad", "adagrad", "sgd"])
def test_fused_tables_update_only_the_rows_a_batch_used(tmp_path, table_optimizer: str) -> None:
    """Fused tables (optimizer in the backward pass): the model learns, a row no training batch
    looked up keeps its initial value, dense layers still train, and an interrupted run resumes
    (the tables' optimizer state in the checkpoint) to the same model."""
    from rankitect.blocks.fused_tables import FusedTables
    from rankitect.train.optimizers import TablesOptimizer

    # 3000 ids per column, 2000 training rows: most table rows are never looked up
    dataset = Dataset.open(str(tiny_synth(tmp_path / "wide", days=3, rows_per_day=1000, cardinality=3000)))
    config = dataclasses.replace(CONFIG, embedding_optimizer=table_optimizer)
    torch.manual_seed(config.seed)
    initial = {k: v.detach().clone() for k, v in build_model(baseline("deepfm", dataset.schema), dataset.schema)
               .state_dict().items()}
    (tmp_path / "full").mkdir()
    full = _trainer(dataset, tmp_path / "full", config=config)
    assert isinstance(full.model.embedding.ebc, FusedTables)
    assert isinstance(full.optimizer.parts["tables"], TablesOptimizer)
    full.fit()
    used = _used_ids(dataset)
    for name, value in full.model.state_dict().items():
        if "embedding_bags" in name:
            column = name.split("embedding_bags.")[1].split(".")[0].removeprefix("t_")
            unseen = sorted(set(range(value.shape[0])) - used.get(column, set()))
            assert unseen, name
            torch.testing.assert_close(value[unseen], initial[name][unseen], rtol=0, atol=0)
            seen = sorted(used[column])
            assert not torch.equal(value[seen], initial[name][seen])
        elif value.is_floating_point() and "dense_" not in name:
            assert not torch.equal(value, initial[name]), name
    torch.manual_seed(config.seed)
    untrained, _ = evaluate(build_model(baseline("deepfm", dataset.schema), dataset.schema), dataset,
                            dataset.dates[2:])
    assert _eval_ne(full, dataset) < untrained.ne

    (tmp_path / "cut").mkdir()
    cut = _trainer(dataset, tmp_path / "cut", config=config,
                   on_step=lambda step, loss: (_ for _ in ()).throw(KeyboardInterrupt) if step == 13 else None)
    with pytest.raises(TrainingInterrupted):
        cut.fit()
    resumed = _trainer(dataset, tmp_path / "cut", config=config)
    resumed.fit(resume=True)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)
    dense = _trainer(dataset, tmp_path / "cut", config=dataclasses.replace(config, embedding_optimizer="dense"))
    with pytest.raises(UserError, match=f"embedding_optimizer='{table_optimizer}' there, 'dense' now"):
        dense.fit(resume=True)


def _used_ids(dataset) -> dict[str, set[int]]:
    """Every id of each sparse column in the training dates."""
    from rankitect.data.loader import BatchLoader

    used: dict[str, set[int]] = {}
    for batch in BatchLoader(dataset, dataset.dates[:2], batch_size=1000, prefetch=0):
        for key, jt in batch.sparse.to_dict().items():
            used.setdefault(key, set()).update(jt.values().tolist())
    return used


def test_embedding_optimizer_settings_are_checked() -> None:
    with pytest.raises(ConfigError, match=r"embedding_optimizer: must be one of \('rowwise_adagrad'"):
        TrainConfig(embedding_optimizer="lamb").check()
    with pytest.raises(ConfigError, match="embedding_optimizer: must be one of rowwise_adagrad, adagrad, sgd, dense on device='cpu'"):
        TrainConfig(embedding_optimizer="adam").check()
    with pytest.raises(ConfigError, match="embedding_lr: must be > 0, got 0.0"):
        TrainConfig(embedding_lr=0.0).check()


def _as_older_version(path, **config_changes) -> None:
    """Rewrite a dense-tables checkpoint as the version before fused tables wrote it: a plain
    torch optimizer state, and a config without the settings added since."""
    state = torch.load(path, weights_only=True)
    state["optimizer"] = state["optimizer"]["dense"]
    for key in ("embedding_optimizer", "embedding_lr", "loader_workers"):
        del state["config"][key]
    for group in state["optimizer"]["param_groups"]:
        del group["base_lr"]
    state["config"].update({"sparse_embeddings": False, **config_changes})
    torch.save(state, path)


def test_a_checkpoint_of_the_version_before_fused_tables_resumes(dataset, tmp_path) -> None:
    dense = dataclasses.replace(CONFIG, embedding_optimizer="dense")
    (tmp_path / "full").mkdir()
    full = _trainer(dataset, tmp_path / "full", config=dense)
    full.fit()
    (tmp_path / "cut").mkdir()
    cut = _trainer(dataset, tmp_path / "cut", config=dense,
                   on_step=lambda step, loss: (_ for _ in ()).throw(KeyboardInterrupt) if step == 13 else None)
    with pytest.raises(TrainingInterrupted):
        cut.fit()
    _as_older_version(tmp_path / "cut" / "checkpoint.pt")
    with pytest.raises(UserError, match="embedding_optimizer='dense' there, 'rowwise_adagrad' now"):
        _trainer(dataset, tmp_path / "cut").fit(resume=True)  # its tables were dense parameters
    resumed = _trainer(dataset, tmp_path / "cut", config=dense)
    resumed.fit(resume=True)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)

    _as_older_version(tmp_path / "full" / "checkpoint.pt", sparse_embeddings=True)
    with pytest.raises(UserError, match=r"trained with sparse_embeddings=True \(row-sparse table gradients, which "
                                        r"fused tables \(embedding_optimizer\) replaced\); .* start over with --force"):
        _trainer(dataset, tmp_path / "full", config=dense).fit(resume=True)


def test_resume_with_tables_of_other_sizes_is_a_clear_error(dataset, tmp_path) -> None:
    (tmp_path / "r").mkdir()
    _trainer(dataset, tmp_path / "r", config=dataclasses.replace(CONFIG, epochs=1)).fit()
    arch = baseline("deepfm", dataset.schema)
    smaller = Architecture.from_dict({**arch.to_dict(), "embedding": {"rows": 7}})
    torch.manual_seed(0)
    other = Trainer(build_model(smaller, dataset.schema), dataset, dataset.dates[:2],
                    dataclasses.replace(CONFIG, epochs=1), run_dir=tmp_path / "r", progress=False)
    with pytest.raises(UserError, match="was trained with another architecture"):
        other.fit(resume=True)
    state = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)
    state["arch"] = smaller.to_dict()  # the same architecture, its tables sized from other counts
    torch.save(state, tmp_path / "r" / "checkpoint.pt")
    with pytest.raises(UserError, match="weights do not fit the model built now .* other rows than the dataset"):
        other.fit(resume=True)
