"""`rankitect dashboard RUN` through optuna-dashboard's own HTTP API, on the study of a real search."""

from __future__ import annotations

import json
import subprocess
import sys
import urllib.request
from pathlib import Path

import pytest

from launcher.cli import main
from rankitect.experiment.run import search
from tests.helpers import tiny_synth

RANKITECT = str(Path(sys.executable).parent / "rankitect")
URL_WAIT_S = 120


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("dash") / "ds", days=3, rows_per_day=600)


def _config(data: Path, objectives: list[str]) -> dict:
    return {"data": {"path": str(data), "train_dates": "first:1", "valid_dates": "2024-01-02", "test_dates": "last:1"},
            "space": {"name": "nasrec", "blocks": 1}, "searcher": {"name": "random"}, "budget": {"trials": 2},
            "train": {"epochs": 2, "batch_size": 256}, "baselines": ["lr", "deepfm"], "objectives": objectives}


def _get(url: str) -> dict:
    with urllib.request.urlopen(url, timeout=30) as reply:
        return json.loads(reply.read())


def _dashboard(run: Path) -> tuple[subprocess.Popen, str]:
    proc = subprocess.Popen([RANKITECT, "dashboard", str(run), "--port", "0"], stdout=subprocess.PIPE, text=True)
    line = proc.stdout.readline()  # blocks until the server listens (or the process ends)
    assert "http://127.0.0.1:" in line, line
    return proc, line.split("http://", 1)[1].split("/dashboard/", 1)[0]


@pytest.mark.parametrize("objectives", [["ne"], ["ne", "flops"]])
def test_the_dashboard_shows_metric_names_curves_and_baselines(ray_cluster, data, tmp_path, objectives) -> None:
    result = search(_config(data, objectives), tmp_path / "run", progress=False)
    proc, address = _dashboard(tmp_path / "run")
    try:
        (summary,) = _get(f"http://{address}/api/studies")["study_summaries"]
        study = _get(f"http://{address}/api/studies/{summary['study_id']}")
    finally:
        proc.terminate()
        proc.wait(30)
    assert study["objective_names"] == objectives
    assert len(study["directions"]) == len(objectives)
    attrs_of = {t["number"]: {a["key"]: a["value"] for a in t["user_attrs"]} for t in study["trials"]}
    beside = [t for t in study["trials"] if attrs_of[t["number"]].get("beside_search")]
    complete = [t for t in study["trials"] if t["state"] == "Complete" and t not in beside]
    assert len(complete) == len(result.trials) >= 2
    by_number = {t["number"]: t for t in complete}
    for trial in result.trials:
        shown = by_number[trial["number"]]
        assert shown["values"] == pytest.approx(trial["values"])
        curve = {p["step"]: p["value"] for p in shown["intermediate_values"]}
        attrs = {a["key"]: a["value"] for a in shown["user_attrs"]}
        if len(objectives) == 1:  # Optuna keeps intermediate values of single-objective studies only
            assert sorted(curve) == [1, 2]  # validation NE after epochs 1 and 2
            assert trial["metrics"]["ne"] in [pytest.approx(v) for v in curve.values()]  # the epoch kept
        else:
            assert curve == {} and len(json.loads(attrs["intermediate"]) if isinstance(attrs["intermediate"], str)
                                       else attrs["intermediate"]) == 2
    marked = [a["value"] for t in complete for a in t["user_attrs"] if a["key"] == "baseline"]
    assert marked == ["deepfm"]  # the baseline nasrec expresses, a trial of the search
    # lr, outside the space, is trained beside the search and recorded in the study once it is done.
    (lr,) = beside
    assert attrs_of[lr["number"]]["baseline"] == "lr" and lr["state"] == "Complete" and lr["params"] == []
    assert lr["values"] == pytest.approx(result.baselines["lr"]["values"])
    assert lr["number"] == max(t["number"] for t in study["trials"])
    assert set(result.baselines) == {"lr", "deepfm"}


def test_a_folder_without_a_study_exits_2_naming_it(tmp_path, capsys) -> None:
    assert main(["dashboard", str(tmp_path)]) == 2
    err = capsys.readouterr().err
    assert f"run_dir: no study.db in {str(tmp_path)!r}" in err and "Traceback" not in err
    (tmp_path / "study.db").write_bytes(b"")
    assert main(["dashboard", str(tmp_path), "--port", "70000"]) == 2
    assert "--port: must be in 0..65535, got 70000" in capsys.readouterr().err
