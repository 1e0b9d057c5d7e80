"""One conformance suite that every registered searcher passes (real Optuna SQLite storage).

Objective values here come from a fixed function of the choices, so that the searcher
contract is tested on its own; training is exercised by the end-to-end search tests.
"""

from __future__ import annotations

import math
import random
from typing import Any

import optuna
import pytest

from rankitect.arch import Architecture, Node
from rankitect.errors import ConfigError
from rankitect.experiment.study import STUDY_NAME, open_study, record_baselines
from rankitect.searchers import make_searcher, searcher_names
from rankitect.searchers.base import searcher_class, searcher_options
from rankitect.searchers.planned import PlannedSearcher, Proposal
from rankitect.space import Choice, SearchSpace
from tests.helpers import toy_schema

SEARCHERS = searcher_names()


class GridSpace(SearchSpace):
    """Three choices, one of them conditional."""

    name = "test_grid"

    def choices(self):
        return [Choice("width", (4, 8, 16, 32)), Choice("inter", ("dot", "fm", "none")),
                Choice("rank", (0, 2, 4), active=lambda c: c.get("inter") == "dot")]

    def decode(self, c: dict[str, Any]) -> Architecture:
        return Architecture((Node("h", "fc", ("dense",), {"width": c["width"]}),
                             Node("logit", "fc", ("h",), {"width": 1, "activation": "none"})))


def objective(choices: dict[str, Any]) -> tuple[float, float]:
    """(an NE-like loss, a FLOPs-like cost) with a clear optimum."""
    ne = 0.9 - 0.002 * choices["width"] - (0.05 if choices["inter"] == "dot" else 0.0) + 0.01 * choices.get("rank", 0)
    return ne, float(choices["width"] * (3 if choices["inter"] == "dot" else 1))


def _searcher(name: str, storage: str, directions=("minimize",), seed: int = 3, **options):
    """Searcher `name`; a planned one (oneshot, dnas, proxy) gets a plan of 64 proposals drawn
    from its seed in place of its planning phase, which the end-to-end tests run for real."""
    space = GridSpace(toy_schema())
    searcher = make_searcher(name, searcher_options(name, options, list(directions)), space, list(directions), seed,
                             open_study(storage, list(directions)))
    if isinstance(searcher, PlannedSearcher):
        rng = random.Random(seed)
        searcher.use_plan([Proposal(space.sample(rng), {"rank": i}) for i in range(64)], {})
    return searcher


def _drive(searcher, n: int, directions=("minimize",)) -> list[dict[str, Any]]:
    seen = []
    for _ in range(n):
        cand = searcher.ask()
        values = objective(cand.choices)[: len(directions)]
        searcher.tell(cand.number, list(values))
        seen.append(cand.choices)
    return seen


def _db(tmp_path, name: str) -> str:
    return f"sqlite:///{tmp_path / name}.db"


@pytest.mark.parametrize("name", SEARCHERS)
def test_same_seed_same_sequence_of_architectures(name: str, tmp_path) -> None:
    a = _drive(_searcher(name, _db(tmp_path, "a")), 16)
    b = _drive(_searcher(name, _db(tmp_path, "b")), 16)
    c = _drive(_searcher(name, _db(tmp_path, "c"), seed=4), 16)
    assert a == b
    assert a != c


@pytest.mark.parametrize("name", SEARCHERS)
def test_failed_and_nan_trials_are_recorded_and_the_search_goes_on(name: str, tmp_path) -> None:
    searcher = _searcher(name, _db(tmp_path, "f"))
    first, second, third = searcher.ask(), searcher.ask(), searcher.ask()
    searcher.tell(first.number, None, "failed", attrs={"error": "worker exploded"})
    searcher.tell(second.number, [math.nan])
    searcher.tell(third.number, list(objective(third.choices)[:1]))
    _drive(searcher, 12)
    states = {t.number: t.state for t in searcher.told()}
    assert states[first.number] == states[second.number] == "failed"
    assert states[third.number] == "complete" and len(states) == 15
    stored = searcher.study.trials[first.number]
    assert stored.state == optuna.trial.TrialState.FAIL and stored.user_attrs["error"] == "worker exploded"


