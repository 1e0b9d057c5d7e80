"""Sigmoid gating: x * sigmoid(W g + b), with g = x or a second input."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankitect.blocks.base import Block, ShapeError, WeightAxes, flat_size
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, Shape


class GatingModule(nn.Module):
    """x (B, Dx), g (B, Dg) -> (B, Dx): x * sigmoid(W g + b)."""

    def __init__(self, x_dim: int, gate_dim: int) -> None:
        super().__init__()
        self.gate = nn.Linear(gate_dim, x_dim)

    def forward(self, x: torch.Tensor, g: torch.Tensor | None = None) -> torch.Tensor:
        x = x.flatten(1)
        g = x if g is None else g.flatten(1)
        return x * torch.sigmoid(self.gate(g))


def _dims(inputs: list[Shape]) -> tuple[int, int]:
    dx = flat_size(inputs[0])
    dg = flat_size(inputs[1]) if len(inputs) > 1 else dx
    if dx == 0 or dg == 0:
        raise ShapeError("inputs", "gating inputs must have at least one feature")
    return dx, dg


@register_block
class Gating(Block):
    spec = BlockSpec(
        name="gating",
        doc="Sigmoid gating: x * sigmoid(W g + b). One input: g = x. Two inputs: (x, g). "
            "(B, Dx) -> (B, Dx); 3-D inputs are flattened.",
        min_inputs=1,
        max_inputs=2,
        tags=("dense", "interaction"),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        return (_dims(inputs)[0],)

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        dx, dg = _dims(inputs)
        return 2 * dg * dx + 3 * dx  # matmul, bias, sigmoid, product

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        dx, dg = _dims(inputs)
        return dg * dx + dx

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return GatingModule(*_dims(inputs))

    def weight_axes(self, inputs: list[Shape], p: dict[str, Any]) -> WeightAxes:
        x, g = (0, "features"), (len(inputs) - 1, "features")
        return {"gate.weight": {0: x, 1: g}, "gate.bias": {0: x}}
