"""`rankitect search` end to end on a real Ray cluster (one per test session), real SQLite study."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
import time
from pathlib import Path
from typing import Any

import optuna
import pytest
import yaml

from launcher.cli import main
from rankitect.arch import Architecture, Node
from rankitect.data.dataset import Dataset
from rankitect.experiment.results import ranked_trials
from rankitect.experiment.run import search
from rankitect.space import Choice, SearchSpace, register_space, space_names, unregister_space
from tests.conftest import ROOT
from tests.helpers import tiny_synth

RANKITECT = str(Path(sys.executable).parent / "rankitect")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("search") / "ds", days=3, rows_per_day=1200)


def make_config(data: Path, searcher_name: str = "random", trials: int = 3, **sections: Any) -> dict[str, Any]:
    """A small search config; `sections` update (space: replace) the defaults."""
    config = {
        "data": {"path": str(data), "train_dates": "first:1", "valid_dates": "2024-01-02",
                 "test_dates": "last:1"},
        "space": {"name": "nasrec", "blocks": 2},
        "searcher": {"name": searcher_name},
        "budget": {"trials": trials},
        "train": {"epochs": 1, "batch_size": 256},
        "baselines": ["lr"],
    }
    for key, value in sections.items():
        merge = isinstance(value, dict) and key in config and key != "space"
        config[key] = {**config[key], **value} if merge else value
    return config


def _choices(result) -> list[dict[str, Any]]:
    return [t["choices"] for t in result.trials]


@pytest.mark.parametrize("searcher", ["random", "tpe", "nsga2", "evolution"])
def test_every_searcher_end_to_end(ray_cluster, data, tmp_path, searcher: str) -> None:
    result = search(make_config(data, searcher, trials=3), tmp_path / "run", progress=False)
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    assert [t["number"] for t in saved["trials"]] == [0, 1, 2]
    for trial in saved["trials"]:
        assert trial["status"] == "complete", trial.get("error")
        assert {"number", "arch", "metrics", "test_metrics", "status", "seconds"} <= set(trial)
        assert trial["metrics"]["eval_dates"] == ["2024-01-02"]
        assert trial["test_metrics"]["eval_dates"] == ["2024-01-03"]
        for key in ("logloss", "ne", "auc", "calibration", "flops_per_example", "params", "latency"):
            assert key in trial["metrics"]
        Architecture.from_dict(trial["arch"])
    assert saved["best"]["number"] == min(saved["trials"], key=lambda t: t["metrics"]["ne"])["number"]
    assert {t.get("number", t.get("baseline")) for t in saved["pareto"]} <= {0, 1, 2, "lr"} and saved["pareto"]
    assert saved["baselines"]["lr"]["test_metrics"]["eval_dates"] == ["2024-01-03"]
    best = tmp_path / "run" / "best"
    assert {"checkpoint.pt", "metrics.json", "arch.json", "config.json"} <= {p.name for p in best.iterdir()}
    assert (tmp_path / "run" / "pareto.png").stat().st_size > 1000
    study = optuna.load_study(study_name="rankitect", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    assert result.best["number"] == saved["best"]["number"]
    # The study: the 3 trials, then lr (outside the space, trained beside) for optuna-dashboard.
    assert [t.user_attrs.get("baseline") for t in study.trials] == [None, None, None, "lr"]
    assert study.trials[3].values == pytest.approx(saved["baselines"]["lr"]["values"])


def test_same_config_same_architectures_and_metrics(ray_cluster, data, tmp_path) -> None:
    config = make_config(data, "tpe", trials=4, searcher={"n_startup_trials": 2}, baselines=[])
    a = search(config, tmp_path / "a", progress=False)
    b = search(config, tmp_path / "b", progress=False)
    assert _choices(a) == _choices(b)
    assert [t["metrics"]["ne"] for t in a.trials] == pytest.approx([t["metrics"]["ne"] for t in b.trials])


def test_larger_budget_continues_without_retraining(ray_cluster, data, tmp_path) -> None:
    config = make_config(data, "random", trials=2, baselines=[])
    search(config, tmp_path / "run", progress=False)
    before = {p: p.read_text() for p in (tmp_path / "run" / "trials").glob("*/worker.json")}
    config["budget"]["trials"] = 4
    result = search(config, tmp_path / "run", progress=False)
    assert [t["status"] for t in result.trials] == ["complete"] * 4
    assert all(p.read_text() == text for p, text in before.items())  # not trained again


def test_another_config_in_the_same_run_folder_is_refused(ray_cluster, data, tmp_path) -> None:
    search(make_config(data, "random", trials=1, baselines=[]), tmp_path / "run", progress=False)
    with pytest.raises(Exception, match="holds a search with another 'searcher'"):
        search(make_config(data, "tpe", trials=1, baselines=[]), tmp_path / "run", progress=False)


def test_max_flops_rejects_before_training(ray_cluster, data, tmp_path) -> None:
    config = make_config(data, "random", trials=3, baselines=[], budget={"trials": 3, "max_flops": 2500})
    result = search(config, tmp_path / "run", progress=False)
    rejected = [t for t in result.trials if t.get("rejected")]
    trained = [t for t in result.trials if not t.get("rejected")]
    assert len(trained) == 3 and rejected, "a space this wide proposes some candidates over 2,500 FLOPs"
    assert all(t["status"] == "pruned" and "budget.max_flops" in t["error"] for t in rejected)
    assert all(t["metrics"]["flops_per_example"] <= 2500 for t in trained)
    assert not any((tmp_path / "run" / "trials" / f"{t['number']:04d}").exists() for t in rejected)


def test_max_params_rejects_before_training(ray_cluster, data, tmp_path) -> None:
    import random

    from rankitect.cost import cost_of
    from rankitect.data.dataset import Dataset
    from search_spaces.nasrec import NasRecOptions, NasRecSpace

    space = NasRecSpace(Dataset.open(str(data)).schema, NasRecOptions(blocks=2))
    rng = random.Random(0)
    params = sorted(cost_of(space.decode(space.sample(rng)), space.schema).params for _ in range(40))
    limit = params[len(params) // 2]  # about half the space is over it
    config = make_config(data, "random", trials=3, baselines=[], budget={"trials": 3, "max_params": limit})
    result = search(config, tmp_path / "run", progress=False)
    rejected = [t for t in result.trials if t.get("rejected")]
    trained = [t for t in result.trials if not t.get("rejected")]
    assert len(trained) == 3 and all(t["metrics"]["params"] <= limit for t in trained)
    assert rejected and all(t["status"] == "pruned" and "budget.max_params" in t["error"] for t in rejected)


def test_pruner_records_learning_curves(ray_cluster, data, tmp_path) -> None:
    config = make_config(data, "random", trials=6, baselines=[], objectives=["ne"],
                         searcher={"pruner": "median"}, train={"epochs": 3, "batch_size": 256})
    result = search(config, tmp_path / "run", progress=False)
    study = optuna.load_study(study_name="rankitect", storage=f"sqlite:///{tmp_path / 'run' / 'study.db'}")
    for trial in study.trials:
        epochs = trial.user_attrs["metrics"]["epochs_trained"]
        assert sorted(trial.intermediate_values) == list(range(1, epochs + 1))
    assert {t["status"] for t in result.trials} <= {"complete", "pruned"}


class TinySpace(SearchSpace):
    """A space defined in a test file: one FC width."""

    name = "test_tiny"

    def choices(self):
        return [Choice("width", (4, 8))]

    def decode(self, c):
        return Architecture((Node("x", "concat", ("dense", "sparse")), Node("h", "fc", ("x",), {"width": c["width"]}),
                             Node("logit", "fc", ("h",), {"width": 1, "activation": "none"})), name="tiny")


def test_space_defined_in_a_test_file_registers_and_runs(ray_cluster, data, tmp_path, capsys) -> None:
    register_space(TinySpace)
    try:
        assert "test_tiny" in space_names()
        assert main(["spaces"]) == 0 and "test_tiny" in capsys.readouterr().out
        result = search(make_config(data, "random", trials=2, space={"name": "test_tiny"}, baselines=[]),
                        tmp_path / "run", progress=False)
        assert {t["choices"]["width"] for t in result.trials} <= {4, 8}
        assert all(t["status"] == "complete" for t in result.trials)
    finally:
        unregister_space("test_tiny")


def test_final_seeds_report_mean_and_std(ray_cluster, data, tmp_path) -> None:
    result = search(make_config(data, "random", trials=3, final={"seeds": 2, "top_k": 2}), tmp_path / "run",
                    progress=False)
    ranked = ranked_trials(result.trials)[:2]  # the two best single runs are the candidates
    candidates = {f"trial{t['number']:04d}": t["number"] for t in ranked}
    assert set(result.final) == {"best", "lr", *candidates}
    means = {name: result.final[name]["valid_ne_mean"] for name in candidates}
    pick = min(means, key=means.get)
    assert result.final["best"]["trial"] == candidates[pick] == result.best["number"]  # the best mean wins
    assert result.final["best"]["seeds"] == 2 and result.final["best"]["test_ne_std"] is not None
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    for entry, summary in ((saved["best"], result.final["best"]), (saved["baselines"]["lr"], result.final["lr"])):
        assert entry["test_metrics"]["seeds"] == 2  # best's and each baseline's test NE: the mean over seeds
        assert entry["test_metrics"]["ne"] == pytest.approx(summary["test_ne_mean"], rel=1e-12)
        assert entry["test_metrics"]["single_run_ne"] != entry["test_metrics"]["ne"]


def _write_config(tmp_path: Path, config: dict) -> Path:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _driver(config_path: Path, out: Path, address: str) -> subprocess.Popen:
    """`rankitect search` in a child process started as a background job is (`nohup ... &`):
    with SIGINT ignored, which the CLI takes back so that SIGINT still stops it."""
    return subprocess.Popen([RANKITECT, "search", "--config", str(config_path), "--out", str(out),
                             "--address", address], cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                            text=True, preexec_fn=lambda: signal.signal(signal.SIGINT, signal.SIG_IGN))


def _complete_trials(out: Path) -> int:
    db = out / "study.db"
    if not db.exists():
        return 0
    try:
        study = optuna.load_study(study_name="rankitect", storage=f"sqlite:///{db}")
    except Exception:  # noqa: BLE001 - the driver may still be creating the study
        return 0
    return sum(t.state == optuna.trial.TrialState.COMPLETE for t in study.trials)


def _wait_for(condition, seconds: float = 120) -> None:
    deadline = time.monotonic() + seconds
    while not condition():
        if time.monotonic() > deadline:
            raise AssertionError("timed out")
        time.sleep(0.1)


def _outcomes(out: Path) -> dict[str, str]:
    """trials/NNNN -> outcome.json text, for every trial whose worker finished."""
    return {p.parent.name: p.read_text() for p in (out / "trials").glob("*/outcome.json")}


def test_sigkill_of_the_driver_then_the_same_command_continues(ray_cluster, data, tmp_path, trial_gate) -> None:
    """Killed with trial 2 held: trials 0 and 1 are told, trial 3 finished but waits untold
    behind trial 2. Both finished trials are kept; trial 2 runs again, trial 4 for the first time."""
    config = make_config(data, "random", trials=5, baselines=[])
    path = _write_config(tmp_path, config)
    out = tmp_path / "run"
    trial_gate.hold(first=2, last=2)
    proc = _driver(path, out, ray_cluster)
    trial_gate.wait_started("trial 2", proc=proc, also=lambda: (out / "trials" / "0003" / "outcome.json").is_file()
                            and _complete_trials(out) == 2)
    proc.send_signal(signal.SIGKILL)
    proc.wait()
    trial_gate.wait_stopped("trial 2")  # the driver's end took its held worker with it
    finished_before = _outcomes(out)
    assert sorted(finished_before) == ["0000", "0001", "0003"] and _complete_trials(out) == 2
    trial_gate.release()
    assert main(["search", "--config", str(path), "--out", str(out), "--address", ray_cluster]) == 0
    result = json.loads((out / "result.json").read_text())
    assert [t["number"] for t in result["trials"]] == [0, 1, 2, 3, 4]
    assert all(t["status"] == "complete" for t in result["trials"])
    for name, text in finished_before.items():  # finished trials were kept (told or not), not trained again
        assert (out / "trials" / name / "outcome.json").read_text() == text


def test_a_worker_killed_mid_trial_is_retried_under_the_same_number(ray_cluster, data, tmp_path, trial_gate) -> None:
    config = make_config(data, "random", trials=2, baselines=[], train={"epochs": 1, "batch_size": 256},
                         searcher={"concurrency": 1})
    path = _write_config(tmp_path, config)
    out = tmp_path / "run"
    trial_gate.hold(first=0, last=0)
    proc = _driver(path, out, ray_cluster)
    trial_gate.wait_started("trial 0", proc=proc)
    killed = trial_gate.pid("trial 0")
    os.kill(killed, signal.SIGKILL)
    trial_gate.wait_stopped("trial 0")
    trial_gate.release()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    result = json.loads((out / "result.json").read_text())
    first = result["trials"][0]
    assert first["number"] == 0 and first["status"] == "complete" and first["attempts"] == 2
    assert json.loads((out / "trials" / "0000" / "worker.json").read_text())["pid"] != killed  # the retry's
    assert [t["number"] for t in result["trials"]] == [0, 1]


def test_ctrl_c_stops_and_the_report_command_reads_the_run(ray_cluster, data, tmp_path, capsys, trial_gate) -> None:
    """Ctrl-C with trial 0 told and trials 1 and 2 held: exit 130, the run holds trial 0 and
    the baseline, `report` reads it, and the same command finishes it."""
    config = make_config(data, "random", trials=4, baselines=["lr"], train={"epochs": 1, "batch_size": 256})
    path = _write_config(tmp_path, config)
    out = tmp_path / "run"
    trial_gate.hold(first=1)
    proc = _driver(path, out, ray_cluster)
    trial_gate.wait_started("trial 1", "trial 2", proc=proc, also=lambda: _complete_trials(out) == 1)
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=120)
    assert proc.returncode == 130 and "run the same command again to continue" in err
    assert "Traceback" not in err
    trial_gate.wait_stopped("trial 1", "trial 2")  # held trials do not outlive the interrupted driver
    saved = json.loads((out / "result.json").read_text())
    assert [t["number"] for t in saved["trials"]] == [0] and list(saved["baselines"]) == ["lr"]  # lr freed a slot
    kept = _outcomes(out)
    assert main(["report", str(out)]) == 0
    text = capsys.readouterr().out
    assert "valid NE" in text and "front #" in text
    trial_gate.release()
    assert main(["search", "--config", str(path), "--out", str(out), "--address", ray_cluster]) == 0
    assert [t["number"] for t in json.loads((out / "result.json").read_text())["trials"]] == [0, 1, 2, 3]
    assert _outcomes(out)["0000"] == kept["0000"]  # told before the Ctrl-C: not trained again


def test_an_architecture_json_is_a_baseline(ray_cluster, data, tmp_path) -> None:
    production = ROOT / "examples" / "archs" / "dlrm_cross.json"
    result = search(make_config(data, "random", trials=1, baselines=[str(production)]), tmp_path / "run",
                    progress=False)
    entry = result.baselines["dlrm_cross"]
    assert entry["status"] == "complete" and entry["arch"] == Architecture.load(production).to_dict()
    assert entry["test_metrics"]["eval_dates"] == ["2024-01-03"]


def test_resume_with_a_half_asked_trial_behind_an_interrupted_one(ray_cluster, data, tmp_path) -> None:
    """A driver killed while drawing trial 3's choices, with trial 2 still running: trial 3's
    missing choices are drawn on resume, trial 2 runs again, and the search finishes."""
    from rankitect.experiment.study import open_study
    from rankitect.searchers import make_searcher
    from rankitect.searchers.base import searcher_options
    from rankitect.space import make_space

    config = make_config(data, "random", trials=2, baselines=[])
    search(config, tmp_path / "run", progress=False)
    schema = Dataset.open(str(data)).schema
    space = make_space("nasrec", schema, {"blocks": 2})
    directions = ["minimize", "minimize"]
    searcher = make_searcher("random", searcher_options("random", {}, directions), space, directions, 0,
                             open_study(f"sqlite:///{tmp_path / 'run' / 'study.db'}", directions))
    interrupted = searcher.ask()
    half = searcher.study.ask()  # trial 3: one choice drawn, then the driver died
    first_choice = space.choices()[0]
    drawn = half.suggest_categorical(first_choice.name, list(first_choice.options))
    config["budget"]["trials"] = 4
    result = search(config, tmp_path / "run", progress=False)
    assert [(t["number"], t["status"]) for t in result.trials] == [(i, "complete") for i in range(4)]
    assert result.trials[2]["choices"] == interrupted.choices
    assert result.trials[3]["choices"][first_choice.name] == drawn
    assert space.check_choices(result.trials[3]["choices"]) == result.trials[3]["choices"]
