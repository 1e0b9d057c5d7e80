"""A sampling search asks the space's members nearest to the baselines first (they do not count
against budget.trials), while every baseline still trains beside it as itself. Trials run in
this process (tests/test_parse_once.InProcessPool); the search is otherwise the real one."""

from __future__ import annotations

import contextlib
from pathlib import Path

import optuna
import pytest

import rankitect.experiment.run as run_module
from rankitect.data.dataset import Dataset
from rankitect.space import make_space
from tests.helpers import tiny_synth
from tests.test_parse_once import InProcessPool


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("seeds") / "ds", days=3, rows_per_day=600)


@pytest.fixture()
def in_process(monkeypatch) -> None:
    monkeypatch.setattr(run_module, "ray_session", lambda address, dashboard=False: contextlib.nullcontext())
    monkeypatch.setattr(run_module, "cluster_slots", lambda cpus, gpus: 1)
    monkeypatch.setattr(run_module, "TrialPool", InProcessPool)


def _config(data: Path, searcher: dict, trials: int) -> dict:
    return {"data": {"path": str(data), "train_dates": "first:1", "valid_dates": "2024-01-02", "test_dates": "last:1"},
            "space": {"name": "nasrec", "blocks": 3}, "searcher": searcher, "budget": {"trials": trials},
            "train": {"epochs": 1, "batch_size": 256}, "baselines": ["dlrm", "deepfm", "lr"]}


def test_baselines_in_the_space_are_the_first_trials(data, tmp_path, in_process) -> None:
    result = run_module.search(_config(data, {"name": "random"}, 2), tmp_path / "run", progress=False)
    space = make_space("nasrec", Dataset.open(str(data)).schema, {"blocks": 3})
    assert [t.get("baseline") for t in result.trials] == ["dlrm", "deepfm", None, None]  # 2 seeds + budget 2
    for trial in result.trials[:2]:
        assert trial["status"] == "complete"
        assert trial["arch"] == space.decode(space.baseline_choices(trial["baseline"])).to_dict()
    assert space.baseline_choices("lr") is None  # lr is not in nasrec: trained beside only
    assert sorted(result.baselines) == ["deepfm", "dlrm", "lr"]
    assert all(b["status"] == "complete" for b in result.baselines.values())

    again = run_module.search(_config(data, {"name": "random"}, 3), tmp_path / "run", progress=False)
    assert [t.get("baseline") for t in again.trials] == ["dlrm", "deepfm", None, None, None]  # not asked twice


def test_evolution_starts_its_population_from_them(data, tmp_path, in_process) -> None:
    config = _config(data, {"name": "evolution", "population": 2, "sample_size": 2}, 1)
    result = run_module.search(config, tmp_path / "evo", progress=False)
    study = optuna.load_study(study_name="rankitect", storage=f"sqlite:///{tmp_path / 'evo' / 'study.db'}")
    assert [t.get("baseline") for t in result.trials] == ["dlrm", "deepfm", None]
    assert study.trials[2].user_attrs["parent"] in (0, 1)  # a mutation of a baseline's member


NO_MEMBER = "no member"


@pytest.mark.parametrize("space_name, options, expected", [
    ("nasrec", {"blocks": 3}, {"dlrm": {"dot"}, "deepfm": {"fm"}, "autoint": {"attention"}, "lr": NO_MEMBER,
                               "dcnv2": NO_MEMBER}),
    ("interactions", {"layers": 3}, {"dlrm": {"dot", "mlp"}, "deepfm": {"fm", "mlp"}, "autoint": {"attention"},
                                     "dcnv2": {"dcn", "mlp"}, "lr": set()}),
])
def test_each_space_has_members_near_the_baselines(data, space_name: str, options: dict, expected: dict) -> None:
    """A member holds the baseline's signature blocks; a baseline the space cannot hold has none.
    lr's member of `interactions` is every layer skipped: fc and concat only."""
    space = make_space(space_name, Dataset.open(str(data)).schema, options)
    for name, blocks in expected.items():
        choices = space.baseline_choices(name)
        if blocks == NO_MEMBER:
            assert choices is None, name
            continue
        used = {node.block for node in space.decode(choices).nodes}
        assert blocks <= used and (blocks or used <= {"fc", "concat"}), (name, used)
    assert make_space("interactions", space.schema, {"layers": 3, "modules": ["mlp", "skip"]}).baseline_choices(
        "dcnv2") is None  # no dcn among the candidates
