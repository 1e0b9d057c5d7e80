"""Multi-head self-attention over the F embedding rows (AutoInt's interacting layer)."""

from __future__ import annotations

import math
from typing import Any

import torch
from torch import nn

from rankitect.blocks.base import Block, require_rank
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape


class SelfAttentionModule(nn.Module):
    """(B, F, E) -> (B, F, H*d): softmax(Q K^T / sqrt(d)) V per head, + x W_res, then ReLU."""

    def __init__(self, dim: int, heads: int, head_dim: int, residual: bool) -> None:
        super().__init__()
        inner = heads * head_dim
        self.heads, self.head_dim = heads, head_dim
        self.query = nn.Linear(dim, inner, bias=False)
        self.key = nn.Linear(dim, inner, bias=False)
        self.value = nn.Linear(dim, inner, bias=False)
        self.residual = nn.Linear(dim, inner, bias=False) if residual else None
        self.scale = 1.0 / math.sqrt(head_dim)

    def _split(self, t: torch.Tensor) -> torch.Tensor:
        b, f, _ = t.shape
        return t.view(b, f, self.heads, self.head_dim).transpose(1, 2)  # (B, H, F, d)

    def forward(self, x: torch.Tensor) -> torch.Tensor:
        b, f, _ = x.shape
        q, k, v = self._split(self.query(x)), self._split(self.key(x)), self._split(self.value(x))
        weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * self.scale, dim=-1)
        out = torch.matmul(weights, v).transpose(1, 2).reshape(b, f, -1)  # (B, F, H*d)
        if self.residual is not None:
            out = out + self.residual(x)
        return torch.relu(out)


@register_block
class SelfAttention(Block):
    spec = BlockSpec(
        name="attention",
        doc="AutoInt interacting layer: multi-head self-attention across the embedding rows with "
            "a projected residual and ReLU. (B, F, E) -> (B, F, heads*head_dim).",
        params=(
            HyperParam("heads", "int", 2, "attention heads", low=1, high=16),
            HyperParam("head_dim", "int", 16, "width of each head", low=1, high=256),
            HyperParam("residual", "bool", True, "add a linear projection of the input"),
        ),
        input_ranks=(2,),
        tags=("interaction", "sparse"),
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        require_rank(inputs, 2, "attention")
        return (inputs[0][0], p["heads"] * p["head_dim"])

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        f, e = inputs[0]
        h, inner = p["heads"], p["heads"] * p["head_dim"]
        projections = 3 * 2 * f * e * inner
        scores = 2 * f * f * inner + h * f * f  # Q K^T, then the scale
        softmax = 3 * h * f * f  # exp, sum, divide
        mix = 2 * f * f * inner
        residual = 2 * f * e * inner + f * inner if p["residual"] else 0
        return projections + scores + softmax + mix + residual + f * inner  # + ReLU

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        e, inner = inputs[0][1], p["heads"] * p["head_dim"]
        return (4 if p["residual"] else 3) * e * inner

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return SelfAttentionModule(inputs[0][1], p["heads"], p["head_dim"], p["residual"])
