"""How the model reads each dense column, chosen at import from a bounded sample of its values.

An importer streams rows once; the writer keeps a uniform sample of them (bottom-k: every row
draws a random key and the `capacity` rows of smallest key stay, so memory is bounded whatever
the input's size) and, once every row was seen, chooses per column what CTR practice does with
raw numbers:

- clip to the sample's [CLIP_LOW, CLIP_HIGH] quantiles (a few outliers no longer set the scale);
  no clip when those quantiles are equal (the column is nearly constant: clipping would make it
  constant);
- log1p when the clipped values are non-negative and heavy-tailed (skewness above
  LOG_SKEWNESS): counts, amounts, durations;
- mean and std of the result (what the model normalizes with);
- BUCKETS quantile buckets of the clipped values (their inner boundaries, duplicates dropped;
  a column dominated by one value also gets its other values' quantiles), for a space that
  feeds the column as a categorical feature (`embedding.dense_buckets`).

The model applies clip, log1p and normalization itself (rankitect.dense_prep), so stored values
stay as imported and serving sends them as before.
"""

from __future__ import annotations

from dataclasses import dataclass

import numpy as np

SAMPLE_VALUES = 1 << 22  # values (rows x dense columns) the sample holds at most
MAX_SAMPLE_ROWS = 1 << 16
MIN_SAMPLE_ROWS = 4096
CLIP_LOW, CLIP_HIGH = 0.0005, 0.9995
LOG_SKEWNESS = 1.0
BUCKETS = 32


@dataclass(frozen=True)
class Scaling:
    """What the model does with one stored dense column (see the module docstring)."""

    scale: str  # "linear" or "log1p"
    clip_min: float | None
    clip_max: float | None
    mean: float
    std: float
    buckets: tuple[float, ...]


class RowSample:
    """A uniform sample of at most `capacity` rows of a (rows, D) stream; deterministic for a
    given seed and order of `add` calls."""

    def __init__(self, num_columns: int, seed: int = 0) -> None:
        self.capacity = max(MIN_SAMPLE_ROWS, min(MAX_SAMPLE_ROWS, SAMPLE_VALUES // max(num_columns, 1)))
        self._rng = np.random.default_rng(seed)
        self._keys = np.empty(0, np.float64)
        self._rows = np.empty((0, num_columns), np.float64)

    def add(self, rows: np.ndarray) -> None:
        """Offer rows (n, D)."""
        keys = np.concatenate([self._keys, self._rng.random(rows.shape[0])])
        stacked = np.concatenate([self._rows, rows.astype(np.float64, copy=False)])
        if keys.size > self.capacity:
            keep = np.argpartition(keys, self.capacity - 1)[:self.capacity]
            keys, stacked = keys[keep], stacked[keep]
        self._keys, self._rows = keys, stacked

    @property
    def rows(self) -> np.ndarray:
        """The sampled rows (m, D), m <= capacity."""
        return self._rows


def choose_scaling(values: np.ndarray) -> Scaling:
    """The Scaling of a column from a sample of its stored values (float [m], m >= 1)."""
    low, high = (float(v) for v in np.quantile(values, [CLIP_LOW, CLIP_HIGH]).astype(np.float32))
    clip = high > low
    clipped = np.clip(values, low, high) if clip else values
    log = bool(clipped.min() >= 0.0 and _skewness(clipped) > LOG_SKEWNESS)
    scaled = np.log1p(clipped) if log else clipped
    std = float(scaled.std())
    return Scaling(scale="log1p" if log else "linear", clip_min=low if clip else None,
                   clip_max=high if clip else None, mean=float(scaled.mean()),
                   std=std if std > 1e-12 else 1.0, buckets=bucket_boundaries(clipped))


def bucket_boundaries(values: np.ndarray, buckets: int = BUCKETS) -> tuple[float, ...]:
    """Inner boundaries of `buckets` quantile buckets of `values` (float [m]), ascending and
    distinct; the smallest value's bucket starts at -inf and the largest's ends at +inf.

    A column dominated by one value (a count that is mostly 0) would keep few distinct
    quantiles: the quantiles of its other values are added, so those stay told apart."""
    levels = np.arange(1, buckets) / buckets
    inner = [np.quantile(values, levels)]
    uniques, counts = np.unique(values, return_counts=True)
    mode = uniques[np.argmax(counts)]
    rest = values[values != mode]
    if counts.max() > values.size / buckets and rest.size:
        inner.append(np.quantile(rest, levels))
    return tuple(float(v) for v in np.unique(np.concatenate(inner).astype(np.float32)))


def _skewness(values: np.ndarray) -> float:
    centred = values - values.mean()
    var = float(np.mean(centred ** 2))
    return 0.0 if var <= 1e-24 else float(np.mean(centred ** 3) / var ** 1.5)
