"""`budget.keep_checkpoints`: a finished search keeps full checkpoints only for what it exports."""

from __future__ import annotations

import json
from pathlib import Path
from typing import Any

import pytest
import yaml

from launcher.cli import main
from rankitect.errors import ConfigError, ExportError
from rankitect.experiment.config import SearchConfig
from rankitect.experiment.events import SearchEvents
from rankitect.experiment.report import report_lines
from rankitect.experiment.results import ranked_trials
from rankitect.experiment.retention import SOURCE_FILE
from rankitect.experiment.run import SearchInterrupted, search
from rankitect.export.run_folder import NOT_KEPT_FILE, open_run
from tests.helpers import tiny_synth
from tests.test_search import make_config

SMALL_FILES = {"arch.json", "config.json", "metrics.json", "outcome.json"}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("keep") / "ds", days=3, rows_per_day=1200)


def _config(data: Path, trials: int, budget: dict[str, Any] | None = None, **sections: Any) -> dict[str, Any]:
    sections.setdefault("baselines", ["dlrm"])
    return make_config(data, "random", trials=trials, budget={"trials": trials, **(budget or {})}, **sections)


def _with_checkpoint(run: Path) -> set[int]:
    return {int(p.parent.name) for p in (run / "trials").glob("*/checkpoint.pt")}


def _bytes(folder: Path) -> int:
    return sum(p.stat().st_size for p in folder.rglob("*") if p.is_file())


def _check_best(run: Path, number: int) -> None:
    """RUN/best/ is trial `number`'s folder, with a complete checkpoint, and exports."""
    best = run / "best"
    assert json.loads((best / SOURCE_FILE).read_text()) == {"trial": number}
    trial = run / "trials" / f"{number:04d}"
    assert (best / "checkpoint.pt").read_bytes() == (trial / "checkpoint.pt").read_bytes()
    assert (best / "metrics.json").read_text() == (trial / "metrics.json").read_text()
    assert open_run(run).folder == best
    assert not (run / "best.tmp").exists() and not (run / "best.old").exists()


def _check_discarded(run: Path, folders: list[Path], saved: dict[str, Any]) -> None:
    """Folders without a checkpoint keep the small files only: each a small share of a checkpoint."""
    checkpoint_bytes = (run / "best" / "checkpoint.pt").stat().st_size
    for folder in folders:
        names = {p.name for p in folder.iterdir()}
        assert "checkpoint.pt" not in names and SMALL_FILES <= names and NOT_KEPT_FILE in names, folder
        assert _bytes(folder) < min(1024**2, checkpoint_bytes), (folder, _bytes(folder), checkpoint_bytes)
    for trial in saved["trials"]:
        assert trial["checkpoint"] == (run / "trials" / f"{trial['number']:04d}" / "checkpoint.pt").is_file()


def test_best_keeps_the_best_trials_checkpoint_only(ray_cluster, data, tmp_path, capsys) -> None:
    run = tmp_path / "run"
    result = search(_config(data, trials=4, final={"seeds": 2}), run, progress=False)
    saved = json.loads((run / "result.json").read_text())
    best = saved["best"]["number"]  # the final seeds' pick among the 3 best single runs
    top3 = [t["number"] for t in ranked_trials(saved["trials"])[:3]]
    assert best == result.final["best"]["trial"] and best in top3
    assert _with_checkpoint(run) == {best} and saved["best"]["checkpoint"] is True
    _check_best(run, best)
    numbers = [t["number"] for t in saved["trials"]]
    assert len(numbers) == 5 and saved["trials"][0]["baseline"] == "dlrm"  # dlrm's member of nasrec first
    others = [run / "trials" / f"{n:04d}" for n in numbers if n != best]
    finals = sorted((run / "final").glob("*/seed*"))
    assert len(finals) == 8  # 3 candidates and dlrm, 2 seeds each: retrained from scratch, nothing kept
    _check_discarded(run, [*others, run / "baselines" / "dlrm", *finals], saved)
    assert saved["baselines"]["dlrm"]["checkpoint"] is False and result.final["best"]["seeds"] == 2
    assert saved["checkpoints"]["keep_checkpoints"] == "best"
    assert any(line.startswith(f"checkpoints: kept for #{best}, not kept for 4 trials") for line in report_lines(saved))

    discarded = others[0]
    with pytest.raises(ExportError, match=r"budget.keep_checkpoints=best .*budget.keep_checkpoints: all"):
        open_run(discarded)
    assert main(["export", "--run", str(discarded), "--out", str(tmp_path / "export")]) == 2
    err = capsys.readouterr().err
    assert "did not keep it (budget.keep_checkpoints=best" in err and str(run.resolve()) in err
    assert "Traceback" not in err and not (tmp_path / "export").exists()


def test_top_k_keeps_the_k_best(ray_cluster, data, tmp_path) -> None:
    run = tmp_path / "run"
    search(_config(data, trials=4, budget={"keep_checkpoints": "top_k", "keep_top_k": 2}, baselines=[]), run,
           progress=False)
    saved = json.loads((run / "result.json").read_text())
    top = [t["number"] for t in ranked_trials(saved["trials"])[:2]]
    assert len(top) == 2 and _with_checkpoint(run) == set(top)
    _check_best(run, top[0])
    _check_discarded(run, [run / "trials" / f"{n:04d}" for n in range(4) if n not in top], saved)
    assert saved["checkpoints"] == {"keep_checkpoints": "top_k", "keep_top_k": 2,
                                    "kept": "the checkpoints of the 2 best trials only (budget.keep_top_k)"}


