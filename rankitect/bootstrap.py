"""How sure a validation NE is: a paired Poisson bootstrap over the validation rows.

Every run scores REPLICATES resamples of its validation rows; in resample k row i counts
w[i, k] ~ Poisson(1) times (drawn as the Poisson quantile of a uniform 16-bit number: a table
lookup, about 10x faster than numpy's Poisson sampler, exact to 1 / 65,536 in probability). The weights come from a generator seeded by (SEED, block of rows),
so two runs over the same rows in the same order (every run of a search: the loader reads the
validation dates unshuffled) use the same resamples: the difference of their replicate NEs is
a paired bootstrap of the difference of their NEs, with no predictions kept, only REPLICATES
numbers per run (`valid_ne_replicates` in metrics.json).
"""

from __future__ import annotations

import math
from dataclasses import dataclass

import numpy as np

from rankitect.metrics import binary_entropy

REPLICATES = 100
SEED = 20_261_206
BLOCK_ROWS = 1 << 15
LEVEL = 0.90  # two-sided interval of a difference


def _poisson_quantiles() -> np.ndarray:
    """Poisson(1)'s quantile at (u + 0.5) / 65,536 for every 16-bit u (float64 [65,536])."""
    pmf = np.array([math.exp(-1.0) / math.factorial(k) for k in range(20)])
    return np.searchsorted(np.cumsum(pmf), (np.arange(1 << 16) + 0.5) / (1 << 16)).astype(np.float64)


_POISSON_QUANTILE = _poisson_quantiles()


def ne_replicates(logits: np.ndarray, labels: np.ndarray, replicates: int = REPLICATES) -> np.ndarray:
    """NE of each resample (float64 [replicates]) of logits [N] against labels [N]."""
    z = np.asarray(logits, np.float64)
    y = np.asarray(labels, np.float64)
    loss = np.logaddexp(0.0, z) - y * z  # per-row log-loss [N]
    totals = np.zeros((3, replicates))  # weighted sums of log-loss, rows, labels
    for block, start in enumerate(range(0, z.size, BLOCK_ROWS)):
        stop = min(start + BLOCK_ROWS, z.size)
        uniform = np.random.default_rng([SEED, block]).integers(0, 1 << 16, (stop - start, replicates), np.uint16)
        weights = _POISSON_QUANTILE[uniform]
        totals += np.stack([loss[start:stop], np.ones(stop - start), y[start:stop]]) @ weights
    rows = np.maximum(totals[1], 1.0)
    entropy = np.array([binary_entropy(rate) for rate in totals[2] / rows])
    return np.divide(totals[0] / rows, entropy, out=np.full(replicates, np.inf), where=entropy > 0)


@dataclass(frozen=True)
class Difference:
    """NE of a run minus NE of another over the same validation rows: the point estimate and
    the bootstrap's LEVEL interval. `clear` when the interval excludes 0."""

    mean: float
    low: float
    high: float

    @property
    def clear(self) -> bool:
        return self.high < 0 or self.low > 0


def paired_difference(a: list[float], b: list[float]) -> Difference | None:
    """The difference a - b of two runs' replicate NEs; None unless both have the same number
    of finite replicates."""
    x, y = np.asarray(a, np.float64), np.asarray(b, np.float64)
    if x.size == 0 or x.shape != y.shape or not (np.isfinite(x).all() and np.isfinite(y).all()):
        return None
    d = x - y
    tail = (1 - LEVEL) / 2
    low, high = np.quantile(d, [tail, 1 - tail])
    return Difference(float(d.mean()), float(low), float(high))


def spread(replicates: list[float]) -> float:
    """The bootstrap standard error of one run's NE (NaN without replicates)."""
    x = np.asarray(replicates, np.float64)
    return float(x.std(ddof=1)) if x.size > 1 and np.isfinite(x).all() else math.nan