@pytest.mark.parametrize("name", SEARCHERS)
def test_restore_from_storage_continues_as_if_never_stopped(name: str, tmp_path) -> None:
    straight = _drive(_searcher(name, _db(tmp_path, "straight")), 20)
    storage = _db(tmp_path, "crash")
    before = _searcher(name, storage)
    done = _drive(before, 14)
    lost = before.ask()  # the driver dies before telling this one
    restored = _searcher(name, storage)
    pending = restored.pending()
    assert [(p.number, p.choices) for p in pending] == [(lost.number, lost.choices)]
    restored.tell(lost.number, list(objective(lost.choices)[:1]))
    after = _drive(restored, 5)
    assert done + [lost.choices] + after == straight
    assert [t.number for t in restored.told()] == list(range(20))


@pytest.mark.parametrize("name", SEARCHERS)
def test_a_baseline_recorded_beside_the_search_changes_no_proposal(name: str, tmp_path) -> None:
    """The study also holds the baselines trained beside a search (for optuna-dashboard); such a
    trial takes a number but is no trial of the search: not told, not sampled from."""
    straight = _drive(_searcher(name, _db(tmp_path, "straight")), 16)
    storage = _db(tmp_path, "beside")
    first = _drive(_searcher(name, storage), 8)
    added = record_baselines(optuna.load_study(study_name=STUDY_NAME, storage=storage),
                             {"lr": {"status": "complete", "values": [0.95], "metrics": {"ne": 0.95}}})
    assert added == ["lr"]
    continued = _searcher(name, storage)
    assert first + _drive(continued, 8) == straight
    assert [t.number for t in continued.told()] == [*range(8), *range(9, 17)]
    stored = continued.study.trials[8]
    assert stored.user_attrs["baseline"] == "lr" and stored.values == [0.95] and stored.params == {}
    assert record_baselines(continued.study, {"lr": {"status": "complete", "values": [0.95]}}) == []  # once


class _Killed(BaseException):
    """The driver's death at one storage write (nothing after it runs, nothing catches it)."""


@pytest.mark.parametrize("name", SEARCHERS)
def test_a_driver_killed_while_a_trial_is_asked_resumes_its_choices(name: str, tmp_path, monkeypatch) -> None:
    """Killed at each write the asking of trial 6 makes to the storage (the trial, its
    attributes, each choice, one at a time): the resumed search trains trial 6 with the choices
    an uninterrupted search gave it (once its choices are stored), and goes on as if never stopped."""
    straight = _drive(_searcher(name, _db(tmp_path, "straight")), 9)
    storage_class = optuna.storages.RDBStorage
    writes = [w for w in ("create_new_trial", "set_trial_param", "set_trial_system_attr", "set_trial_user_attr",
                          "set_trial_state_values") if hasattr(storage_class, w)]
    kill_at = 0
    while True:
        storage = _db(tmp_path, f"killed{kill_at}")
        before = _searcher(name, storage)
        _drive(before, 6)
        count = [0]

        def counting(original):
            def write(self, *args, **kwargs):
                count[0] += 1
                if count[0] > kill_at:
                    raise _Killed()
                return original(self, *args, **kwargs)
            return write

        with monkeypatch.context() as patched:
            for w in writes:
                patched.setattr(storage_class, w, counting(getattr(storage_class, w)))
            try:
                before.ask()
                asked_whole = True
            except _Killed:
                asked_whole = False
        restored = _searcher(name, storage)
        pending = restored.pending()
        if pending:  # the trial was stored: it comes back with the choices it was given
            assert [(p.number, p.choices) for p in pending] == [(6, straight[6])], (kill_at, pending)
            restored.tell(6, list(objective(pending[0].choices)[:1]))
        rest = _drive(restored, 9 - len(restored.told()))
        assert rest == straight[9 - len(rest):], (kill_at, rest)
        if asked_whole:
            break
        kill_at += 1
    assert kill_at >= 1  # a kill hit the asking (it writes to the storage)