def test_all_keeps_everything_and_a_changed_policy_applies_from_then_on(ray_cluster, data, tmp_path) -> None:
    run = tmp_path / "run"
    config = _config(data, trials=3, budget={"keep_checkpoints": "all"})
    search(config, run, progress=False)
    saved = json.loads((run / "result.json").read_text())
    # 3 trials and dlrm's member of the space, asked first (trial 0)
    assert _with_checkpoint(run) == {0, 1, 2, 3} and (run / "baselines" / "dlrm" / "checkpoint.pt").is_file()
    assert all(t["checkpoint"] for t in saved["trials"]) and saved["baselines"]["dlrm"]["checkpoint"]
    assert not list(run.rglob(NOT_KEPT_FILE))
    _check_best(run, saved["best"]["number"])
    # Extended with `best`: the new driver applies it to the trials told before, and the baseline.
    config["budget"] = {"trials": 4, "keep_checkpoints": "best"}
    result = search(config, run, progress=False)
    assert len(result.trials) == 5 and _with_checkpoint(run) == {result.best["number"]}
    _check_best(run, result.best["number"])
    saved = json.loads((run / "result.json").read_text())
    others = [run / "trials" / f"{n:04d}" for n in range(5) if n != result.best["number"]]
    _check_discarded(run, [*others, run / "baselines" / "dlrm"], saved)


class _StopAfter(SearchEvents):
    """Ctrl-C (as the driver sees it) right after the `count`-th trial is told."""

    def __init__(self, count: int) -> None:
        self.count = count

    def trial(self, trial: dict[str, Any], done: int, total: int) -> None:
        if done >= self.count:
            raise KeyboardInterrupt


def test_an_interrupted_search_keeps_best_and_continues(ray_cluster, data, tmp_path) -> None:
    run = tmp_path / "run"
    config = _config(data, trials=4, baselines=[], searcher={"concurrency": 1})
    with pytest.raises(SearchInterrupted):
        search(config, run, progress=False, events=_StopAfter(2))
    saved = json.loads((run / "result.json").read_text())
    told = [t for t in saved["trials"] if t["status"] == "complete"]
    assert len(told) == 2
    best = ranked_trials(told)[0]["number"]
    assert _with_checkpoint(run) & {t["number"] for t in told} == {best}
    _check_best(run, best)  # best/ follows the search as it goes: exportable while interrupted
    # A driver killed while swapping best/ in: best/ gone, best.old/ and a half best.tmp/ left.
    (run / "best").rename(run / "best.old")
    (run / "best.tmp").mkdir()
    (run / "best.tmp" / "arch.json").write_text("{}")
    result = search(config, run, progress=False)
    assert [t["status"] for t in result.trials] == ["complete"] * 4
    assert _with_checkpoint(run) == {result.best["number"]}
    _check_best(run, result.best["number"])
    saved = json.loads((run / "result.json").read_text())
    _check_discarded(run, [run / "trials" / f"{n:04d}" for n in range(4) if n != result.best["number"]], saved)


@pytest.mark.parametrize("budget, message", [
    ({"keep_checkpoints": "some"}, "budget.keep_checkpoints: must be one of ('best', 'top_k', 'all'), got 'some'"),
    ({"keep_checkpoints": "top_k", "keep_top_k": 0}, "budget.keep_top_k: must be >= 1, got 0"),
    ({"keep_checkpoints": "top_k", "keep_top_k": "three"}, "budget.keep_top_k: must be int, got 'three'"),
    ({"keep_top_k": 2}, "budget.keep_top_k: must be set only with budget.keep_checkpoints: top_k"),
    ({"keep_checkpoints": True}, "budget.keep_checkpoints: must be str, got True"),
])
def test_bad_values_are_refused_naming_the_key(data, tmp_path, capsys, budget: dict[str, Any],
                                               message: str) -> None:
    config = _config(data, trials=1, budget=budget)
    with pytest.raises(ConfigError) as err:
        SearchConfig.from_dict(config)
    assert message in str(err.value)
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(config))
    assert main(["search", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err_text = capsys.readouterr().err
    assert message in err_text and "Traceback" not in err_text
    assert not (tmp_path / "run").exists()


def test_defaults() -> None:
    raw = {"data": {"path": "x", "train_dates": "first:1", "valid_dates": "last:1", "test_dates": "last:1"},
           "space": "nasrec", "searcher": "random"}
    budget = SearchConfig.from_dict(raw).budget
    assert (budget.keep_checkpoints, budget.keep_top_k, budget.top_k) == ("best", None, 3)
    top = SearchConfig.from_dict({**raw, "budget": {"keep_checkpoints": "top_k"}}).budget
    assert top.top_k == 3 and SearchConfig.from_dict({**raw, "budget": {"keep_checkpoints": "top_k",
                                                                         "keep_top_k": 5}}).budget.top_k == 5
