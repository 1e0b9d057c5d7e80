"""Search configs: every mistake is refused before anything starts, naming the key path."""

from __future__ import annotations

import copy
import dataclasses
from pathlib import Path

import pytest
import yaml

from launcher.cli import main
from launcher.config_file import apply_override, load_config
from rankitect.errors import ConfigError
from rankitect.experiment.config import SearchConfig
from rankitect.experiment.plan import plan_search
from rankitect.train.config import TrainConfig
from tests.helpers import tiny_synth

BASE = {
    "data": {"path": "DATA", "train_dates": "first:1", "valid_dates": "2024-01-02", "test_dates": ["last:1"]},
    "space": {"name": "nasrec"},
    "searcher": {"name": "random"},
}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("cfg") / "ds", days=3, rows_per_day=300)


def _config(data: Path, **changes) -> dict:
    raw = copy.deepcopy(BASE)
    raw["data"]["path"] = str(data)
    for key, value in changes.items():
        apply_override(raw, f"{key.replace('__', '.')}={yaml.safe_dump(value, default_flow_style=True).strip()}")
    return raw


def test_defaults_fill_in(data) -> None:
    cfg = SearchConfig.from_dict(_config(data))
    assert cfg.objectives == ("ne", "flops") and cfg.directions == ["minimize", "minimize"]
    assert cfg.baselines == ("lr", "dlrm", "dcnv2", "deepfm", "autoint")
    assert cfg.data.test_dates == "last:1" and cfg.budget.trials == 20 and cfg.seed == 0
    # One set of training defaults: a trial trains as `rankitect train` does, but for its seed
    # and its checkpoints (epoch ends only: an interrupted trial trains again from its start).
    assert dataclasses.replace(cfg.trial_train(0), checkpoint_every=TrainConfig().checkpoint_every) == TrainConfig()
    assert cfg.trial_train(0).checkpoint_every == 0
    sgd = SearchConfig.from_dict(_config(data, train__embedding_optimizer="sgd", train__embedding_lr=0.2))
    run = sgd.trial_train(3)
    assert (run.embedding_optimizer, run.embedding_lr, run.seed) == ("sgd", 0.2, 3)


@pytest.mark.parametrize(
    "raw_change, message",
    [
        ({"colour": "red"}, "colour: unknown key"),
        ({"budget__trials": 0}, "budget.trials: must be >= 1, got 0"),
        ({"budget__trials": "many"}, "budget.trials: must be int, got 'many'"),
        ({"budget__rounds": 3}, "budget.rounds: unknown key"),
        ({"budget__max_params": 0}, "budget.max_params: must be >= 1, got 0"),
        ({"train__early_stopping": -1}, "train.early_stopping: must be >= 0 (0: train every epoch), got -1"),
        ({"train__lr": -1}, "train.lr: must be > 0"),
        ({"train__optimizer": "lion"}, "train.optimizer: must be one of"),
        ({"objectives": ["ne", "speed"]}, "objectives[1]: unknown objective 'speed'"),
        ({"objectives": ["ne", "ne"]}, "objectives: listed twice"),
        ({"final__seeds": 1}, "final.seeds: must be 0 (off) or >= 2"),
        ({"seed": 1.5}, "seed: must be int"),
        ({"baselines": "dlrm"}, "baselines: must be a list"),
        ({"train__sparse_embeddings": True}, "train.sparse_embeddings: unknown key"),
        ({"train__embedding_optimizer": "lamb"}, "train.embedding_optimizer: must be one of"),
        ({"train__embedding_optimizer": "adam"}, "train.embedding_optimizer: must be one of rowwise_adagrad, "
                                                 "adagrad, sgd, dense on train.device='cpu'"),
        ({"train__embedding_lr": 0}, "train.embedding_lr: must be > 0, got 0"),
        ({"train__loader_workers": -2}, "train.loader_workers: must be >= 0, or -1 (auto), got -2"),
    ],
)
def test_shape_errors_name_the_key(data, raw_change, message: str) -> None:
    with pytest.raises(ConfigError) as err:
        SearchConfig.from_dict(_config(data, **raw_change))
    assert message in str(err.value)


@pytest.mark.parametrize("missing", ["data", "space", "searcher"])
def test_required_sections(data, missing: str) -> None:
    raw = _config(data)
    del raw[missing]
    with pytest.raises(ConfigError, match=f"{missing}: required key is missing"):
        SearchConfig.from_dict(raw)


