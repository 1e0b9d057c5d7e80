"""Sum and concat: joining the outputs of several nodes."""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankitect.blocks.base import Block, ShapeError, flat_size
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape


class SumModule(nn.Module):
    """k inputs of one shape (B, *S) -> (B, *S)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        out = xs[0]
        for x in xs[1:]:
            out = out + x
        return out


@register_block
class Sum(Block):
    spec = BlockSpec(
        name="sum",
        doc="Elementwise sum of 2..16 inputs of the same shape.",
        min_inputs=2,
        max_inputs=16,
        tags=("dense", "sparse"),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        if any(s != inputs[0] for s in inputs):
            raise ShapeError("inputs", f"sum needs inputs of one shape, got {[list(s) for s in inputs]}")
        return inputs[0]

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return (len(inputs) - 1) * flat_size(inputs[0])

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return 0

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return SumModule()


class FlatConcatModule(nn.Module):
    """Inputs flattened to (B, n_i) and joined: (B, sum n_i)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.flatten(1) for x in xs], dim=1)


class RowConcatModule(nn.Module):
    """2-D inputs (B, E) become one row each; 3-D inputs (B, F_i, E) keep theirs: (B, sum rows, E)."""

    def forward(self, *xs: torch.Tensor) -> torch.Tensor:
        return torch.cat([x.unsqueeze(1) if x.dim() == 2 else x for x in xs], dim=1)


def _row_dim(inputs: list[Shape]) -> int:
    dims = {s[-1] for s in inputs}
    if len(dims) != 1:
        raise ShapeError("inputs", "concat mode 'rows' needs every input to end in the same "
                                   f"width E, got {[list(s) for s in inputs]}")
    return dims.pop()


@register_block
class Concat(Block):
    spec = BlockSpec(
        name="concat",
        doc="Concatenate inputs. mode 'flat': flatten each, (B, sum n_i). mode 'rows': stack "
            "2-D (B, E) inputs as rows next to 3-D (B, F_i, E) ones, (B, sum F_i, E).",
        params=(HyperParam("mode", "choice", "flat", "how inputs are joined",
                           choices=("flat", "rows")),),
        min_inputs=1,
        max_inputs=16,
        tags=("dense", "sparse"),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        if p["mode"] == "flat":
            return (sum(flat_size(s) for s in inputs),)
        e = _row_dim(inputs)
        return (sum(1 if len(s) == 1 else s[0] for s in inputs), e)

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return 0

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return 0

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return FlatConcatModule() if p["mode"] == "flat" else RowConcatModule()
