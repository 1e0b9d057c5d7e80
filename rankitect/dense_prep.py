"""What a model does to the stored dense columns before its blocks see them (schema.json's
clip_min / clip_max, scale, mean, std and buckets; chosen by rankitect.data.dense_stats).

DensePrep:    stored (B, D) -> clip -> log1p on the log1p columns -> normalize: (B, D).
DenseBuckets: stored (B, D) -> each column's quantile bucket id -> its own embedding table:
              (B, D, E), rows that join the sparse input beside the embedded columns.

Their buffers are derived from the schema (not saved in checkpoints: the schema is the source).
"""

from __future__ import annotations

import math

import torch
from torch import nn

from rankitect.schema import Schema


class DensePrep(nn.Module):
    """forward(stored (B, D), mean (D,), inv_std (D,)) -> normalized (B, D); `inverse` maps
    normalized values back.

    `mean` / `inv_std` are passed in: they are the model's `dense_mean` / `dense_inv_std`
    buffers, which checkpoints hold under those keys. `clipping` and `logs` say whether a clip
    or a log1p runs.
    """

    def __init__(self, schema: Schema, device: torch.device | None = None) -> None:
        super().__init__()
        cols = schema.dense
        log = [c.scale == "log1p" for c in cols]
        low = [max(c.clip_min if c.clip_min is not None else -math.inf, 0.0 if lg else -math.inf)
               for c, lg in zip(cols, log)]
        high = [c.clip_max if c.clip_max is not None else math.inf for c in cols]
        self.clipping = dense_clip_flops(schema) > 0
        self.logs = sum(log)
        self.register_buffer("low", torch.tensor(low, dtype=torch.float32, device=device), persistent=False)
        self.register_buffer("high", torch.tensor(high, dtype=torch.float32, device=device), persistent=False)
        linear_idx = [j for j, lg in enumerate(log) if not lg]
        log_idx = [j for j, lg in enumerate(log) if lg]
        order = torch.tensor(linear_idx + log_idx, dtype=torch.int64, device=device)
        self.register_buffer("linear_idx", torch.tensor(linear_idx, dtype=torch.int64, device=device), persistent=False)
        self.register_buffer("log_idx", torch.tensor(log_idx, dtype=torch.int64, device=device), persistent=False)
        self.register_buffer("restore", torch.argsort(order), persistent=False)

    def clipped(self, stored: torch.Tensor) -> torch.Tensor:
        """stored (B, D) clipped to each column's bounds (B, D)."""
        return torch.clamp(stored, self.low, self.high) if self.clipping else stored

    def normalized(self, clipped: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
        """Clipped (B, D) -> scaled and normalized (B, D)."""
        x = clipped
        if self.logs:
            x = torch.cat([x.index_select(1, self.linear_idx), torch.log1p(x.index_select(1, self.log_idx))], 1)
            x = x.index_select(1, self.restore)
        return (x - mean) * inv_std

    def forward(self, stored: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
        return self.normalized(self.clipped(stored), mean, inv_std)

    def inverse(self, normalized: torch.Tensor, mean: torch.Tensor, inv_std: torch.Tensor) -> torch.Tensor:
        """Stored values (B, D) that `forward` maps to `normalized` (where clipping allows)."""
        x = normalized / inv_std + mean
        if self.logs:
            x = torch.cat([x.index_select(1, self.linear_idx), torch.expm1(x.index_select(1, self.log_idx))], 1)
            x = x.index_select(1, self.restore)
        return x


def dense_clip_flops(schema: Schema) -> int:
    """The clip's FLOPs per example: one per column when any column is clipped or logged (a
    log1p column is clipped at 0); 0 when the clip does not run."""
    clipping = any(c.scale == "log1p" or c.clip_min is not None for c in schema.dense)
    return schema.num_dense if clipping else 0


def dense_prep_flops(schema: Schema) -> int:
    """DensePrep's FLOPs per example for `schema`, without building it."""
    logs = sum(c.scale == "log1p" for c in schema.dense)
    return dense_clip_flops(schema) + logs + 2 * schema.num_dense


def bucket_sizes(schema: Schema) -> list[int]:
    """Rows of each dense column's bucket table: its buckets (boundaries + 1)."""
    return [len(c.buckets) + 1 for c in schema.dense]


def bucket_flops(schema: Schema) -> int:
    """DenseBuckets' FLOPs per example: per column a binary search, ceil(log2(K + 1))
    comparisons over the K padded boundaries, and the add of the column's row offset."""
    widest = max(max((len(c.buckets) for c in schema.dense), default=0), 1)
    return schema.num_dense * (math.ceil(math.log2(widest + 1)) + 1)


class DenseBuckets(nn.Module):
    """forward(clipped stored (B, D)) -> (B, D, E): each column's quantile bucket, embedded.

    Bucket ids come from one searchsorted over the columns' boundaries padded with +inf to the
    widest column's count (so pads are never passed); column j's ids are offset into one table
    of sum(boundaries_j + 1) rows.
    """

    def __init__(self, schema: Schema, dim: int, device: torch.device | None = None) -> None:
        super().__init__()
        widest = max(len(c.buckets) for c in schema.dense)
        bounds = torch.full((schema.num_dense, max(widest, 1)), math.inf, device=device)
        for j, c in enumerate(schema.dense):
            bounds[j, :len(c.buckets)] = torch.tensor(c.buckets, dtype=torch.float32, device=device)
        sizes = bucket_sizes(schema)
        offsets = torch.tensor([0] + sizes[:-1], dtype=torch.int64, device=device).cumsum(0)
        self.register_buffer("bounds", bounds, persistent=False)
        self.register_buffer("offsets", offsets.unsqueeze(1), persistent=False)
        self.table = nn.Embedding(sum(sizes), dim, device=device)
        nn.init.normal_(self.table.weight, std=0.01)

    def forward(self, clipped: torch.Tensor) -> torch.Tensor:
        ids = torch.searchsorted(self.bounds, clipped.t().contiguous()) + self.offsets  # (D, B)
        return self.table(ids).transpose(0, 1)  # (B, D, E)
