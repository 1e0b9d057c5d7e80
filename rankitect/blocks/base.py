"""The contract of a block: shape, cost and module, declared side by side.

FLOPs are per example and counted one way everywhere: a multiply-add is 2 FLOPs; every
elementwise operation (bias add, activation, product, sum, softmax step) is 1 FLOP per output
element. Parameters are counted in full (weights and biases).
"""

from __future__ import annotations

import abc
from typing import Any, ClassVar

from torch import nn

from rankitect.blocks.spec import BlockSpec, Shape

WeightAxes = dict[str, dict[int, tuple[int, str]]]


class ShapeError(ValueError):
    """Inputs a block cannot take; `field` is "inputs" or "params.<name>"."""

    def __init__(self, field: str, message: str) -> None:
        self.field = field
        super().__init__(message)


class Block(abc.ABC):
    """A registered building block. Stateless: every method takes the input shapes and the
    resolved hyper-parameters (`BlockSpec.resolve`), and `build` returns a fresh module whose
    `forward(*inputs)` maps `[B, *shape]` tensors to `[B, *output_shape]`.
    """

    spec: ClassVar[BlockSpec]

    @abc.abstractmethod
    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        """Per-example output shape; ShapeError when the inputs do not fit."""

    @abc.abstractmethod
    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        """FLOPs per example of one forward pass."""

    @abc.abstractmethod
    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        """Number of trainable parameters."""

    @abc.abstractmethod
    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        """A new module for these inputs."""

    def weight_axes(self, inputs: list[Shape], p: dict[str, Any]) -> WeightAxes:
        """The axes of the built module's parameters that run over an input: parameter name ->
        {axis: (input index, "features" | "rows")}; "features" indexes the input flattened to
        (B, n), "rows" the F axis of a (B, F, E) input. Every other axis belongs to the block
        itself (a width, a rank): the same block at a smaller size keeps the leading entries.
        Weight sharing (rankitect.elastic) slices a larger block's weights by this. Default:
        no parameter reads an input axis."""
        return {}


def flat_size(shape: Shape) -> int:
    size = 1
    for d in shape:
        size *= d
    return size


def require_rank(inputs: list[Shape], rank: int, block: str) -> None:
    for i, s in enumerate(inputs):
        if len(s) != rank:
            kind = "2-D [B, D]" if rank == 1 else "3-D [B, F, E]"
            raise ShapeError("inputs", f"{block} needs {kind} inputs; input {i} has per-example "
                                       f"shape {list(s)}")
