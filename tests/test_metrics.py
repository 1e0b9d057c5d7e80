"""Metrics against direct, independent computations."""

from __future__ import annotations

import itertools
import math

import numpy as np
import pytest

from rankitect.metrics import (
    auc,
    binary_entropy,
    evaluate_logits,
    logloss,
    logloss_from_logits,
)


def _brute_force_auc(scores, labels) -> float:
    pos = [s for s, y in zip(scores, labels) if y == 1]
    neg = [s for s, y in zip(scores, labels) if y == 0]
    wins = sum(1.0 if p > n else 0.5 if p == n else 0.0 for p, n in itertools.product(pos, neg))
    return wins / (len(pos) * len(neg))


@pytest.mark.parametrize("seed", range(5))
def test_auc_equals_pairwise_count_with_ties(seed: int) -> None:
    rng = np.random.default_rng(seed)
    scores = rng.integers(0, 6, size=60).astype(float)  # many ties
    labels = rng.integers(0, 2, size=60)
    assert auc(scores, labels) == pytest.approx(_brute_force_auc(scores, labels), abs=1e-12)


def test_logloss_and_ne_follow_their_definitions() -> None:
    rng = np.random.default_rng(0)
    logits = rng.normal(size=500)
    labels = (rng.random(500) < 0.3).astype(float)
    p = 1 / (1 + np.exp(-logits))
    direct = -np.mean([math.log(pi) if y else math.log(1 - pi) for pi, y in zip(p, labels)])
    assert logloss(p, labels) == pytest.approx(direct, rel=1e-9)
    assert logloss_from_logits(logits, labels) == pytest.approx(direct, rel=1e-9)
    m = evaluate_logits(logits, labels)
    rate = labels.mean()
    entropy = -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))
    assert m.ne == pytest.approx(direct / entropy, rel=1e-9)
    assert m.calibration == pytest.approx(p.mean() / rate, rel=1e-9)
    assert (m.rows, m.positives) == (500, int(labels.sum()))


def test_predicting_the_base_rate_gives_ne_one() -> None:
    labels = np.array([1, 0, 0, 0, 1, 0, 0, 0, 0, 0], float)
    logit = math.log(0.2 / 0.8)
    assert evaluate_logits(np.full(10, logit), labels).ne == pytest.approx(1.0)


def test_edge_cases() -> None:
    assert binary_entropy(0.0) == 0.0 and binary_entropy(1.0) == 0.0
    assert math.isnan(auc(np.array([0.1, 0.2]), np.array([1, 1])))
    assert math.isinf(evaluate_logits(np.zeros(3), np.ones(3)).ne)
    assert logloss_from_logits(np.array([800.0]), np.array([1.0])) == pytest.approx(0.0)