@pytest.mark.parametrize(
    "raw_change, message",
    [
        ({"space__name": "hyperspace"}, "space.name: unknown search space 'hyperspace'"),
        ({"space__blocks": 0}, "space.blocks"),
        ({"space__colour": 1}, "space.colour: unknown key"),
        ({"data__valid_dates": "first:1"}, "data.valid_dates: overlaps data.train_dates"),
        ({"data__test_dates": "2030-01-01"}, "data.test_dates: date '2030-01-01' is not in the dataset"),
        ({"baselines": ["lr", "no_such_model"]}, "baselines[1] 'no_such_model' is neither a baseline"),
    ],
)
def test_errors_found_against_the_data_and_registries(data, tmp_path, raw_change, message: str) -> None:
    with pytest.raises(Exception) as err:
        plan_search(SearchConfig.from_dict(_config(data, **raw_change)), tmp_path / "run")
    assert message in str(err.value)
    assert not (tmp_path / "run").exists()


def test_cli_refuses_before_starting_with_exit_2(data, tmp_path, capsys) -> None:
    path = tmp_path / "c.yaml"
    path.write_text(yaml.safe_dump(_config(data)))
    cases = [
        (["--set", "budget.trials=-3"], "budget.trials: must be >= 1, got -3"),
        (["--set", "searcher.name=gradient_descent"], "searcher.name: unknown searcher 'gradient_descent'"),
        (["--set", "searcher.population=3"], "searcher.population: unknown key"),
        (["--set", "nonsense"], "expected KEY=VALUE"),
    ]
    for extra, message in cases:
        assert main(["search", "--config", str(path), "--out", str(tmp_path / "run"), *extra]) == 2
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists() or not any((tmp_path / "run").iterdir())
    bad = tmp_path / "bad.yaml"
    bad.write_text("data: [unclosed\n")
    assert main(["search", "--config", str(bad)]) == 2
    assert "not valid YAML (line" in capsys.readouterr().err
    assert main(["search", "--config", str(tmp_path / "missing.yaml")]) == 2


DATE_AND_PATH_MISTAKES = [
    ("valid_dates: 2014-01-33", [], "data.valid_dates: date '2014-01-33' is not a date"),
    ("valid_dates: 2024-01-02", ["data.valid_dates=2024-13-01"], "data.valid_dates: date '2024-13-01' is not a date"),
    ("valid_dates: 2024-01-02", ["data.train_dates=2024-01-01..2024-02-30"],
     "data.train_dates: '2024-02-30' in '2024-01-01..2024-02-30' is not a date"),
    ("valid_dates: [2024-01-02, 2024-02-31]", [], "data.valid_dates: date '2024-02-31' is not a date"),
    ("valid_dates: 2024-01-02", ["data.path=/nonexistent/dataset"],
     "data.path: dataset '/nonexistent/dataset' does not exist"),
]


@pytest.mark.parametrize(("valid", "overrides", "message"), DATE_AND_PATH_MISTAKES)
def test_a_date_or_path_mistake_exits_2_naming_the_key(data, tmp_path, capsys, valid, overrides, message) -> None:
    """Unquoted in the YAML file (YAML's own date type) or given with --set."""
    path = tmp_path / "c.yaml"
    path.write_text(f"data:\n  path: {data}\n  train_dates: first:1\n  {valid}\n  test_dates: 2024-01-03\n"
                    "space: nasrec\nsearcher: random\nbudget: {trials: 1}\n")
    args = [arg for o in overrides for arg in ("--set", o)]
    assert main(["search", "--config", str(path), "--out", str(tmp_path / "run"), *args]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_overrides_and_loading(tmp_path) -> None:
    path = tmp_path / "c.yaml"
    path.write_text("space: nasrec\nsearcher: {name: tpe}\n")
    raw = load_config(path, ["budget.trials=7", "space.blocks=2", "searcher.n_startup_trials=3", "seed=5"])
    assert raw["budget"] == {"trials": 7} and raw["space"] == {"name": "nasrec", "blocks": 2}
    assert raw["searcher"]["n_startup_trials"] == 3 and raw["seed"] == 5


@pytest.mark.parametrize("path", sorted((Path(__file__).resolve().parents[1] / "examples" / "configs").glob("*.yaml")),
                         ids=lambda p: p.stem)
def test_every_example_config_plans(data, tmp_path, path: Path) -> None:
    """Each commented example is a config that passes every check (on tiny data of 3 days)."""
    raw = load_config(path, [])
    raw["data"] = {**raw["data"], "path": str(data), "valid_dates": "2024-01-02"}
    if raw["data"]["train_dates"] == "first:2":
        raw["data"]["train_dates"] = "first:1"
    plan = plan_search(SearchConfig.from_dict(raw), tmp_path / "run")
    assert plan.space.name == raw["space"]["name"]


def test_final_top_k_is_checked():
    from rankitect.experiment.config import SearchConfig

    raw = {"data": {"path": "x", "train_dates": "first:1", "valid_dates": "2024-01-02", "test_dates": "last:1"},
           "space": {"name": "nasrec"}, "searcher": {"name": "tpe"}, "final": {"seeds": 2, "top_k": 0}}
    with pytest.raises(ConfigError, match="final.top_k: must be >= 1, got 0"):
        SearchConfig.from_dict(raw)
