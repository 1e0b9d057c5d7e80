"""Per-column embedding widths: a column's table holds `d` floats a row, and its pooled vector is
projected to the common width E that dot, FM and attention need, so the sparse input stays
(B, F, E).

An architecture's `embedding.dims` is "auto" (every column at E), one number for every column,
or {column: dim} (columns left out: E); each a multiple of 4 (fbgemm's row alignment, so that
fused tables of several widths need no padding) and at most E. A narrowed column costs
rows x d table floats plus a d x E projection (2 d E FLOPs an example) instead of rows x E.
"""

from __future__ import annotations

import math
from collections.abc import Mapping
from typing import Any

import torch
from torch import nn

from rankitect.schema import Schema

ALIGN = 4


def column_dims(schema: Schema, dims: Any, e: int) -> tuple[int, ...]:
    """The table width of every sparse column, in schema order, for a checked `embedding.dims`."""
    out = []
    for col in schema.sparse:
        asked = dims.get(col.name, "auto") if isinstance(dims, Mapping) else dims
        out.append(e if asked == "auto" else min(int(asked), e))
    return tuple(out)


def check_dims(dims: Any, schema: Schema, e: int) -> list[str]:
    """Problems of an `embedding.dims` value (column names, widths above E or not aligned)."""
    if isinstance(dims, Mapping):
        problems = [f"names no sparse column: {name!r} (columns: {schema.sparse_names})"
                    for name in dims if name not in schema.sparse_names]
        values = [(f"column {name!r}: ", v) for name, v in dims.items()]
    else:
        problems, values = [], [("", dims)]
    for where, v in values:
        if v != "auto" and (int(v) > e or int(v) % ALIGN):
            problems.append(f"{where}must be \"auto\" or a multiple of {ALIGN} up to E={e}, got {v!r}")
    return problems


def widen_cost(dims: tuple[int, ...], e: int) -> tuple[int, int]:
    """(FLOPs per example, parameters) of projecting the narrowed columns to E."""
    narrowed = [d for d in dims if d != e]
    return sum(2 * d * e for d in narrowed), sum(d * e for d in narrowed)


class Widen(nn.Module):
    """Pooled columns of widths `dims`, concatenated (B, sum dims) -> (B, F, E): each column
    narrower than E is multiplied by its own (E x d) projection, the others pass as they are."""

    def __init__(self, names: list[str], dims: tuple[int, ...], e: int, device: torch.device | None = None) -> None:
        super().__init__()
        self.dims, self.e, self.names = tuple(dims), e, list(names)
        self.weights = nn.ParameterDict()
        for name, d in zip(names, dims):
            if d != e:  # uniform init keeping the variance of a row: Var(W x) = Var(x)
                bound = math.sqrt(3.0 / d)
                self.weights[name] = nn.Parameter(torch.empty(e, d, device=device).uniform_(-bound, bound))

    @property
    def active(self) -> bool:
        return len(self.weights) > 0

    def forward(self, pooled: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return pooled.view(pooled.shape[0], -1, self.e)
        parts = torch.split(pooled, self.dims, dim=1)  # each (B, d)
        cols = [p if d == self.e else p @ self.weights[name].t() for name, d, p in zip(self.names, self.dims, parts)]
        return torch.stack(cols, dim=1)  # (B, F, E)
