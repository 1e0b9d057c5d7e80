"""Converters between rankitect's objects and the rankitect.v1 messages (one place, both ways).

The JSON forms are the reference: `architecture_from_proto(architecture_to_proto(a)).to_dict()`
equals `a.to_dict()` (tests/test_rpc_convert.py checks every baseline and examples/archs), and
`block_to_dict(block_to_proto(spec))` equals `spec.to_dict()`.

`*_from_proto` functions check what the message itself can get wrong (a value with no kind
set, a schema field out of range) and raise `Refused` INVALID_ARGUMENT naming the field path;
what the architecture gets wrong is left to rankitect.arch (ArchitectureError, node and field).
rankitect modules are imported inside the functions: importing rankitect.arch loads torch,
which a client listing blocks does not need.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Mapping
from typing import TYPE_CHECKING, Any

import grpc
from google.protobuf import struct_pb2

from launcher.rpc.errors import Refused, clip, invalid_argument, show
from launcher.rpc.gen import architecture_pb2 as apb
from launcher.rpc.gen import registry_pb2 as rpb

if TYPE_CHECKING:
    from rankitect.arch.graph import Architecture
    from rankitect.arch.validate import NodeInfo
    from rankitect.blocks.spec import BlockSpec, HyperParam
    from rankitect.cost import Cost
    from rankitect.schema import Schema

INT64_MIN, INT64_MAX = -(2**63), 2**63 - 1
INT32_MIN, INT32_MAX = -(2**31), 2**31 - 1
MAX_VALUE_DEPTH = 32  # nesting of a json_value (protobuf's own limit allows about 50)
_KIND_PREFIX = "PARAM_KIND_"
_VALUE_KINDS = "int_value, float_value, bool_value, string_value, int_list or json_value"


# -- hyper-parameter values ---------------------------------------------------------------
def _is_int64(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool) and INT64_MIN <= value <= INT64_MAX


def value_to_proto(value: Any) -> apb.ParamValue:
    """A Python value of an architecture's JSON as a ParamValue (ValueError if not JSON)."""
    msg = apb.ParamValue()
    if isinstance(value, bool):
        msg.bool_value = value
    elif _is_int64(value):
        msg.int_value = value
    elif isinstance(value, float):
        msg.float_value = value
    elif isinstance(value, str):
        msg.string_value = value
    elif isinstance(value, (list, tuple)) and all(_is_int64(v) for v in value):
        msg.int_list.SetInParent()
        msg.int_list.values.extend(value)
    else:
        _json_to_value(value, msg.json_value)
    return msg


def value_from_proto(msg: apb.ParamValue, field: str) -> Any:
    """The Python value of a ParamValue; Refused INVALID_ARGUMENT if no kind is set."""
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise invalid_argument(field, f"no value set; give one of {_VALUE_KINDS}")
    if kind == "int_list":
        return list(msg.int_list.values)
    if kind == "json_value":
        return _value_to_json(msg.json_value, field)
    return getattr(msg, kind)


def clamp_int(value: Any, low: int = INT64_MIN, high: int = INT64_MAX, default: int = 0) -> int:
    """`value` as an int in [low, high] (clamped), `default` when it is no number: for stored
    values put into a message, so one bad row can never make a reply fail."""
    try:
        number = int(value)
    except (TypeError, ValueError, OverflowError):
        return default
    return min(max(number, low), high)


def clamp_int32(value: Any, default: int = 0) -> int:
    """clamp_int into an int32 field's range."""
    return clamp_int(value, INT32_MIN, INT32_MAX, default)


def _json_to_value(value: Any, out: struct_pb2.Value) -> None:
    if value is None:
        out.null_value = struct_pb2.NULL_VALUE
    elif isinstance(value, bool):
        out.bool_value = value
    elif isinstance(value, (int, float)):
        try:
            out.number_value = float(value)
        except OverflowError:
            raise ValueError(f"number too large for the wire: {show(value)}") from None
    elif isinstance(value, str):
        out.string_value = value
    elif isinstance(value, (list, tuple)):
        out.list_value.SetInParent()
        for item in value:
            _json_to_value(item, out.list_value.values.add())
    elif isinstance(value, Mapping):
        out.struct_value.SetInParent()
        for key, item in value.items():
            if not isinstance(key, str):
                raise ValueError(f"object keys must be strings, got {show(key)}")
            _json_to_value(item, out.struct_value.fields[key])
    else:
        raise ValueError(f"not a JSON value: {show(value)}")


