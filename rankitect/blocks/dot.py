"""Pairwise dot products between the F embedding rows (DLRM's interaction)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankitect.blocks.base import Block, ShapeError, require_rank
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape


class DotProductModule(nn.Module):
    """(B, F, E) -> (B, P): the upper triangle of X X^T, P = F(F-1)/2 (or F(F+1)/2 with self)."""

    def __init__(self, num_rows: int, self_interaction: bool) -> None:
        super().__init__()
        rows, cols = torch.triu_indices(num_rows, num_rows, offset=0 if self_interaction else 1)
        self.register_buffer("rows", rows, persistent=False)
        self.register_buffer("cols", cols, persistent=False)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        gram = torch.bmm(x, x.transpose(1, 2))  # (B, F, F)
        return gram[:, self.rows, self.cols]


def _pairs(f: int, self_interaction: bool) -> int:
    return f * (f + 1) // 2 if self_interaction else f * (f - 1) // 2


@register_block
class DotProduct(Block):
    spec = BlockSpec(
        name="dot",
        doc="Pairwise dot products of the embedding rows: (B, F, E) -> (B, F(F-1)/2) "
            "(F(F+1)/2 with self_interaction).",
        params=(HyperParam("self_interaction", "bool", False, "include each row with itself"),),
        input_ranks=(2,),
        tags=("interaction", "sparse"),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        require_rank(inputs, 2, "dot")
        pairs = _pairs(inputs[0][0], p["self_interaction"])
        if pairs < 1:
            raise ShapeError("inputs", f"dot needs at least 2 rows, got {inputs[0][0]}")
        return (pairs,)

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        f, e = inputs[0]
        return 2 * f * f * e  # the full Gram matrix is computed

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return 0

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return DotProductModule(inputs[0][0], p["self_interaction"])
