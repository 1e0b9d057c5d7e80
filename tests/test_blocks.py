"""Every block: output shape, gradient flow, parameters, and declared FLOPs against an audit."""

from __future__ import annotations

import math
from typing import Any

import pytest
import torch

from rankitect.blocks import block_names, get_block, list_blocks
from rankitect.blocks.embedding import EMBEDDING
from rankitect.blocks.spec import HyperParam
from tests.flop_audit import audit_forward
from tests.helpers import random_kjt, toy_schema

BATCH = 4

# (block, per-example input shapes, given params)
CASES: list[tuple[str, list[tuple[int, ...]], dict[str, Any]]] = [
    ("mlp", [(12,)], {"widths": [16, 8]}),
    ("mlp", [(5, 4)], {"widths": [7, 3, 1], "activation": "gelu", "last_activation": False}),
    ("fc", [(12,)], {"width": 9, "activation": "sigmoid"}),
    ("fc", [(3, 4)], {"width": 1, "activation": "none"}),
    ("dot", [(6, 4)], {}),
    ("dot", [(6, 4)], {"self_interaction": True}),
    ("dcn", [(10,)], {"layers": 3, "rank": 0}),
    ("dcn", [(10,)], {"layers": 2, "rank": 3}),
    ("dcn", [(4, 5)], {"layers": 1}),
    ("efc", [(6, 4)], {"out_rows": 3}),
    ("fm", [(6, 4)], {}),
    ("fm", [(6, 4)], {"reduce": False}),
    ("attention", [(6, 4)], {"heads": 2, "head_dim": 3}),
    ("attention", [(6, 4)], {"heads": 1, "head_dim": 5, "residual": False}),
    ("gating", [(7,)], {}),
    ("gating", [(7,), (5,)], {}),
    ("sum", [(6, 4), (6, 4), (6, 4)], {}),
    ("concat", [(6, 4), (4,)], {"mode": "rows"}),
    ("concat", [(6, 4), (4,), (3,)], {"mode": "flat"}),
]


def _case_id(case: tuple) -> str:
    return f"{case[0]}-{case[1]}-{case[2]}"


def _run(name: str, shapes: list[tuple[int, ...]], given: dict[str, Any]):
    block = get_block(name)
    params, problems = block.spec.resolve(given)
    assert problems == []
    module = block.build(shapes, params)
    inputs = [torch.randn(BATCH, *s, requires_grad=True) for s in shapes]
    return block, params, module, inputs


def test_every_block_has_a_case() -> None:
    covered = {c[0] for c in CASES} | {EMBEDDING}
    assert set(block_names()) - covered == set()


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_output_shape_matches_declaration(case) -> None:
    block, params, module, inputs = _run(*case)
    out = module(*inputs)
    assert tuple(out.shape) == (BATCH, *block.output_shape(case[1], params))


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_gradients_reach_inputs_and_parameters(case) -> None:
    _, _, module, inputs = _run(*case)
    module(*inputs).square().sum().backward()
    for i, x in enumerate(inputs):
        assert x.grad is not None and x.grad.abs().sum() > 0, f"input {i} got no gradient"
    for name, p in module.named_parameters():
        assert p.grad is not None and p.grad.abs().sum() > 0, f"parameter {name} got no gradient"


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_declared_params_match_module(case) -> None:
    block, params, module, _ = _run(*case)
    assert block.num_params(case[1], params) == sum(p.numel() for p in module.parameters())


@pytest.mark.parametrize("case", CASES, ids=_case_id)
def test_declared_flops_match_an_audited_forward(case) -> None:
    block, params, module, inputs = _run(*case)
    audit = audit_forward(module, inputs, BATCH)
    declared = block.flops(case[1], params)
    assert declared == pytest.approx(audit.total, rel=0.02), (
        f"declared {declared}, audited matmul {audit.matmul} + elementwise {audit.elementwise}")


@pytest.mark.parametrize("pooling", ["sum", "mean"])
def test_embedding_block_shape_params_and_pooling_flops(pooling: str) -> None:
    schema = toy_schema(dim=8)
    block = get_block(EMBEDDING)
    params, problems = block.spec.resolve({"pooling": pooling})
    assert problems == []
    module = block.build_for(schema, params)
    kjt = random_kjt(schema, BATCH, list_len=3)
    out = module(kjt)
    assert tuple(out.shape) == (BATCH, *block.output_shape_for(schema, params))
    assert block.num_params_for(schema, params) == sum(p.numel() for p in module.parameters())
    # By hand: the list column pools 3 ids (2 adds per element); mean divides every column.
    e = 8
    expected = 2 * e + (schema.num_sparse * e if pooling == "mean" else 0)
    assert block.flops_for(schema, params) == expected
    # The pooled row equals the pooled table rows of its ids.
    table = module.ebc.embedding_bags["t_tags"].weight
    ids = kjt["tags"].values()[:3]
    pooled = table[ids].sum(0) / (3 if pooling == "mean" else 1)
    torch.testing.assert_close(out[0, -1], pooled)