def _value_to_json(msg: struct_pb2.Value, field: str, depth: int = 1) -> Any:
    kind = msg.WhichOneof("kind")
    if kind is None:
        raise invalid_argument(field, "json_value has no kind set")
    if kind == "null_value":
        return None
    if kind in ("list_value", "struct_value") and depth > MAX_VALUE_DEPTH:
        raise invalid_argument(field, f"json_value nested more than {MAX_VALUE_DEPTH} levels deep")
    if kind == "list_value":
        return [_value_to_json(v, f"{field}[{i}]", depth + 1) for i, v in enumerate(msg.list_value.values)]
    if kind == "struct_value":
        return {k: _value_to_json(msg.struct_value.fields[k], f"{field}.{clip(k, 40)}", depth + 1)
                for k in sorted(msg.struct_value.fields)}
    return getattr(msg, kind)


def _params_to_proto(params: Mapping[str, Any], out: Any, field: str) -> None:
    if not isinstance(params, Mapping):
        raise ValueError(f"{field}: must be a mapping, got {show(params)}")
    for key, value in params.items():
        out[str(key)].CopyFrom(value_to_proto(value))


def _params_from_proto(params: Any, field: str) -> dict[str, Any]:
    return {key: value_from_proto(params[key], f"{field}.{key}") for key in sorted(params)}


# -- architectures --------------------------------------------------------------------------
def architecture_to_proto(arch: Architecture | Mapping[str, Any]) -> apb.Architecture:
    """An Architecture (or its JSON form, which may be invalid: validation is the server's) as
    the message."""
    raw = arch.to_dict() if hasattr(arch, "to_dict") else arch
    if not isinstance(raw, Mapping):
        raise ValueError(f"an architecture must be an Architecture or a mapping, got {show(raw)}")
    msg = apb.Architecture(name=str(raw.get("name") or ""), output=str(raw.get("output") or ""))
    _params_to_proto(raw.get("embedding") or {}, msg.embedding, "embedding")
    for i, node in enumerate(raw.get("nodes") or []):
        if not isinstance(node, Mapping):
            raise ValueError(f"nodes[{i}]: must be a mapping, got {show(node)}")
        out = msg.nodes.add(id=str(node.get("id") or ""), block=str(node.get("block") or ""),
                            inputs=[str(x) for x in node.get("inputs") or []])
        _params_to_proto(node.get("params") or {}, out.params, f"nodes[{i}].params")
    return msg


def architecture_to_dict(msg: apb.Architecture, field: str = "architecture") -> dict[str, Any]:
    """The JSON form of the message (what Architecture.from_dict reads); Refused
    INVALID_ARGUMENT, before any node is looked at, for more than MAX_NODES nodes."""
    from rankitect.arch.graph import MAX_NODES

    if len(msg.nodes) > MAX_NODES:
        raise invalid_argument(f"{field}.nodes", f"{len(msg.nodes):,} nodes; an architecture has at most "
                                                 f"{MAX_NODES:,} (the server's node limit)")
    return {"name": msg.name, "embedding": _params_from_proto(msg.embedding, f"{field}.embedding"),
            "nodes": [{"id": n.id, "block": n.block, "inputs": list(n.inputs),
                       "params": _params_from_proto(n.params, f"{field}.nodes[{i}].params")}
                      for i, n in enumerate(msg.nodes)],
            "output": msg.output}


def architecture_from_proto(msg: apb.Architecture, field: str = "architecture") -> Architecture:
    """The Architecture of the message. Raises Refused for a malformed value and
    rankitect.errors.ArchitectureError (node, field) for a structural mistake."""
    from rankitect.arch.graph import Architecture

    return Architecture.from_dict(architecture_to_dict(msg, field))


# -- schemas --------------------------------------------------------------------------------
def schema_to_proto(schema: Schema) -> apb.Schema:
    msg = apb.Schema(label=schema.label, embedding_dim=schema.embedding_dim, date_column=schema.date_column)
    for c in schema.dense:
        msg.dense.add(name=c.name, mean=c.mean, std=c.std, transform=c.transform, fill=c.fill, scale=c.scale,
                      clip_min=c.clip_min, clip_max=c.clip_max, buckets=c.buckets)
    for s in schema.sparse:
        msg.sparse.add(name=s.name, hash_size=s.hash_size, multi=s.multi, hashing=s.hashing, avg_len=s.avg_len,
                       distinct=s.distinct)
    return msg