@pytest.mark.parametrize("name", SEARCHERS)
def test_two_objectives(name: str, tmp_path) -> None:
    directions = ("minimize", "minimize")
    searcher = _searcher(name, _db(tmp_path, "mo"), directions=directions)
    _drive(searcher, 20, directions)
    assert len(searcher.study.best_trials) >= 1
    assert all(t.values is not None and len(t.values) == 2 for t in searcher.told())


@pytest.mark.parametrize("name", SEARCHERS)
def test_tell_contract_errors(name: str, tmp_path) -> None:
    searcher = _searcher(name, _db(tmp_path, "e"))
    cand = searcher.ask()
    searcher.tell(cand.number, [0.5])
    with pytest.raises(ValueError, match="already complete"):
        searcher.tell(cand.number, [0.5])
    with pytest.raises(ValueError, match="does not exist"):
        searcher.tell(99, [0.5])
    with pytest.raises(ValueError, match="state must be one of"):
        searcher.tell(searcher.ask().number, [0.5], state="finished")


@pytest.mark.parametrize("name", SEARCHERS)
def test_pruned_trials_keep_their_learning_curve(name: str, tmp_path) -> None:
    searcher = _searcher(name, _db(tmp_path, "p"))
    cand = searcher.ask()
    searcher.tell(cand.number, None, "pruned", intermediate={1: 0.95, 2: 0.93})
    stored = searcher.study.trials[cand.number]
    assert stored.state == optuna.trial.TrialState.PRUNED
    assert stored.intermediate_values == {1: 0.95, 2: 0.93}


@pytest.mark.parametrize("name", SEARCHERS)
def test_options_are_checked(name: str, tmp_path) -> None:
    with pytest.raises(ConfigError, match="searcher.colour: unknown key"):
        _searcher(name, _db(tmp_path, "o"), colour="blue")
    with pytest.raises(ConfigError, match="searcher.pruner"):
        _searcher(name, _db(tmp_path, "o2"), pruner="sometimes")
    with pytest.raises(ConfigError, match="needs a single objective"):
        _searcher(name, _db(tmp_path, "o3"), directions=("minimize", "minimize"), pruner="median")


def test_searchers_reach_the_top_of_a_small_grid(tmp_path) -> None:
    space = GridSpace(toy_schema())
    grid = [{"width": w, "inter": i, **({"rank": r} if i == "dot" else {})}
            for w in space.choices()[0].options for i in space.choices()[1].options
            for r in (space.choices()[2].options if i == "dot" else (None,))]
    third_best = sorted(objective(c)[0] for c in grid)[2]
    # Planned searchers (oneshot, dnas, proxy) choose in their planning phase: tested end to end.
    for name in [n for n in SEARCHERS if not issubclass(searcher_class(n), PlannedSearcher)]:
        searcher = _searcher(name, _db(tmp_path, f"opt_{name}"))
        _drive(searcher, 40)
        assert searcher.study.best_value <= third_best + 1e-12, name


def test_baselines_are_not_recorded_while_a_trial_is_unfinished(tmp_path) -> None:
    """A search stopped by budget.seconds can leave enqueued trials WAITING: a baseline entry
    after them would take a number inside the search's own, so none is added until it ends."""
    searcher = _searcher("random", _db(tmp_path, "waiting"))
    _drive(searcher, 2)
    searcher.enqueue({"width": 8, "inter": "fm"}, {"baseline": "deepfm"})
    entry = {"lr": {"status": "complete", "values": [0.95]}}
    assert record_baselines(searcher.study, entry) == []
    _drive(searcher, 1)  # the enqueued trial runs
    assert record_baselines(searcher.study, entry) == ["lr"]


def test_the_tell_order_skips_baseline_entries() -> None:
    from rankitect.experiment.driver import AskedTrial, TellOrder
    from rankitect.experiment.trial import TrialOutcome
    from rankitect.searchers.base import Candidate

    order = TellOrder(2, frozenset({2, 4}))
    assert order.next == 3
    for number in (5, 3):
        order.put(AskedTrial(Candidate(number, {})), TrialOutcome(status="complete"), 1)
    assert [order.pop_next()[0].number, order.pop_next()[0].number] == [3, 5]  # 4 is an entry
    assert order.pop_next() is None and order.next == 6
