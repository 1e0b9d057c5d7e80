"""How a raw categorical value becomes an id: the one rule that training and serving share.

    id = 0                                          if the value is missing (null or "")
    id = 1 + fnv1a_64(utf8(text)) % (hash_size - 1)  otherwise

`text` is the value as written in the input: integers by their decimal form, strings as they
are (Criteo's hex hashes included). FNV-1a 64 is simple enough to re-implement anywhere. The
reference (`fnv1a64_text`, `id_of_text`) lives in the serving loader that every export artifact
carries (rankitect.export.serving), so training and serving share one definition;
`hash_arrow_strings` is the same function vectorized over an Arrow string array.
"""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rankitect.export.serving import FNV_OFFSET, FNV_PRIME, fnv1a64_text, id_of_text

__all__ = ["FNV_OFFSET", "FNV_PRIME", "fnv1a64_text", "id_of_text", "hash_arrow_strings"]


def _fnv1a64_binary(arr: pa.Array) -> np.ndarray:
    """FNV-1a 64 of each element of a (large_)binary/string array with no nulls: uint64 [N]."""
    arr = arr.cast(pa.large_binary())
    n = len(arr)
    offsets = np.frombuffer(arr.buffers()[1], dtype=np.int64)[arr.offset:arr.offset + n + 1]
    data_buf = arr.buffers()[2]
    data = np.frombuffer(data_buf, dtype=np.uint8) if data_buf is not None else np.zeros(0, np.uint8)
    starts = offsets[:-1]
    lengths = offsets[1:] - starts
    h = np.full(n, FNV_OFFSET, dtype=np.uint64)
    prime = np.uint64(FNV_PRIME)
    max_len = int(lengths.max()) if n else 0
    with np.errstate(over="ignore"):
        for j in range(max_len):
            rows = np.nonzero(lengths > j)[0]
            byte = data[starts[rows] + j].astype(np.uint64)
            h[rows] = (h[rows] ^ byte) * prime
    return h


def hash_arrow_strings(arr: pa.Array, hash_size: int) -> np.ndarray:
    """Ids (int64 [N]) of a string/binary/integer Arrow array; nulls and "" become 0."""
    if hash_size < 2:
        raise ValueError(f"hash_size must be >= 2, got {hash_size=}")
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_integer(arr.type):
        arr = pc.cast(arr, pa.string())
    elif not (pa.types.is_string(arr.type) or pa.types.is_large_string(arr.type)
              or pa.types.is_binary(arr.type) or pa.types.is_large_binary(arr.type)):
        raise TypeError(f"cannot hash an Arrow array of type {arr.type}")
    missing = pc.fill_null(pc.equal(pc.binary_length(arr), 0), True).to_numpy(zero_copy_only=False)
    filled = pc.fill_null(arr, "")
    h = _fnv1a64_binary(filled)
    ids = (h % np.uint64(hash_size - 1)).astype(np.int64) + 1
    ids[missing] = 0
    return ids
