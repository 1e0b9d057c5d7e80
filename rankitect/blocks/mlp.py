"""FC (one linear layer) and MLP (a stack), over a 2-D input or a flattened 3-D one."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankitect.blocks.base import Block, ShapeError, WeightAxes, flat_size
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape

ACTIVATIONS = ("relu", "gelu", "silu", "sigmoid", "tanh", "none")
_MAX_WIDTH = 16_384


def activation_module(name: str) -> nn.Module:
    return {"relu": nn.ReLU, "gelu": nn.GELU, "silu": nn.SiLU, "sigmoid": nn.Sigmoid,
            "tanh": nn.Tanh, "none": nn.Identity}[name]()


class MLPModule(nn.Module):
    """(B, *in_shape) -> (B, widths[-1]); activation after every layer but maybe the last."""

    def __init__(self, in_features: int, widths: tuple[int, ...], activation: str,
                 last_activation: bool) -> None:
        super().__init__()
        layers: list[nn.Module] = []
        prev = in_features
        for i, width in enumerate(widths):
            layers.append(nn.Linear(prev, width))
            if activation != "none" and (i < len(widths) - 1 or last_activation):
                layers.append(activation_module(activation))
            prev = width
        self.layers = nn.Sequential(*layers)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        return self.layers(x.flatten(1))


def mlp_cost(in_features: int, widths: tuple[int, ...], activation: str,
             last_activation: bool) -> tuple[int, int]:
    """(FLOPs, params) of MLPModule."""
    flops = params = 0
    prev = in_features
    for i, width in enumerate(widths):
        flops += 2 * prev * width + width  # matmul + bias
        if activation != "none" and (i < len(widths) - 1 or last_activation):
            flops += width
        params += prev * width + width
        prev = width
    return flops, params


def _in_features(inputs: list[Shape]) -> int:
    size = flat_size(inputs[0])
    if size == 0:
        raise ShapeError("inputs", "input has no features (per-example shape "
                                   f"{list(inputs[0])})")
    return size


@register_block
class MLP(Block):
    spec = BlockSpec(
        name="mlp",
        doc="Multi-layer perceptron: Linear+activation per width. (B, D) -> (B, widths[-1]); "
            "a (B, F, E) input is flattened to (B, F*E).",
        params=(
            HyperParam("widths", "int_list", (64, 32), "output width of each layer",
                       low=1, high=_MAX_WIDTH, min_len=1, max_len=8),
            HyperParam("activation", "choice", "relu", "activation between layers",
                       choices=ACTIVATIONS),
            HyperParam("last_activation", "bool", True, "apply the activation after the last layer "
                                                        "too (false for a logit)"),
        ),
        tags=("dense",),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        _in_features(inputs)
        return (p["widths"][-1],)

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return mlp_cost(_in_features(inputs), p["widths"], p["activation"], p["last_activation"])[0]

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return mlp_cost(_in_features(inputs), p["widths"], p["activation"], p["last_activation"])[1]

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return MLPModule(_in_features(inputs), p["widths"], p["activation"], p["last_activation"])

    def weight_axes(self, inputs: list[Shape], p: dict[str, Any]) -> WeightAxes:
        return {"layers.0.weight": {1: (0, "features")}}


@register_block
class FC(Block):
    spec = BlockSpec(
        name="fc",
        doc="One fully connected layer: (B, D) -> (B, width), then the activation. A (B, F, E) "
            "input is flattened.",
        params=(
            HyperParam("width", "int", 64, "output width", low=1, high=_MAX_WIDTH),
            HyperParam("activation", "choice", "relu", "activation after the layer",
                       choices=ACTIVATIONS),
        ),
        tags=("dense",),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        _in_features(inputs)
        return (p["width"],)

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return mlp_cost(_in_features(inputs), (p["width"],), p["activation"], True)[0]

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return mlp_cost(_in_features(inputs), (p["width"],), p["activation"], True)[1]

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return MLPModule(_in_features(inputs), (p["width"],), p["activation"], True)

    def weight_axes(self, inputs: list[Shape], p: dict[str, Any]) -> WeightAxes:
        return {"layers.0.weight": {1: (0, "features")}}
