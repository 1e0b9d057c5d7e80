"""One-shot's search of sub-architectures runs the sampling searchers themselves (on an
in-memory study): distinct paths, FLOPs over the budget told pruned unscored, and an end when
the space holds fewer distinct paths than asked."""

from __future__ import annotations

import pytest

from rankitect.cost import cost_of
from rankitect.searchers.evolution import RegularizedEvolution
from rankitect.searchers.oneshot import OneShotOptions, search_paths, strategy
from rankitect.searchers.optuna_samplers import RandomSearcher, TPESearcher
from tests.helpers import toy_schema
from tests.test_searcher_conformance import GridSpace, objective


@pytest.mark.parametrize("name, cls", [("evolution", RegularizedEvolution), ("random", RandomSearcher),
                                       ("tpe", TPESearcher)])
@pytest.mark.parametrize("use_flops", [False, True])
def test_paths_are_searched_by_the_sampling_searchers(name: str, cls: type, use_flops: bool) -> None:
    space = GridSpace(toy_schema())
    searcher = strategy(space, OneShotOptions(search=name, population=4, sample_size=2), use_flops, seed=1)
    assert type(searcher) is cls and len(searcher.directions) == (2 if use_flops else 1)
    flops = {repr(sorted(c.items())): cost_of(space.decode(c), space.schema).flops
             for c in ({"width": w, "inter": "fm"} for w in (4, 8, 16, 32))}
    limit = sorted(flops.values())[2]
    scored = []

    def score(choices: dict) -> float:
        scored.append(dict(choices))
        return objective(choices)[0]

    records = search_paths(searcher, score, budget=6, max_flops=limit)
    keys = [repr(sorted(r["choices"].items())) for r in records]
    assert len(records) == 6 and len(set(keys)) == 6 and len(scored) == 6  # each path scored once
    assert all(r["flops"] <= limit for r in records)
    assert all(r["supernet_ne"] == objective(r["choices"])[0] for r in records)
    told = searcher.told()
    assert len(told) >= 6 and {t.state for t in told} <= {"complete", "pruned"}


def test_a_space_smaller_than_the_budget_ends_the_search() -> None:
    space = GridSpace(toy_schema())  # 4 widths x (dot with 3 ranks, fm, none) = 20 distinct paths
    searcher = strategy(space, OneShotOptions(search="random"), False, seed=0)
    records = search_paths(searcher, lambda c: objective(c)[0], budget=50, max_flops=None)
    assert len(records) == 20
