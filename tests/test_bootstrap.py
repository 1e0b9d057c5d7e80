"""The paired Poisson bootstrap of validation NE and what the report says with it."""

from __future__ import annotations

import numpy as np
import pytest

from rankitect.bootstrap import BLOCK_ROWS, ne_replicates, paired_difference, spread
from rankitect.experiment.report import report_lines
from rankitect.metrics import evaluate_logits


def _data(rows: int, seed: int = 0) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    rng = np.random.default_rng(seed)
    truth = rng.normal(-1.0, 1.5, rows)  # the true logit of each row
    labels = (rng.random(rows) < 1 / (1 + np.exp(-truth))).astype(np.float64)
    return truth, labels, rng.normal(0.0, 1.0, rows)


def test_replicates_centre_on_the_ne_and_their_spread_shrinks_with_rows():
    truth, labels, _ = _data(BLOCK_ROWS + 5000)  # more than one block of weights
    reps = ne_replicates(truth, labels)
    ne = evaluate_logits(truth, labels).ne
    assert reps.mean() == pytest.approx(ne, rel=0.01)
    small = spread(list(ne_replicates(truth[:2000], labels[:2000])))
    assert spread(list(reps)) < small / 2  # ~sqrt(19) times more rows


def test_the_same_rows_get_the_same_resamples_so_differences_are_paired():
    truth, labels, noise = _data(20_000)
    a = ne_replicates(truth, labels)
    assert np.array_equal(a, ne_replicates(truth, labels))
    same = paired_difference(list(a), list(a))
    assert same.mean == 0.0 and not same.clear
    worse = ne_replicates(truth + 0.8 * noise, labels)  # a clearly worse model
    d = paired_difference(list(worse), list(a))
    assert d.clear and d.low > 0
    assert d.mean == pytest.approx(evaluate_logits(truth + 0.8 * noise, labels).ne - evaluate_logits(truth, labels).ne,
                                   rel=0.05)
    # a hair worse: the pairing still sees a difference no unpaired comparison of two NEs would
    hair = ne_replicates(truth + 0.05 * noise, labels)
    unpaired = 2 * spread(list(a))
    assert paired_difference(list(hair), list(a)).high - paired_difference(list(hair), list(a)).low < unpaired


def test_mismatched_replicates_give_no_difference():
    assert paired_difference([0.5, 0.6], [0.5]) is None
    assert paired_difference([], []) is None
    assert paired_difference([0.5, float("nan")], [0.5, 0.6]) is None


def _entry(number, ne, reps, **kw):
    return {"number": number, "status": "complete", "values": [ne, 100.0],
            "metrics": {"ne": ne, "rows": 2000, "flops_per_example": 100, "params": 10,
                        "valid_ne_replicates": list(reps)}, "test_metrics": {"ne": ne, "auc": 0.7}, **kw}


def test_report_says_when_the_validation_rows_cannot_tell_the_leaders_apart():
    truth, labels, noise = _data(2000)
    other = np.random.default_rng(7).normal(0.0, 1.0, truth.size)
    base = ne_replicates(truth + 0.3 * noise, labels)
    close = ne_replicates(truth + 0.3 * other, labels)  # as good as the baseline, differently wrong
    far = ne_replicates(truth, labels)
    best = _entry(1, float(close.mean()), close)
    result = {"objectives": ["ne", "flops"], "trials": [best, _entry(2, float(far.mean()) + 1, far)],
              "pareto": [best], "best": best,
              "baselines": {"dlrm": {"baseline": "dlrm", "status": "complete",
                                     "metrics": {"ne": float(base.mean()), "flops_per_example": 100,
                                                 "valid_ne_replicates": list(base)},
                                     "test_metrics": {"ne": 0.9, "auc": 0.7}}}}
    text = "\n".join(report_lines(result))
    assert "minus the best baseline dlrm" in text and "are too few to tell them apart" in text
    assert "±" in text and "vs dlrm (90%)" in text
    clear = _entry(1, float(far.mean()), far)
    text = "\n".join(report_lines({**result, "best": clear, "pareto": [clear], "trials": [clear]}))
    assert "minus the best baseline dlrm" in text and "tell them apart" in text and "too few" not in text
