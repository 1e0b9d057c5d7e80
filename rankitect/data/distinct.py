"""Counting the distinct ids of a column while an import streams, in bounded memory.

A counter keeps the exact set of ids it has seen until that set reaches `exact_limit` ids
(8 bytes each), then continues as a HyperLogLog sketch of 2^14 one-byte registers
(standard error 1.04 / sqrt(2^14) = 0.8%), into which the exact set is folded. So a column
with up to `exact_limit` distinct ids is counted exactly, and any column costs at most
`exact_limit` x 8 bytes, whatever the number of rows.
"""

from __future__ import annotations

import numpy as np

EXACT_LIMIT = 1 << 16
HLL_BITS = 14
_M = 1 << HLL_BITS
_ALPHA = 0.7213 / (1 + 1.079 / _M)
_REST_BITS = 64 - HLL_BITS


def splitmix64(x: np.ndarray) -> np.ndarray:
    """A well-mixed 64-bit hash of each uint64 (the SplitMix64 finalizer): ids that differ in
    one bit, or hashes whose high bits are poorly mixed, spread over all 64 bits."""
    with np.errstate(over="ignore"):
        z = x.astype(np.uint64) + np.uint64(0x9E3779B97F4A7C15)
        z = (z ^ (z >> np.uint64(30))) * np.uint64(0xBF58476D1CE4E5B9)
        z = (z ^ (z >> np.uint64(27))) * np.uint64(0x94D049BB133111EB)
        return z ^ (z >> np.uint64(31))


class DistinctCounter:
    """Distinct values of a stream of int64 ids (exact up to `exact_limit`, then a sketch).

    `update(ids)` takes any int64 array (missing ids must be filtered out by the caller);
    `count()` is the number of distinct ids so far; `exact` says whether it is exact.
    Not thread-safe.
    """

    def __init__(self, exact_limit: int = EXACT_LIMIT) -> None:
        if exact_limit < 1:
            raise ValueError(f"exact_limit must be >= 1, got {exact_limit=}")
        self.exact_limit = exact_limit
        self._seen: np.ndarray | None = np.zeros(0, np.int64)  # sorted; None once sketching
        self._registers = np.zeros(0, np.uint8)

    @property
    def exact(self) -> bool:
        return self._seen is not None

    def update(self, ids: np.ndarray) -> None:
        ids = np.asarray(ids, dtype=np.int64).ravel()
        if ids.size == 0:
            return
        if self._seen is not None:
            self._seen = np.union1d(self._seen, ids)
            if self._seen.size <= self.exact_limit:
                return
            ids, self._seen = self._seen, None
            self._registers = np.zeros(_M, np.uint8)
        self._add_to_sketch(ids)

    def _add_to_sketch(self, ids: np.ndarray) -> None:
        h = splitmix64(ids.view(np.uint64))
        index = (h >> np.uint64(_REST_BITS)).astype(np.int64)
        rest = h & np.uint64((1 << _REST_BITS) - 1)
        # rank = leading zeros of the 50 remaining bits + 1; frexp's exponent is the bit length,
        # exact since rest < 2^50 is a float64 exactly.
        bit_length = np.frexp(rest.astype(np.float64))[1]
        rank = (_REST_BITS - bit_length + 1).astype(np.uint8)
        np.maximum.at(self._registers, index, rank)

    def count(self) -> int:
        if self._seen is not None:
            return int(self._seen.size)
        harmonic = float(np.sum(np.ldexp(1.0, -self._registers.astype(np.int64))))
        estimate = _ALPHA * _M * _M / harmonic
        zeros = int(np.count_nonzero(self._registers == 0))
        if estimate <= 2.5 * _M and zeros:
            estimate = _M * np.log(_M / zeros)  # linear counting for small counts
        return int(round(estimate))