def test_embedding_dim_zero_takes_schema_dim() -> None:
    schema = toy_schema(dim=6)
    block = get_block(EMBEDDING)
    params, _ = block.spec.resolve({})
    assert block.output_shape_for(schema, params) == (schema.num_sparse, 6)


def test_registry_lists_plain_data_specs() -> None:
    specs = {s.name: s.to_dict() for s in list_blocks()}
    for required in ("mlp", "fc", "dot", "dcn", "efc", "fm", "attention", "gating", "sum", "concat",
                     EMBEDDING):
        assert required in specs
    dcn = specs["dcn"]
    assert {p["name"] for p in dcn["params"]} == {"layers", "rank"}
    layers = next(p for p in dcn["params"] if p["name"] == "layers")
    assert (layers["kind"], layers["low"], layers["high"]) == ("int", 1, 8)


def test_unknown_block_error_lists_valid_names() -> None:
    with pytest.raises(ValueError, match="unknown block 'nope'.*'dcn'"):
        get_block("nope")


@pytest.mark.parametrize(
    "param, value, message",
    [
        (HyperParam("n", "int", 1, "", low=1, high=4), 5, r"in \[1, 4\], got 5"),
        (HyperParam("n", "int", 1, "", low=1, high=4), 2.5, "must be an integer"),
        (HyperParam("n", "int", 1, "", low=1, high=4), True, "must be an integer"),
        (HyperParam("x", "float", 0.5, "", low=0, high=1), float("nan"), "finite number"),
        (HyperParam("b", "bool", True, ""), 1, "true or false"),
        (HyperParam("c", "choice", "a", "", choices=("a", "b")), "z", r"one of \['a', 'b'\]"),
        (HyperParam("w", "int_list", (4,), "", low=1, high=9, min_len=1, max_len=2), [1, 2, 3], "1..2 values"),
        (HyperParam("w", "int_list", (4,), "", low=1, high=9, min_len=1, max_len=2), [0], r"in \[1, 9\]"),
    ],
)
def test_hyper_parameter_checks_name_rule_and_value(param: HyperParam, value: Any, message: str) -> None:
    with pytest.raises(ValueError, match=message):
        param.check(value)


def test_resolve_reports_unknown_and_bad_params() -> None:
    params, problems = get_block("dcn").spec.resolve({"layers": 99, "depth": 2})
    fields = dict(problems)
    assert "params.depth" in fields and "unknown hyper-parameter" in fields["params.depth"]
    assert "params.layers" in fields and "got 99" in fields["params.layers"]


@pytest.mark.parametrize("name, inputs, params", [
    ("fc", [(7,)], {"width": 5}), ("fc", [(3, 4)], {"width": 5}), ("mlp", [(7,)], {"widths": [6, 5]}),
    ("dcn", [(7,)], {"layers": 2, "rank": 0}), ("dcn", [(7,)], {"layers": 2, "rank": 3}),
    ("efc", [(4, 6)], {"out_rows": 3}), ("gating", [(7,)], {}), ("gating", [(7,), (5,)], {}),
    ("attention", [(4, 8)], {"heads": 2, "head_dim": 4}),
])
def test_weight_axes_are_exactly_the_axes_that_follow_an_inputs_size(name: str, inputs: list, params: dict) -> None:
    """Weight sharing slices a declared axis by the input's layout and any other axis by its
    leading entries: an axis that grows with an input's rows (3-D) or features (2-D) must be
    declared, with that input's size, and no other."""
    block = get_block(name)
    p, problems = block.spec.resolve(params)
    assert not problems
    axes = block.weight_axes(inputs, p)
    built = dict(block.build(inputs, p).named_parameters())
    grown = dict(block.build([(s[0] + 1, *s[1:]) for s in inputs], p).named_parameters())
    assert set(axes) <= set(built)
    for param, tensor in built.items():
        for axis in range(tensor.dim()):
            declared = axes.get(param, {}).get(axis)
            assert (grown[param].shape[axis] != tensor.shape[axis]) == (declared is not None), (param, axis)
            if declared is not None:
                k, unit = declared
                size = inputs[k][0] if unit == "rows" else math.prod(inputs[k])
                assert tensor.shape[axis] == size, (param, axis)
