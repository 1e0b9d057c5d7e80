"""result.json's front and best follow the configured objectives (directions included),
checked against a brute-force dominance test."""

from __future__ import annotations

import itertools
import random

import pytest

from rankitect.experiment.report import report_lines, verdict
from rankitect.experiment.results import best_trial, mark_front, pareto_front, ranked_trials


def _trials(n: int, objectives: int, seed: int) -> list[dict]:
    rng = random.Random(seed)
    out = [{"number": i, "status": "complete", "values": [rng.choice([0.1, 0.2, 0.3, rng.random()])
                                                            for _ in range(objectives)]} for i in range(n)]
    out += [{"number": n, "status": "failed", "values": None}, {"number": n + 1, "status": "complete",
                                                                "values": [float("nan")] * objectives}]
    return out


def _brute_front(trials: list[dict], directions: list[str]) -> set[int]:
    sign = [1 if d == "minimize" else -1 for d in directions]
    scored = [t for t in trials if t["values"] and all(v == v for v in t["values"])]

    def beats(a: dict, b: dict) -> bool:
        pairs = [(s * x, s * y) for s, x, y in zip(sign, a["values"], b["values"])]
        return all(x <= y for x, y in pairs) and any(x < y for x, y in pairs)

    return {t["number"] for t in scored if not any(beats(o, t) for o in scored)}


@pytest.mark.parametrize("directions", [["minimize"], ["minimize", "minimize"], ["maximize", "minimize"],
                                        ["minimize", "maximize", "minimize"]])
@pytest.mark.parametrize("seed", range(4))
def test_front_and_best_over_the_configured_objectives(directions: list[str], seed: int) -> None:
    trials = _trials(30, len(directions), seed)
    front = pareto_front(trials, directions)
    assert {t["number"] for t in front} == _brute_front(trials, directions)
    last = [t["values"][-1] * (1 if directions[-1] == "minimize" else -1) for t in front]
    assert last == sorted(last)
    best = best_trial(trials, directions)
    first = [t["values"][0] for t in trials if t["number"] in _brute_front(trials, directions)]
    assert best["values"][0] == (min(first) if directions[0] == "minimize" else max(first))
    assert best["number"] in {t["number"] for t in front}
    ranked = ranked_trials(trials, directions)
    assert ranked[0] is best and len(ranked) == 30
    sign = [1 if d == "minimize" else -1 for d in directions]
    for a, b in itertools.pairwise(ranked):  # by the first objective, ties by the next ones
        assert ([s * v for s, v in zip(sign, a["values"])], a["number"]) < \
               ([s * v for s, v in zip(sign, b["values"])], b["number"])


def _entry(number: int | None, ne: float, flops: int, test_ne: float) -> dict:
    return {**({"number": number} if number is not None else {}), "status": "complete", "values": [ne, flops],
            "metrics": {"ne": ne, "flops_per_example": flops}, "test_metrics": {"ne": test_ne}}


def test_the_front_holds_trials_and_baselines_and_marks_what_a_baseline_dominates() -> None:
    directions = ["minimize", "minimize"]
    trials = [_entry(0, 0.80, 1000, 0.81), _entry(1, 0.75, 5000, 0.76), _entry(2, 0.70, 90_000, 0.71)]
    baselines = {"dlrm": _entry(None, 0.74, 4000, 0.73), "lr": _entry(None, 0.9, 40, 0.9)}
    front = mark_front(trials, baselines, directions)
    assert [t.get("number", t.get("baseline")) for t in front] == ["lr", 0, "dlrm", 2]
    assert trials[1]["dominated_by"] == ["dlrm"] and "dominated_by" not in trials[0]
    everything = trials + [{"baseline": n, **e} for n, e in baselines.items()]
    assert front == pareto_front(everything, directions)
    result = {"objectives": ["ne", "flops"], "trials": trials, "pareto": front, "best": best_trial(trials, directions),
              "baselines": baselines}
    assert verdict(result) == ("The search beat the best baseline on validation ne: best #2 0.7000 vs dlrm 0.7400 "
                               "(90,000 vs 4,000 FLOPs/ex); on test 0.7100 vs 0.7300.")
    lines = report_lines(result)
    assert lines[0] == verdict(result) and "1 of 3 complete trials are dominated by a baseline (dlrm)" in lines
    worse = {**result, "best": trials[1]}
    assert verdict(worse).startswith("The search did NOT beat the best baseline on validation ne: best #1 0.7500 vs "
                                     "dlrm 0.7400") and verdict(worse).endswith("nothing better than the baselines.")


def test_a_proxy_is_compared_with_ranking_by_parameter_count():
    from rankitect.experiment.report import planning_lines
    from rankitect.experiment.results import proxy_agreement

    # more dense parameters, lower NE: the count ranks exactly; the proxy ranks backwards
    trials = [{"number": i, "status": "complete", "proposal": {"neg_proxy": float(i)},
               "metrics": {"ne": 0.9 - 0.01 * i, "dense_params": 100 * (i + 1)}} for i in range(5)]
    agreement = proxy_agreement(trials, "neg_proxy")
    assert agreement["kendall_tau"] == pytest.approx(-1.0) and agreement["params"]["kendall_tau"] == pytest.approx(1.0)
    lines = planning_lines({"proxy": "snip", "agreement": agreement})
    assert "proxy snip vs trained validation NE over 5" in lines[0]
    assert "ranks them at least as well as the proxy snip, at no cost" in lines[1]
    for t in trials:  # NE now rises with the parameters: the proxy ranks exactly, the count backwards
        t["metrics"]["ne"] = 0.9 - 0.01 * (4 - t["number"])
    assert "the proxy snip ranks them better" in planning_lines({"proxy": "snip", "agreement": proxy_agreement(trials, "neg_proxy")})[1]
