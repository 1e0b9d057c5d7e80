"""DCN-v2 cross layers, full rank or low rank, over a 2-D (or flattened 3-D) input."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankitect.blocks.base import Block, ShapeError, WeightAxes, flat_size
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape


class CrossModule(nn.Module):
    """(B, D) -> (B, D): x_{l+1} = x_0 * (W_l x_l + b_l) + x_l, W_l = U_l V_l when low rank."""

    def __init__(self, dim: int, layers: int, rank: int) -> None:
        super().__init__()
        if rank == 0:
            self.mix = nn.ModuleList(nn.Linear(dim, dim) for _ in range(layers))
        else:
            self.mix = nn.ModuleList(
                nn.Sequential(nn.Linear(dim, rank, bias=False), nn.Linear(rank, dim))
                for _ in range(layers))

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        x0 = x.flatten(1)
        xl = x0
        for mix in self.mix:
            xl = x0 * mix(xl) + xl
        return xl


def _dim(inputs: list[Shape]) -> int:
    d = flat_size(inputs[0])
    if d == 0:
        raise ShapeError("inputs", "dcn input has no features")
    return d


@register_block
class Cross(Block):
    spec = BlockSpec(
        name="dcn",
        doc="DCN-v2 cross network: x_{l+1} = x_0 * (W x_l + b) + x_l for `layers` layers; "
            "(B, D) -> (B, D). rank 0 = full W (D x D); rank r > 0 = W = U V with U: D x r.",
        params=(
            HyperParam("layers", "int", 2, "number of cross layers", low=1, high=8),
            HyperParam("rank", "int", 0, "0 for full rank, else the low rank r", low=0, high=1024),
        ),
        tags=("interaction", "dense"),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        return (_dim(inputs),)

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        d, r = _dim(inputs), p["rank"]
        matmul = 2 * d * d if r == 0 else 4 * d * r
        return p["layers"] * (matmul + 3 * d)  # + bias, * x0, + x_l

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        d, r = _dim(inputs), p["rank"]
        per_layer = d * d + d if r == 0 else 2 * d * r + d
        return p["layers"] * per_layer

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return CrossModule(_dim(inputs), p["layers"], p["rank"])

    def weight_axes(self, inputs: list[Shape], p: dict[str, Any]) -> WeightAxes:
        x = (0, "features")
        out: WeightAxes = {}
        for i in range(p["layers"]):
            if p["rank"] == 0:
                out |= {f"mix.{i}.weight": {0: x, 1: x}, f"mix.{i}.bias": {0: x}}
            else:
                out |= {f"mix.{i}.0.weight": {1: x}, f"mix.{i}.1.weight": {0: x}, f"mix.{i}.1.bias": {0: x}}
        return out
