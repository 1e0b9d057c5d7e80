"""Counts of the parse and validate work a search does: the config and the searcher's options
once per process, a trial's choices decoded once and its architecture validated once (in the
driver, which hands the validated architecture to the worker).

The trials run in this process through `InProcessPool`, a stand-in for the Ray pool: calls
made inside a Ray worker cannot be counted from here. Everything else is the real search.
"""

from __future__ import annotations

import contextlib
from collections import Counter
from pathlib import Path
from typing import Any

import pytest

import rankitect.experiment.run as run_module
import rankitect.searchers.base as searcher_base
from rankitect.arch.validate import ValidatedArchitecture
from rankitect.experiment.config import SearchConfig
from rankitect.experiment.executor import TrialPool
from rankitect.experiment.trial import TrialSpec, run_trial
from rankitect.space import get_space
from tests.helpers import tiny_synth


class InProcessPool(TrialPool):
    """The Ray pool's bookkeeping, with each trial run in this process when it is waited for."""

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(1, 1, 0.0, 0)

    def submit(self, job_id: Any, spec: TrialSpec) -> None:
        self._running[job_id] = (spec, None)

    def wait(self, timeout: float | None = None) -> list[tuple[Any, Any, int]]:
        job_id = next(iter(self._running))
        spec, _ = self._running.pop(job_id)
        return [(job_id, run_trial(spec), 1)]

    def shutdown(self) -> None:
        self._running.clear()


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("parse") / "ds", days=3, rows_per_day=600)


def _counting(monkeypatch, counts: Counter, owner: Any, name: str, key: str) -> None:
    real = getattr(owner, name)

    def counted(*args: Any, **kwargs: Any) -> Any:
        counts[key] += 1
        return real(*args, **kwargs)

    monkeypatch.setattr(owner, name, counted)


def test_a_search_parses_its_config_once_and_each_trial_once(data, tmp_path, monkeypatch) -> None:
    counts: Counter = Counter()
    monkeypatch.setattr(run_module, "ray_session", lambda address, dashboard=False: contextlib.nullcontext())
    monkeypatch.setattr(run_module, "cluster_slots", lambda cpus, gpus: 1)
    monkeypatch.setattr(run_module, "TrialPool", InProcessPool)
    _counting(monkeypatch, counts, SearchConfig, "from_dict", "config")
    _counting(monkeypatch, counts, searcher_base, "options_from_mapping", "searcher options")
    _counting(monkeypatch, counts, get_space("nasrec"), "decode", "decode")
    real_init = ValidatedArchitecture.__init__

    def validated(self: Any, *args: Any, **kwargs: Any) -> None:
        counts["validate"] += 1
        real_init(self, *args, **kwargs)

    monkeypatch.setattr(ValidatedArchitecture, "__init__", validated)
    trials = 3
    config = {"data": {"path": str(data), "train_dates": "first:1", "valid_dates": "2024-01-02",
                       "test_dates": "last:1"},
              "space": {"name": "nasrec", "blocks": 2}, "searcher": {"name": "random"},
              "budget": {"trials": trials}, "train": {"epochs": 1, "batch_size": 256}, "baselines": ["lr"]}
    result = run_module.search(config, tmp_path / "run", progress=False)

    assert [t["status"] for t in result.trials] == ["complete"] * trials
    assert result.baselines["lr"]["status"] == "complete"
    assert counts == {"config": 1, "searcher options": 1, "decode": trials, "validate": trials + 1}


def test_a_submission_is_parsed_once_on_the_server(data, monkeypatch) -> None:
    """`rankitect serve` checks a submission: one parse, the data path resolved on the parsed
    config (no to_dict / from_dict round trip), one plan."""
    import yaml

    from launcher.rpc.submission import check_submission

    counts: Counter = Counter()
    _counting(monkeypatch, counts, SearchConfig, "from_dict", "config")
    _counting(monkeypatch, counts, searcher_base, "options_from_mapping", "searcher options")
    config = {"data": {"path": "ds", "train_dates": "first:1", "valid_dates": "2024-01-02", "test_dates": "last:1"},
              "space": {"name": "nasrec"}, "searcher": {"name": "tpe"}, "baselines": ["dlrm"]}
    submission = check_submission(yaml.safe_dump(config), ["budget.trials=5"],
                                  lambda path, field: data.parent / path)
    assert submission.config["data"]["path"] == str(data) and submission.config["budget"]["trials"] == 5
    assert counts == {"config": 1, "searcher options": 1}
