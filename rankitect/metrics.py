"""Ranking metrics, one definition each, used by training, the generator's truth and reports.

NE (normalized entropy) = log-loss / H(mean label of the same rows), where H is the binary
entropy in nats. Below 1 means better than always predicting the base rate.
"""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass

import numpy as np

_EPS = 1e-12


def logloss(prob: np.ndarray, labels: np.ndarray) -> float:
    """Mean binary cross-entropy (nats) of probabilities `prob` [N] against 0/1 `labels` [N]."""
    p = np.clip(np.asarray(prob, np.float64), _EPS, 1 - _EPS)
    y = np.asarray(labels, np.float64)
    return float(-np.mean(y * np.log(p) + (1 - y) * np.log1p(-p)))


def logloss_from_logits(logits: np.ndarray, labels: np.ndarray) -> float:
    """Same as `logloss(sigmoid(logits), labels)`, stable for large |logits|."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    return float(np.mean(np.logaddexp(0.0, z) - y * z))


def binary_entropy(rate: float) -> float:
    """H(rate) in nats; 0 at rate 0 or 1."""
    if rate <= 0.0 or rate >= 1.0:
        return 0.0
    return -(rate * math.log(rate) + (1 - rate) * math.log(1 - rate))


def normalized_entropy(loss: float, labels: np.ndarray) -> float:
    """NE of a log-loss measured on `labels`; inf when the labels are all one class."""
    h = binary_entropy(float(np.mean(labels)))
    return loss / h if h > 0 else math.inf


def auc(scores: np.ndarray, labels: np.ndarray) -> float:
    """ROC AUC by the rank statistic (ties get average ranks); NaN with one class only."""
    s = np.asarray(scores, np.float64)
    y = np.asarray(labels) > 0.5
    n_pos = int(y.sum())
    n_neg = y.size - n_pos
    if n_pos == 0 or n_neg == 0:
        return math.nan
    order = np.argsort(s, kind="mergesort")
    sorted_s = s[order]
    ranks = np.empty(s.size, np.float64)
    # Average rank of each run of equal scores.
    boundaries = np.flatnonzero(np.diff(sorted_s)) + 1
    starts = np.concatenate([[0], boundaries])
    ends = np.concatenate([boundaries, [s.size]])
    avg = (starts + ends + 1) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    return float((ranks[y].sum() - n_pos * (n_pos + 1) / 2) / (n_pos * n_neg))


@dataclass(frozen=True)
class EvalMetrics:
    logloss: float
    ne: float
    auc: float
    calibration: float  # mean prediction / mean label
    rows: int
    positives: int

    def to_dict(self) -> dict[str, float | int]:
        return asdict(self)


def evaluate_logits(logits: np.ndarray, labels: np.ndarray) -> EvalMetrics:
    """All metrics of logits [N] against labels [N]."""
    labels = np.asarray(labels, np.float64)
    loss = logloss_from_logits(logits, labels)
    prob = 1.0 / (1.0 + np.exp(-np.asarray(logits, np.float64)))
    mean_label = float(labels.mean()) if labels.size else math.nan
    return EvalMetrics(
        logloss=loss,
        ne=normalized_entropy(loss, labels),
        auc=auc(prob, labels),
        calibration=float(prob.mean() / mean_label) if mean_label > 0 else math.nan,
        rows=int(labels.size),
        positives=int(labels.sum()),
    )
