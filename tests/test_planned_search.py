"""One-shot, DNAS and proxy searches end to end on the session's real Ray cluster, real SQLite
study and parquet data, and what their planning phases must get right."""

from __future__ import annotations

import json
import random
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.cli import main
from rankitect.arch import Architecture
from rankitect.cost import cost_of
from rankitect.data.dataset import Dataset
from rankitect.experiment.report import report_lines
from rankitect.experiment.run import search
from rankitect.searchers.dnas import temperature_at
from rankitect.searchers.oneshot import OneShotOptions, sampled_paths
from rankitect.space import make_space
from tests.helpers import tiny_synth
from tests.test_search import make_config

INTERACTIONS = {"name": "interactions", "layers": 2, "widths": [16, 32], "dcn_ranks": [0, 4],
                "mlp_hidden": [16, 32]}
ONESHOT = {"name": "oneshot", "supernet_epochs": 1, "top_k": 2, "calibration": 2, "eval_rows": 1000,
           "population": 4, "sample_size": 2}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("planned") / "ds", days=3, rows_per_day=1500)


def _config(data: Path, searcher: dict[str, Any], trials: int = 6, **sections: Any) -> dict[str, Any]:
    return make_config(data, trials=trials, space=INTERACTIONS, searcher=searcher, baselines=[], **sections)


def _check_trials(saved: dict[str, Any], count: int, data: Path) -> None:
    schema = Dataset.open(str(data)).schema
    assert [t["number"] for t in saved["trials"]] == list(range(count))
    for trial in saved["trials"]:
        assert trial["status"] == "complete", trial.get("error")
        assert trial["metrics"]["eval_dates"] == ["2024-01-02"]
        assert trial["test_metrics"]["eval_dates"] == ["2024-01-03"]
        arch = Architecture.from_dict(trial["arch"])
        assert trial["metrics"]["flops_per_example"] == cost_of(arch, schema).flops
        assert trial["proposal"]


