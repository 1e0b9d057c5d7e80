"""Architecture, schema and block specs <-> rankitect.v1 messages: exact round trips."""

from __future__ import annotations

import json
import math

import grpc
import pytest

from launcher.rpc import convert
from launcher.rpc.errors import Refused
from launcher.rpc.gen import architecture_pb2 as apb
from launcher.rpc.gen import registry_pb2 as rpb
from rankitect.arch.graph import Architecture
from rankitect.blocks import list_blocks
from rankitect.blocks.spec import PARAM_KINDS
from tests.rpc_helpers import EXAMPLE_ARCHS, baseline_archs, schemas


def _wire(msg):
    """Through bytes, as the server sees it."""
    return type(msg).FromString(msg.SerializeToString())


def _cases():
    for schema_name, schema in schemas().items():
        for name, arch in baseline_archs(schema).items():
            yield f"{name}-{schema_name}", arch.to_dict()
    for path in EXAMPLE_ARCHS:
        yield path.name, json.loads(path.read_text())


@pytest.mark.parametrize("name,raw", list(_cases()), ids=[c[0] for c in _cases()])
def test_architecture_round_trip_equals_json(name, raw) -> None:
    arch = Architecture.from_dict(raw)
    back = convert.architecture_from_proto(_wire(convert.architecture_to_proto(arch)))
    assert back.to_dict() == arch.to_dict()
    assert json.loads(back.to_json()) == json.loads(arch.to_json())
    # the JSON form itself converts alike, and typed values keep their kind
    assert convert.architecture_to_proto(raw) == convert.architecture_to_proto(arch)
    for node, out in zip(arch.nodes, back.nodes):
        for key, value in node.params.items():
            assert type(out.params[key]) is type(list(value) if isinstance(value, tuple) else value)


def test_example_archs_exist() -> None:
    assert EXAMPLE_ARCHS, "examples/archs/*.json"


@pytest.mark.parametrize("value", [0, -3, 2**63 - 1, 1.0, 0.25, True, False, "rows", [], [1, 2, 3],
                                   None, [1.5, 2], [True], {"a": [1, "x"]}, 2**70, "", [[1]]])
def test_param_values_round_trip(value) -> None:
    msg = _wire(convert.value_to_proto(value))
    back = convert.value_from_proto(msg, "v")
    assert back == value if not isinstance(value, int) or abs(value) < 2**63 else back == float(value)
    assert type(back) is type(value) or msg.WhichOneof("kind") == "json_value"


def test_non_json_value_is_refused_on_the_client() -> None:
    with pytest.raises(ValueError, match="not a JSON value"):
        convert.value_to_proto(object())


def test_unset_value_names_its_field() -> None:
    msg = apb.Architecture(nodes=[apb.Node(id="a", block="fc", inputs=["dense"])])
    msg.nodes[0].params["width"].SetInParent()
    with pytest.raises(Refused) as info:
        convert.architecture_from_proto(msg)
    assert info.value.code == grpc.StatusCode.INVALID_ARGUMENT
    assert info.value.details.startswith("architecture.nodes[0].params.width: no value set")


@pytest.mark.parametrize("schema_name", list(schemas()))
def test_schema_round_trip(schema_name) -> None:
    schema = schemas()[schema_name]
    assert convert.schema_from_proto(_wire(convert.schema_to_proto(schema))) == schema


def test_schema_defaults_and_field_paths() -> None:
    msg = apb.Schema(sparse=[apb.SparseColumn(name="s", hash_size=10)], dense=[apb.DenseColumn(name="d")])
    schema = convert.schema_from_proto(msg)
    assert (schema.label, schema.embedding_dim, schema.dense[0].std, schema.sparse[0].avg_len,
            schema.sparse[0].hashing) == ("label", 16, 1.0, 1.0, "fnv1a64")
    bad = [(apb.Schema(sparse=[apb.SparseColumn(name="s", hash_size=1)]), "schema.sparse[0].hash_size"),
           (apb.Schema(sparse=[apb.SparseColumn(name="s", hash_size=9, avg_len=math.nan)]),
            "schema.sparse[0].avg_len"),
           (apb.Schema(dense=[apb.DenseColumn(name="d", std=0)]), "schema.dense[0].std"),
           (apb.Schema(dense=[apb.DenseColumn(name="")]), "schema.dense[0].name"),
           (apb.Schema(dense=[apb.DenseColumn(name="d", transform="exp")]), "schema.dense[0].transform"),
           (apb.Schema(embedding_dim=-1), "schema.embedding_dim"),
           (apb.Schema(dense=[apb.DenseColumn(name="x")], sparse=[apb.SparseColumn(name="x", hash_size=5)]),
            "schema:")]
    for msg, field in bad:
        with pytest.raises(Refused) as info:
            convert.schema_from_proto(msg)
        assert info.value.details.startswith(field), info.value.details


def test_block_specs_round_trip() -> None:
    for spec in list_blocks():
        msg = _wire(convert.block_to_proto(spec))
        assert convert.block_to_dict(msg) == spec.to_dict()
        for p, out in zip(spec.params, msg.params):
            assert convert.kind_from_proto(out.kind) == p.kind
            assert out.HasField("low") == (p.low is not None)


def test_every_param_kind_has_an_enum_value() -> None:
    names = {rpb.ParamKind.Name(v) for v in rpb.ParamKind.values()} - {"PARAM_KIND_UNSPECIFIED"}
    assert names == {f"PARAM_KIND_{k.upper()}" for k in PARAM_KINDS}
