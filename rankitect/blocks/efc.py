"""EFC: a linear map over the embedding-count axis, (B, F, E) -> (B, F', E)."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankitect.blocks.base import Block, WeightAxes, require_rank
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape


class EFCModule(nn.Module):
    """(B, F, E) -> (B, F', E): y[:, o, :] = sum_f W[o, f] x[:, f, :] + b[o]."""

    def __init__(self, in_rows: int, out_rows: int) -> None:
        super().__init__()
        self.linear = nn.Linear(in_rows, out_rows)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.linear(x.transpose(1, 2)).transpose(1, 2)


@register_block
class EFC(Block):
    spec = BlockSpec(
        name="efc",
        doc="Embedded fully connected: mixes the F embedding rows into F' rows, "
            "(B, F, E) -> (B, F', E), with a bias per output row.",
        params=(HyperParam("out_rows", "int", 16, "F', the number of output rows", low=1, high=1024),),
        input_ranks=(2,),
        tags=("interaction", "sparse"),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        require_rank(inputs, 2, "efc")
        return (p["out_rows"], inputs[0][1])

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        f, e = inputs[0]
        return 2 * f * p["out_rows"] * e + p["out_rows"] * e

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return inputs[0][0] * p["out_rows"] + p["out_rows"]

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return EFCModule(inputs[0][0], p["out_rows"])

    def weight_axes(self, inputs: list[Shape], p: dict[str, Any]) -> WeightAxes:
        return {"linear.weight": {1: (0, "rows")}}