def test_oneshot_end_to_end_reports_the_kendall_tau(ray_cluster, data, tmp_path) -> None:
    result = search(_config(data, ONESHOT, trials=8), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    _check_trials(saved, 4, data)
    assert [t["proposal"]["role"] for t in saved["trials"]] == ["top_k", "top_k", "calibration", "calibration"]
    records = json.loads((tmp_path / "run" / "planning" / "search_8.json").read_text())["records"]
    assert len(records) == 8 and len({json.dumps(r["choices"], sort_keys=True) for r in records}) == 8
    # The top_k are the two lowest supernet NEs of the Pareto front on (supernet NE, FLOPs).
    front = [r for r in records if not any(o["supernet_ne"] <= r["supernet_ne"] and o["flops"] <= r["flops"]
                                           and o is not r and (o["supernet_ne"], o["flops"]) != (r["supernet_ne"], r["flops"])
                                           for o in records)]
    expected = sorted(front, key=lambda r: r["supernet_ne"])[:2]
    assert [t["choices"] for t in saved["trials"][:2]] == [r["choices"] for r in expected]
    for trial in saved["trials"]:
        assert trial["proposal"]["supernet_flops"] == trial["metrics"]["flops_per_example"]
    agreement = saved["planning"]["agreement"]
    assert agreement["archs"] == 4 and agreement["score"] == "supernet_ne"
    assert -1.0 <= agreement["kendall_tau"] <= 1.0
    shown = [line for line in report_lines(saved) if "Kendall tau" in line]
    assert shown and f"over 4 retrained architectures: Kendall tau {agreement['kendall_tau']:+.3f}" in shown[0]
    assert saved["planning"]["search"]["evaluated"] == 8 and saved["planning"]["supernet"]["steps"] == 6
    assert (tmp_path / "run" / "best" / "checkpoint.pt").is_file() and result.best is not None


def test_oneshot_run_again_reuses_the_supernet_and_keeps_the_trials(ray_cluster, data, tmp_path) -> None:
    config = _config(data, {**ONESHOT, "calibration": 0}, trials=6)
    first = search(config, tmp_path / "run", progress=False)
    supernet = tmp_path / "run" / "planning" / "supernet.pt"
    stamp = supernet.stat().st_mtime_ns
    again = search(config, tmp_path / "run", progress=False)
    assert supernet.stat().st_mtime_ns == stamp
    assert again.trials == first.trials
    # A larger budget searches the same supernet again (more candidates), without retraining it.
    more = search({**config, "budget": {"trials": 10}}, tmp_path / "run", progress=False)
    assert supernet.stat().st_mtime_ns == stamp and more.planning["search"]["evaluated"] == 10


def test_dnas_larger_lambda_derives_a_cheaper_architecture(ray_cluster, data, tmp_path) -> None:
    searcher = {"name": "dnas", "lambdas": [0.0, 20.0], "epochs": 4, "min_steps": 0, "arch_fraction": 0.5, "arch_lr": 0.1,
                "warmup_fraction": 0.0}
    result = search(_config(data, searcher), tmp_path / "run", progress=False)
    runs = {r["lambda"]: r for r in result.planning["lambdas"]}
    assert runs[20.0]["flops"] < runs[0.0]["flops"]
    assert runs[20.0]["expected_flops"] < runs[0.0]["expected_flops"]
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    _check_trials(saved, 2, data)
    by_lambda = {lam: t for t in saved["trials"] for lam in t["proposal"]["lambdas"]}
    assert by_lambda[20.0]["metrics"]["flops_per_example"] == runs[20.0]["flops"]
    assert by_lambda[0.0]["metrics"]["flops_per_example"] == runs[0.0]["flops"]
    for run in result.planning["lambdas"]:
        for name, probs in run["probabilities"].items():
            assert sum(probs.values()) == pytest.approx(1.0, abs=1e-5), name


def test_proxy_search_scores_by_sigeo_on_a_warmed_supernet(ray_cluster, data, tmp_path) -> None:
    searcher = {"name": "proxy", "proxy": "sigeo", "top_k": 2, "warmup_steps": 3, "calibration": 1}
    result = search(_config(data, searcher, trials=6), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    _check_trials(saved, 3, data)
    scores = [t["proposal"]["proxy"] for t in saved["trials"]]
    assert scores[0] >= scores[1] >= scores[2]
    assert result.planning["warm_supernet"] and result.planning["scored"] == 6
    assert (tmp_path / "run" / "planning" / "warm_supernet_3.pt").is_file()


NASREC = {"name": "nasrec", "blocks": 2, "dense_widths": [16, 32], "efc_rows": [4, 8]}


def test_oneshot_over_nasrec_trains_its_block_supernet(ray_cluster, data, tmp_path) -> None:
    config = make_config(data, trials=6, space=NASREC, searcher={**ONESHOT, "calibration": 1}, baselines=[])
    search(config, tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    _check_trials(saved, 3, data)
    assert saved["planning"]["agreement"]["archs"] == 3 and saved["planning"]["search"]["evaluated"] == 6
    space = make_space("nasrec", Dataset.open(str(data)).schema, {k: v for k, v in NASREC.items() if k != "name"})
    for trial in saved["trials"]:  # the retrained trials are the space's members the supernet scored
        assert space.decode(trial["choices"]).to_dict() == trial["arch"]


def test_dnas_over_nasrec_larger_lambda_derives_a_cheaper_architecture(ray_cluster, data, tmp_path) -> None:
    searcher = {"name": "dnas", "lambdas": [0.0, 50.0], "epochs": 4, "min_steps": 0, "arch_fraction": 0.5, "arch_lr": 0.2,
                "warmup_fraction": 0.0, "gumbel": True}
    config = make_config(data, trials=2, space=NASREC, searcher=searcher, baselines=[])
    result = search(config, tmp_path / "run", progress=False)
    runs = {r["lambda"]: r for r in result.planning["lambdas"]}
    assert runs[50.0]["flops"] < runs[0.0]["flops"]
    assert runs[50.0]["expected_flops"] < runs[0.0]["expected_flops"]
    _check_trials(json.loads((tmp_path / "run" / "result.json").read_text()), 2, data)


def test_proxy_search_by_parameter_count_over_nasrec(ray_cluster, data, tmp_path) -> None:
    config = make_config(data, "proxy", trials=5, searcher={"name": "proxy", "proxy": "params", "top_k": 2},
                         baselines=[])
    result = search(config, tmp_path / "run", progress=False)
    schema = Dataset.open(str(data)).schema
    space = make_space("nasrec", schema, {"blocks": 2})
    rng = random.Random(0)
    sampled = [space.sample(rng) for _ in range(5)]  # the searcher's candidates (seed 0, all distinct)
    params = sorted((cost_of(space.decode(c), schema).dense_params for c in sampled), reverse=True)
    assert [t["proposal"]["proxy"] for t in result.trials] == params[:2]


# -- bad input ------------------------------------------------------------------------------
@pytest.fixture
def no_supernets() -> Any:
    """A space registered for the test that builds no supernet (nasrec's choices and decode)."""
    from rankitect.space import register_space, unregister_space
    from search_spaces.nasrec import NasRecSpace

    class NoSupernets(NasRecSpace):
        name = "no_supernets"

    register_space(NoSupernets)
    yield NoSupernets
    unregister_space("no_supernets")


@pytest.mark.parametrize("searcher, space, message", [
    ({"name": "dnas"}, {"name": "no_supernets"}, "searcher.name: 'dnas' needs a space that builds mixed-op "
                                                  "supernets; space 'no_supernets' does not"),
    ({"name": "oneshot"}, {"name": "no_supernets"}, "space 'no_supernets' does not (spaces that do: "),
    ({"name": "dnas", "lambdas": [0, -1]}, INTERACTIONS, "searcher.lambdas"),
    ({"name": "dnas", "mode": "sideways"}, INTERACTIONS, "searcher.mode"),
    ({"name": "dnas", "min_steps": -1}, INTERACTIONS, "searcher.min_steps"),
    ({"name": "dnas", "temperature": [1.0]}, INTERACTIONS, "searcher.temperature"),
    ({"name": "oneshot", "sampling": "all"}, INTERACTIONS, "searcher.sampling"),
    ({"name": "oneshot", "top_k": 0}, INTERACTIONS, "searcher.top_k"),
    ({"name": "oneshot", "delayed_shrinking": 1.5}, INTERACTIONS, "searcher.delayed_shrinking"),
    ({"name": "proxy", "proxy": "vibes"}, INTERACTIONS, "searcher.proxy: unknown proxy 'vibes'"),
    ({"name": "proxy", "batches": 1}, INTERACTIONS, "searcher.batches"),
])
def test_bad_searcher_config_exits_2_naming_the_key(data, tmp_path, capsys, no_supernets, searcher, space,
                                                    message) -> None:
    config = make_config(data, trials=2, space=space, searcher=searcher)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["search", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# -- pieces -------------------------------------------------------------------------------
def test_a_small_table_gets_the_passes_min_steps_asks_for(data) -> None:
    from rankitect.searchers.supernet_train import train_steps
    from rankitect.train import TrainConfig

    dataset = Dataset.open(str(data))
    cfg = TrainConfig(batch_size=256)
    one = list(train_steps(dataset, ("2024-01-01",), cfg, 1, seed=0))
    more = list(train_steps(dataset, ("2024-01-01",), cfg, 1, seed=0, min_steps=3 * len(one) - 1))
    assert len(more) == 3 * len(one) and more[-1].epoch == 2 and more[-1].total == len(more)
    assert len(list(train_steps(dataset, ("2024-01-01",), cfg, 2, seed=0, min_steps=1))) == 2 * len(one)


def test_temperature_schedule_runs_from_start_to_end() -> None:
    assert temperature_at(0, 11, 2.0, 0.5) == pytest.approx(2.0)
    assert temperature_at(10, 11, 2.0, 0.5) == pytest.approx(0.5)
    assert temperature_at(5, 11, 2.0, 0.5) == pytest.approx(1.0)  # geometric midpoint


def test_sandwich_and_delayed_shrinking_paths(data) -> None:
    space = make_space("interactions", Dataset.open(str(data)).schema, {k: v for k, v in INTERACTIONS.items()
                                                                         if k != "name"})
    rng = random.Random(0)
    opts = OneShotOptions(sampling="sandwich", sandwich_random=2, delayed_shrinking=0.25)
    assert sampled_paths(space, opts, 0, 100, rng) == [space.largest()]
    assert sampled_paths(space, opts, 24, 100, rng) == [space.largest()]
    paths = sampled_paths(space, opts, 25, 100, rng)
    assert len(paths) == 4 and paths[0] == space.largest() and paths[1] == space.smallest()
    uniform = sampled_paths(space, OneShotOptions(sampling="uniform"), 0, 100, rng)
    assert len(uniform) == 1 and space.check_choices(uniform[0]) == uniform[0]


def test_supernet_training_interrupted_mid_epoch_continues_from_the_last_epoch(data, tmp_path, monkeypatch) -> None:
    """Killed during epoch 2, the job reruns from the end of epoch 1 and ends with exactly the
    weights of an uninterrupted run."""
    import torch

    from rankitect.data.dataset import Dataset
    from rankitect.searchers import oneshot
    from rankitect.space import make_space
    from rankitect.train.config import TrainConfig

    space = make_space("interactions", Dataset.open(str(data)).schema,
                       {k: v for k, v in INTERACTIONS.items() if k != "name"})
    kwargs = {"data_path": str(data), "space": space, "train_dates": ("2024-01-01",),
              "train": TrainConfig(batch_size=256, lr=3e-3), "opts": oneshot.OneShotOptions(supernet_epochs=2),
              "seed": 0}
    whole = oneshot.train_supernet(**kwargs, out_file=str(tmp_path / "whole.pt"))
    assert whole["steps"] == 12 and whole["resumed_at_epoch"] == 0

    real = oneshot.sampled_paths
    calls = {"n": 0}

    def dies_in_epoch_two(*args, **kw):
        calls["n"] += 1
        if calls["n"] == 9:  # 6 steps per epoch
            raise KeyboardInterrupt
        return real(*args, **kw)

    monkeypatch.setattr(oneshot, "sampled_paths", dies_in_epoch_two)
    with pytest.raises(KeyboardInterrupt):
        oneshot.train_supernet(**kwargs, out_file=str(tmp_path / "cut.pt"))
    assert (tmp_path / "cut.ckpt").is_file() and not (tmp_path / "cut.pt").exists()
    monkeypatch.setattr(oneshot, "sampled_paths", real)
    resumed = oneshot.train_supernet(**kwargs, out_file=str(tmp_path / "cut.pt"))
    assert resumed["resumed_at_epoch"] == 1 and resumed["steps"] == 12
    assert not (tmp_path / "cut.ckpt").exists()
    a, b = torch.load(tmp_path / "whole.pt"), torch.load(tmp_path / "cut.pt")
    assert a.keys() == b.keys() and all(torch.equal(a[k], b[k]) for k in a)
