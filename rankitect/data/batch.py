"""A training batch: dense `[B, D]`, sparse KeyedJaggedTensor (keys = sparse columns), labels `[B]`."""

from __future__ import annotations

from dataclasses import dataclass

import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor


@dataclass(frozen=True)
class Batch:
    dense: torch.Tensor  # (B, D) float32
    sparse: KeyedJaggedTensor  # F keys, B rows each; values int64, lengths int32
    labels: torch.Tensor  # (B,) float32 in {0, 1}

    def __len__(self) -> int:
        return int(self.labels.shape[0])

    def to(self, device: torch.device | str, non_blocking: bool = False) -> "Batch":
        return Batch(
            dense=self.dense.to(device, non_blocking=non_blocking),
            sparse=self.sparse.to(torch.device(device), non_blocking=non_blocking),
            labels=self.labels.to(device, non_blocking=non_blocking),
        )

    def pin_memory(self) -> "Batch":
        """A copy in page-locked host memory (needs CUDA): its copies to the GPU can be asynchronous."""
        return Batch(self.dense.pin_memory(), self.sparse.pin_memory(), self.labels.pin_memory())

    def record_stream(self, stream: torch.cuda.Stream) -> None:
        """Mark the (CUDA) tensors as used on `stream`, for a batch copied on another stream."""
        self.dense.record_stream(stream)
        self.sparse.record_stream(stream)
        self.labels.record_stream(stream)