def schema_from_proto(msg: apb.Schema, field: str = "schema") -> Schema:
    """The Schema of the message, unset fields at their documented defaults; Refused
    INVALID_ARGUMENT naming the field (e.g. `schema.sparse[2].avg_len`) otherwise."""
    from rankitect.errors import DataError
    from rankitect.schema import DENSE_SCALES, DENSE_TRANSFORMS, HASHINGS, DenseColumn, Schema, SparseColumn

    def finite(value: float, where: str) -> float:
        if not math.isfinite(value):
            raise invalid_argument(where, f"must be a finite number, got {value!r}")
        return value

    def name(value: str, where: str) -> str:
        if not value:
            raise invalid_argument(where, "must be a non-empty column name")
        return value

    def one_of(value: str, allowed: Iterable[str], default: str, where: str) -> str:
        value = value or default
        if value not in allowed:
            raise invalid_argument(where, f"must be one of {list(allowed)}, got {show(value)}")
        return value

    dense = []
    for i, c in enumerate(msg.dense):
        where = f"{field}.dense[{i}]"
        std = finite(c.std, f"{where}.std") if c.HasField("std") else 1.0
        if std <= 0:
            raise invalid_argument(f"{where}.std", f"must be > 0, got {std!r}")
        dense.append(DenseColumn(name=name(c.name, f"{where}.name"), mean=finite(c.mean, f"{where}.mean"),
                                 std=std, transform=one_of(c.transform, DENSE_TRANSFORMS, "none",
                                                           f"{where}.transform"),
                                 fill=finite(c.fill, f"{where}.fill"),
                                 scale=one_of(c.scale, DENSE_SCALES, "linear", f"{where}.scale"),
                                 clip_min=c.clip_min if c.HasField("clip_min") else None,
                                 clip_max=c.clip_max if c.HasField("clip_max") else None,
                                 buckets=tuple(c.buckets)))
    sparse = []
    for i, s in enumerate(msg.sparse):
        where = f"{field}.sparse[{i}]"
        if s.hash_size < 2:
            raise invalid_argument(f"{where}.hash_size", f"must be >= 2, got {s.hash_size}")
        avg_len = finite(s.avg_len, f"{where}.avg_len") if s.HasField("avg_len") else 1.0
        if avg_len < 0:
            raise invalid_argument(f"{where}.avg_len", f"must be >= 0, got {avg_len!r}")
        if s.HasField("distinct") and s.distinct < 0:
            raise invalid_argument(f"{where}.distinct", f"must be >= 0, got {s.distinct}")
        sparse.append(SparseColumn(name=name(s.name, f"{where}.name"), hash_size=s.hash_size, multi=s.multi,
                                   hashing=one_of(s.hashing, HASHINGS, "fnv1a64", f"{where}.hashing"),
                                   avg_len=avg_len, distinct=s.distinct if s.HasField("distinct") else None))
    if msg.embedding_dim < 0:
        raise invalid_argument(f"{field}.embedding_dim", f"must be >= 1 (0: the default 16), got {msg.embedding_dim}")
    schema = Schema(label=msg.label or "label", dense=tuple(dense), sparse=tuple(sparse),
                    embedding_dim=msg.embedding_dim or 16, date_column=msg.date_column or "date")
    try:
        schema.check(where=field)
    except DataError as exc:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, clip(str(exc))) from None
    return schema


# -- blocks ---------------------------------------------------------------------------------
def kind_to_proto(kind: str) -> int:
    return rpb.ParamKind.Value(_KIND_PREFIX + kind.upper())


def kind_from_proto(kind: int) -> str:
    return rpb.ParamKind.Name(kind).removeprefix(_KIND_PREFIX).lower()


def hyper_param_to_proto(p: HyperParam) -> rpb.HyperParam:
    msg = rpb.HyperParam(name=p.name, kind=kind_to_proto(p.kind), doc=p.doc,
                         default_value=value_to_proto(p.default))
    for key in ("low", "high"):
        if getattr(p, key) is not None:
            setattr(msg, key, getattr(p, key))
    for key in ("min_len", "max_len"):  # int32 fields
        if getattr(p, key) is not None:
            setattr(msg, key, clamp_int32(getattr(p, key)))
    msg.choices.extend(value_to_proto(c) for c in p.choices or ())
    return msg


