"""How a batch lies in a slot of a loader worker's shared-memory ring (rankitect.data.loader_workers):
labels, dense values, ids and lengths, each aligned, written by the worker and read as tensor
views on either side of the copy to the device; and how many slots a worker hands over at once."""

from __future__ import annotations

import math
from typing import Any

import numpy as np
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.data.batch import Batch
from rankitect.data.loader import BatchLoader, _Chunk, _sparse_arrays
from rankitect.schema import Schema

ALIGN = 64
GROUP = 4  # batches a worker hands over at once (one message, one copy to the device, one event)


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class SlotLayout:
    """Byte offsets of one batch in a slot: labels, dense, ids, lengths."""

    def __init__(self, rows: int, dense: int, ids: int, features: int) -> None:
        self.labels = 0
        self.dense = _aligned(4 * rows)
        self.ids = self.dense + _aligned(4 * rows * dense)
        self.lengths = self.ids + _aligned(8 * ids)
        self.end = self.lengths + _aligned(4 * rows * features)


def slot_bytes(loader: BatchLoader) -> int:
    """A slot holds a full batch; list columns get 4x their mean ids (a larger batch travels
    through the queue instead)."""
    s, b = loader.schema, loader.batch_size
    ids = sum(b if not c.multi else math.ceil(4 * max(c.avg_len, 1.0) * b) for c in s.sparse)
    return SlotLayout(b, s.num_dense, ids, s.num_sparse).end


def group_size(slots: int) -> int:
    """Batches per group in a ring of `slots`: up to GROUP, and at least two groups per ring
    (one filled while the other is read)."""
    return max(1, min(GROUP, slots // 2))


def write_slot(ring: np.ndarray, offset: int, slot_bytes: int, rows: _Chunk, schema: Schema) -> dict[str, Any] | None:
    """Copy a batch of `rows` into the slot at `offset` of `ring` (uint8), laid out as `SlotLayout`
    says; its shape, or None if it is larger than a slot."""
    values, lengths, per_key = _sparse_arrays(rows, schema)
    layout = SlotLayout(len(rows), schema.num_dense, values.size, schema.num_sparse)
    if layout.end > slot_bytes:
        return None
    for start, array in ((layout.labels, rows.labels), (layout.dense, rows.dense), (layout.ids, values),
                         (layout.lengths, lengths)):
        ring[offset + start:offset + start + array.nbytes] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return {"rows": len(rows), "ids": int(values.size), "per_key": per_key}


def batch_of(data: torch.Tensor, layout: SlotLayout, rows: int, dense: int, ids: int, per_key: list[int],
             keys: list[str]) -> Batch:
    """The Batch whose tensors are views of `data` (one slot's bytes, on any device)."""
    def part(start: int, count: int, dtype: torch.dtype) -> torch.Tensor:
        return data[start:start + count * dtype.itemsize].view(dtype)

    sparse = KeyedJaggedTensor(keys=keys, values=part(layout.ids, ids, torch.int64),
                               lengths=part(layout.lengths, rows * len(keys), torch.int32), stride=rows,
                               length_per_key=per_key)
    return Batch(dense=part(layout.dense, rows * dense, torch.float32).view(rows, dense), sparse=sparse,
                 labels=part(layout.labels, rows, torch.float32))
