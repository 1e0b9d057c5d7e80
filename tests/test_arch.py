"""Architecture JSON, validation errors that name node and field, baselines, whole-model cost."""

from __future__ import annotations

import json

import pytest
import torch

from rankitect.arch import Architecture, Node, validate
from rankitect.cost import cost_of
from rankitect.errors import ArchitectureError
from rankitect.model import build_model
from search_spaces import BASELINES, baseline, resolve_architecture
from tests.flop_audit import audit_forward
from tests.helpers import random_kjt, toy_schema


def _fields(err: pytest.ExceptionInfo) -> list[tuple[str, str]]:
    return [(node, field) for node, field, _ in err.value.problems]


def _logit(src: str) -> Node:
    return Node("logit", "fc", (src,), {"width": 1, "activation": "none"})


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_json_round_trips(name: str, tmp_path) -> None:
    arch = baseline(name, toy_schema())
    path = tmp_path / "a.json"
    arch.save(path)
    loaded = Architecture.load(path)
    assert loaded.to_dict() == arch.to_dict()
    raw = json.loads(path.read_text())
    assert {"id", "block", "inputs", "params"} <= set(raw["nodes"][0])
    assert resolve_architecture(str(path), toy_schema()).to_dict() == arch.to_dict()


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baseline_cost_matches_audited_forward(name: str) -> None:
    schema = toy_schema()
    model = build_model(baseline(name, schema), schema)
    cost = cost_of(model.validated)
    dense, kjt = torch.randn(3, schema.num_dense), random_kjt(schema, 3)
    embedded = model.embedding(kjt)
    audit = audit_forward(model.interact, [dense, embedded], 3)
    assert cost.flops - cost.by_node["sparse"] == pytest.approx(audit.total, rel=0.02)
    assert cost.params == sum(p.numel() for p in model.parameters())
    assert model(dense, kjt).shape == (3,)


@pytest.mark.parametrize("name", sorted(BASELINES))
def test_baselines_adapt_to_a_schema_without_dense_columns(name: str) -> None:
    schema = toy_schema(num_dense=0)
    model = build_model(baseline(name, schema), schema)
    assert model(torch.zeros(2, 0), random_kjt(schema, 2)).shape == (2,)


def test_unknown_block_names_node_and_field() -> None:
    arch = Architecture((Node("x", "warp_drive", ("dense",)), _logit("x")))
    with pytest.raises(ArchitectureError, match="unknown block 'warp_drive'") as err:
        validate(arch, toy_schema())
    assert ("x", "block") in _fields(err)


def test_cycle_is_reported_with_its_path() -> None:
    arch = Architecture((
        Node("a", "fc", ("b",), {"width": 4}),
        Node("b", "fc", ("a",), {"width": 4}),
        _logit("b"),
    ))
    with pytest.raises(ArchitectureError, match="cycle: a -> b -> a|cycle: b -> a -> b") as err:
        validate(arch, toy_schema())
    assert _fields(err)[0][1] == "inputs"


def test_shape_mismatch_names_node() -> None:
    arch = Architecture((Node("d", "dot", ("dense",)), _logit("d")))
    with pytest.raises(ArchitectureError, match="takes inputs of rank") as err:
        validate(arch, toy_schema())
    assert ("d", "inputs") in _fields(err)
    arch = Architecture((Node("s", "sum", ("dense", "sparse")), _logit("s")))
    with pytest.raises(ArchitectureError, match="one shape") as err:
        validate(arch, toy_schema())
    assert ("s", "inputs") in _fields(err)


def test_value_out_of_range_names_the_param() -> None:
    arch = Architecture((Node("x", "dcn", ("dense",), {"layers": 0}), _logit("x")))
    with pytest.raises(ArchitectureError, match=r"in \[1, 8\], got 0") as err:
        validate(arch, toy_schema())
    assert ("x", "params.layers") in _fields(err)