def hyper_param_to_dict(msg: rpb.HyperParam) -> dict[str, Any]:
    """The message as HyperParam.to_dict() gives it."""
    kind = kind_from_proto(msg.kind)
    default = value_from_proto(msg.default_value, "default_value")
    out: dict[str, Any] = {"name": msg.name, "kind": kind, "doc": msg.doc, "default": default}
    for key in ("low", "high"):
        if msg.HasField(key):
            value = getattr(msg, key)
            out[key] = int(value) if kind in ("int", "int_list") and float(value).is_integer() else value
    for key in ("min_len", "max_len"):
        if msg.HasField(key):
            out[key] = getattr(msg, key)
    if msg.choices or kind == "choice":
        out["choices"] = [value_from_proto(c, f"choices[{i}]") for i, c in enumerate(msg.choices)]
    return out


def block_to_proto(spec: BlockSpec) -> rpb.BlockSpec:
    return rpb.BlockSpec(name=spec.name, doc=spec.doc, params=[hyper_param_to_proto(p) for p in spec.params],
                         min_inputs=clamp_int32(spec.min_inputs), max_inputs=clamp_int32(spec.max_inputs),
                         input_ranks=[clamp_int32(r) for r in spec.input_ranks], tags=list(spec.tags))


def block_to_dict(msg: rpb.BlockSpec) -> dict[str, Any]:
    """The message as BlockSpec.to_dict() gives it (what `rankitect blocks --json` prints)."""
    return {"name": msg.name, "doc": msg.doc, "params": [hyper_param_to_dict(p) for p in msg.params],
            "min_inputs": msg.min_inputs, "max_inputs": msg.max_inputs,
            "input_ranks": list(msg.input_ranks), "tags": list(msg.tags)}


# -- validation and cost --------------------------------------------------------------------
def int64(value: int, field: str) -> int:
    """`value` if it fits an int64 field; Refused INVALID_ARGUMENT otherwise."""
    if not INT64_MIN <= value <= INT64_MAX:
        raise invalid_argument(field, f"{value} does not fit in 64 bits; the schema's hash_size, "
                                      f"embedding_dim or column counts are too large")
    return value


def problems_to_proto(problems: Iterable[tuple[str, str, str]]) -> list[rpb.ArchitectureError]:
    return [rpb.ArchitectureError(node=clip(node, 200), field=clip(field, 200), message=clip(message))
            for node, field, message in problems]


def problems_text(problems: Iterable[tuple[str, str, str]], limit: int = 10) -> str:
    """'node 'x', field 'params.y': message; ...' of the first `limit` problems."""
    problems = list(problems)
    parts = [f"node {show(node, 80)}, field {show(field, 80)}: {clip(message, 300)}"
             for node, field, message in problems[:limit]]
    more = f"; and {len(problems) - limit} more" if len(problems) > limit else ""
    return "; ".join(parts) + more


def node_info_to_proto(info: NodeInfo) -> rpb.NodeInfo:
    msg = rpb.NodeInfo(id=info.id, block=info.block,
                       output_shape=[int64(d, f"{info.id}.output_shape") for d in info.output_shape],
                       flops=int64(info.flops, f"{info.id}.flops"),
                       num_params=int64(info.num_params, f"{info.id}.num_params"))
    _params_to_proto(info.params, msg.params, "params")
    return msg


def cost_to_proto(cost: Cost) -> rpb.EstimateCostResponse:
    msg = rpb.EstimateCostResponse(flops=int64(cost.flops, "flops"), params=int64(cost.params, "params"),
                                   embedding_params=int64(cost.embedding_params, "embedding_params"),
                                   dense_params=int64(cost.dense_params, "dense_params"))
    for node, flops in cost.by_node.items():
        msg.flops_by_node[node] = int64(flops, f"flops_by_node.{node}")
    return msg


def cost_from_proto(msg: rpb.EstimateCostResponse) -> Cost:
    from rankitect.cost import Cost

    return Cost(flops=msg.flops, params=msg.params, embedding_params=msg.embedding_params,
                by_node=dict(msg.flops_by_node))
