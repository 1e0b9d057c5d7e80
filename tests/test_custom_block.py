"""A block defined outside the package registers, lists, validates, costs and builds like a built-in."""

from __future__ import annotations

import json
from typing import Any

import pytest
import torch
from torch import nn

from launcher.cli import main
from rankitect.arch import Architecture, Node
from rankitect.blocks import (
    Block,
    BlockSpec,
    HyperParam,
    Shape,
    ShapeError,
    register_block,
    unregister_block,
)
from rankitect.blocks.base import flat_size
from rankitect.cost import cost_of
from rankitect.errors import ArchitectureError
from rankitect.model import build_model
from tests.flop_audit import audit_forward
from tests.helpers import random_kjt, toy_schema


class ScaledProduct(nn.Module):
    def __init__(self, scale: float) -> None:
        super().__init__()
        self.scale = scale

    def forward(self, a: torch.Tensor, b: torch.Tensor) -> torch.Tensor:
        return a.flatten(1) * b.flatten(1) * self.scale


class Hadamard(Block):
    spec = BlockSpec(
        name="test_hadamard",
        doc="a * b * scale over two inputs of one size.",
        params=(HyperParam("scale", "float", 1.0, "constant factor", low=0.0, high=10.0),),
        min_inputs=2,
        max_inputs=2,
    )

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        if flat_size(inputs[0]) != flat_size(inputs[1]):
            raise ShapeError("inputs", f"sizes differ: {inputs}")
        return (flat_size(inputs[0]),)

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return 2 * flat_size(inputs[0])

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        return 0

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        return ScaledProduct(p["scale"])


@pytest.fixture
def hadamard():
    register_block(Hadamard)
    yield Hadamard
    unregister_block("test_hadamard")


def _arch(scale: Any = 2.0) -> Architecture:
    return Architecture((
        Node("a", "fc", ("dense",), {"width": 8}),
        Node("b", "fc", ("sparse",), {"width": 8}),
        Node("h", "test_hadamard", ("a", "b"), {"scale": scale}),
        Node("logit", "fc", ("h",), {"width": 1, "activation": "none"}),
    ))


def test_custom_block_is_listed_by_the_cli(hadamard, capsys) -> None:
    assert main(["blocks", "--json"]) == 0
    listed = {b["name"]: b for b in json.loads(capsys.readouterr().out)}
    assert listed["test_hadamard"]["params"][0]["name"] == "scale"


def test_custom_block_validates_builds_and_trains(hadamard) -> None:
    schema = toy_schema()
    model = build_model(_arch(), schema)
    dense, kjt = torch.randn(5, schema.num_dense), random_kjt(schema, 5)
    logits = model(dense, kjt)
    assert logits.shape == (5,)
    logits.sum().backward()
    assert model.blocks["a"].layers[0].weight.grad is not None
    cost = cost_of(_arch(), schema)
    assert cost.by_node["h"] == 16
    embedded = model.embedding(kjt)
    audit = audit_forward(model.interact, [dense, embedded], 5)
    assert cost.flops - cost.by_node["sparse"] == pytest.approx(audit.total, rel=0.02)


def test_custom_block_params_are_checked(hadamard) -> None:
    with pytest.raises(ArchitectureError) as err:
        build_model(_arch(scale=11.0), toy_schema())
    assert ("h", "params.scale") in [(n, f) for n, f, _ in err.value.problems]


def test_duplicate_name_from_another_class_is_refused(hadamard) -> None:
    class Other(Hadamard):
        pass

    with pytest.raises(ValueError, match="already registered"):
        register_block(Other)
