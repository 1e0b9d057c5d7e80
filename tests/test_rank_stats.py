"""Rank correlations against their textbook definitions, computed pair by pair here."""

from __future__ import annotations

import itertools
import math
import random

import pytest

from rankitect.searchers.rank_stats import average_ranks, kendall_tau, spearman


def _tau_b_by_pairs(a: list[float], b: list[float]) -> float:
    concordant = discordant = ties_a = ties_b = 0
    for i, j in itertools.combinations(range(len(a)), 2):
        da, db = a[i] - a[j], b[i] - b[j]
        if da == 0 and db == 0:
            continue
        if da == 0:
            ties_a += 1
        elif db == 0:
            ties_b += 1
        elif da * db > 0:
            concordant += 1
        else:
            discordant += 1
    return (concordant - discordant) / math.sqrt((concordant + discordant + ties_a)
                                                 * (concordant + discordant + ties_b))


def test_kendall_tau_matches_the_pairwise_definition_with_ties() -> None:
    rng = random.Random(3)
    for _ in range(20):
        a = [rng.randint(0, 5) for _ in range(12)]
        b = [rng.randint(0, 5) for _ in range(12)]
        assert kendall_tau(a, b) == pytest.approx(_tau_b_by_pairs(a, b))


def test_perfect_and_reversed_orders() -> None:
    x = [0.3, 0.1, 0.7, 0.5]
    assert kendall_tau(x, [2 * v for v in x]) == pytest.approx(1.0)
    assert spearman(x, [-v for v in x]) == pytest.approx(-1.0)
    assert math.isnan(kendall_tau(x, [1.0] * 4)) and math.isnan(spearman(x, [1.0] * 4))


def test_spearman_is_pearson_of_average_ranks() -> None:
    assert list(average_ranks([10, 20, 20, 5])) == [2.0, 3.5, 3.5, 1.0]
    # d = rank differences (1, -1, 1, -1, 0): rho = 1 - 6 * 4 / (5 * 24) = 0.8 without ties.
    assert spearman([1, 2, 3, 4, 5], [2, 1, 4, 3, 5]) == pytest.approx(0.8)
    with pytest.raises(ValueError, match="different lengths"):
        spearman([1, 2], [1, 2, 3])
