"""Factorization machine second-order term over the F embedding rows."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankitect.blocks.base import Block, require_rank
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape


class FMModule(nn.Module):
    """(B, F, E) -> (B, 1) or (B, E): 0.5 * ((sum_f x_f)^2 - sum_f x_f^2), summed over E if reduce."""

    def __init__(self, reduce: bool) -> None:
        super().__init__()
        self.reduce = reduce

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        total = x.sum(dim=1)
        out = 0.5 * (total * total - (x * x).sum(dim=1))  # (B, E)
        return out.sum(dim=1, keepdim=True) if self.reduce else out


@register_block
class FM(Block):
    spec = BlockSpec(
        name="fm",
        doc="FM interaction: sum over pairs f<g of <x_f, x_g>, computed as "
            "0.5*((sum x)^2 - sum x^2). (B, F, E) -> (B, 1), or (B, E) with reduce=false.",
        params=(HyperParam("reduce", "bool", True, "sum over the embedding axis to one value"),),
        input_ranks=(2,),
        tags=("interaction", "sparse"),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        require_rank(inputs, 2, "fm")
        return (1,) if p["reduce"] else (inputs[0][1],)

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        f, e = inputs[0]
        sums = (f - 1) * e  # sum over F
        square_of_sum = e
        sum_of_squares = f * e + (f - 1) * e
        combine = 2 * e  # subtract, * 0.5
        reduce = e - 1 if p["reduce"] else 0
        return sums + square_of_sum + sum_of_squares + combine + reduce

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return 0

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return FMModule(p["reduce"])