def test_every_problem_is_reported_at_once() -> None:
    arch = Architecture((
        Node("x", "dcn", ("dense",), {"layers": 99}),
        Node("y", "mlp", ("nowhere",)),
        Node("x", "fc", ("dense",)),
        _logit("x"),
    ), embedding={"dim": -1})
    with pytest.raises(ArchitectureError) as err:
        validate(arch, toy_schema())
    fields = _fields(err)
    assert ("x", "params.layers") in fields
    assert ("y", "inputs") in fields
    assert ("x", "id") in fields
    assert ("embedding", "embedding.dim") in fields


def test_output_must_be_one_logit_and_every_node_must_feed_it() -> None:
    arch = Architecture((Node("x", "fc", ("dense",), {"width": 3}),))
    with pytest.raises(ArchitectureError, match="one logit") as err:
        validate(arch, toy_schema())
    assert ("x", "output") in _fields(err)
    arch = Architecture((Node("dead", "fc", ("dense",)), _logit("dense")))
    with pytest.raises(ArchitectureError, match="does not feed the output") as err:
        validate(arch, toy_schema())
    assert ("dead", "id") in _fields(err)


def test_reserved_ids_and_inputs_without_columns() -> None:
    arch = Architecture((Node("dense", "fc", ("sparse",)), _logit("dense")))
    with pytest.raises(ArchitectureError, match="reserved"):
        validate(arch, toy_schema())
    arch = Architecture((_logit("dense"),))
    with pytest.raises(ArchitectureError, match="has no columns") as err:
        validate(arch, toy_schema(num_dense=0))
    assert ("logit", "inputs") in _fields(err)


def test_embedding_is_not_a_node() -> None:
    arch = Architecture((Node("e", "embedding", ("sparse",)), _logit("e")))
    with pytest.raises(ArchitectureError, match="'embedding' entry") as err:
        validate(arch, toy_schema())
    assert ("e", "block") in _fields(err)


@pytest.mark.parametrize(
    "raw, field",
    [
        ([], ""),
        ({"nodes": []}, "nodes"),
        ({"nodes": [{"id": "a", "block": "fc", "inputs": "dense"}]}, "inputs"),
        ({"nodes": [{"id": "a", "block": "fc", "inputs": ["dense"], "params": 3}]}, "params"),
        ({"nodes": [{"id": "a", "block": "fc", "inputs": ["dense"], "colour": 1}]}, "colour"),
        ({"nodes": [{"block": "fc", "inputs": ["dense"]}]}, "id"),
        ({"nodes": [{"id": "a", "block": "fc", "inputs": ["dense"]}], "extra": 1}, "extra"),
    ],
)
def test_malformed_json_names_the_field(raw, field: str) -> None:
    with pytest.raises(ArchitectureError) as err:
        Architecture.from_dict(raw)
    assert field in [f for _, f in _fields(err)]


def test_invalid_json_text() -> None:
    with pytest.raises(ArchitectureError, match="not valid JSON"):
        Architecture.from_json("{nodes: ")


def test_embedding_dim_override_changes_shapes() -> None:
    schema = toy_schema(dim=8)
    arch = baseline("deepfm", schema)
    wide = Architecture(arch.nodes, embedding={"dim": 12}, name=arch.name)
    assert validate(wide, schema).embedding_dim == 12
    assert cost_of(wide, schema).embedding_params == 12 * sum(c.hash_size for c in schema.sparse)


@pytest.mark.parametrize("inputs", [(), ("sparse", "sparse")])
def test_wrong_input_count_is_a_problem_not_a_crash(inputs) -> None:
    """A block is never asked for the shape of inputs it does not take (found by fuzzing the
    gRPC BlockRegistry: attention with no input raised IndexError)."""
    arch = Architecture((Node("attn", "attention", inputs), _logit("attn")))
    with pytest.raises(ArchitectureError) as err:
        validate(arch, toy_schema())
    assert ("attn", "inputs") in _fields(err)
