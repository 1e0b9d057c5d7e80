"""Fuzz BlockRegistry over a real channel: typed requests with random (often wrong) fields,
random bytes, another method's message, huge strings. Every reply must carry a defined status
(never UNKNOWN or INTERNAL), and the server must still answer afterwards."""

from __future__ import annotations

import collections

import grpc
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.rpc.client import RankitectClient
from launcher.rpc.gen import architecture_pb2 as apb
from launcher.rpc.gen import registry_pb2 as rpb
from rankitect.blocks import block_names, list_blocks
from tests.helpers import toy_schema
from tests.rpc_helpers import draw_payload, running_server, status_of

EXAMPLES = 500
METHODS = {"ListBlocks": (rpb.ListBlocksRequest, rpb.ListBlocksResponse),
           "GetBlock": (rpb.GetBlockRequest, rpb.BlockSpec),
           "ValidateArchitecture": (rpb.ValidateArchitectureRequest, rpb.ValidateArchitectureResponse),
           "EstimateCost": (rpb.EstimateCostRequest, rpb.EstimateCostResponse)}
DEFINED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED}
PARAM_NAMES = sorted({p.name for s in list_blocks() for p in s.params} | {"bogus", ""})
NODE_IDS = ["a", "b", "c", "logit", "dense", "sparse", "", "1x"]
INT64 = st.integers(-(2**63), 2**63 - 1)
HUGE = [10_000, 200_000, 1_000_000, 5_000_000]  # the last is over the 4 MiB request limit


@pytest.fixture(scope="module")
def fuzz_server(tmp_path_factory):
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(str(tmp_path_factory.mktemp("hypothesis")))  # its caches stay out of the repo
    root = tmp_path_factory.mktemp("fuzzroot")
    toy_schema().save(root)
    with running_server(allow_roots=(root.resolve(),)) as server:
        yield server, str(root)


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=5) | st.integers(-100, 100),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.text(max_size=4), inner, max_size=3),
    max_leaves=8)


@st.composite
def param_values(draw) -> apb.ParamValue:
    kind = draw(st.sampled_from(["int", "int", "big", "float", "bool", "string", "list", "json", "unset"]))
    if kind == "int":
        return apb.ParamValue(int_value=draw(st.integers(-2, 300)))
    if kind == "big":
        return apb.ParamValue(int_value=draw(INT64))
    if kind == "float":
        return apb.ParamValue(float_value=draw(st.floats()))
    if kind == "bool":
        return apb.ParamValue(bool_value=draw(st.booleans()))
    if kind == "string":
        return apb.ParamValue(string_value=draw(st.sampled_from(["flat", "rows", "relu", "sum", ""])
                                                | st.text(max_size=8)))
    if kind == "list":
        values = draw(st.lists(st.integers(-2, 300) | INT64, max_size=9))
        return apb.ParamValue(int_list=apb.IntList(values=values))
    if kind == "json":
        value = apb.ParamValue()
        value.json_value.SetInParent()
        _fill_value(value.json_value, draw(json_values))
        return value
    return apb.ParamValue()  # no kind set


def _fill_value(out, value) -> None:
    from launcher.rpc.convert import _json_to_value

    _json_to_value(value, out)


def params(draw) -> dict:
    return draw(st.dictionaries(st.sampled_from(PARAM_NAMES) | st.text(max_size=6), param_values(), max_size=4))


@st.composite
def architectures(draw) -> apb.Architecture:
    ids = st.sampled_from(NODE_IDS) | st.text(max_size=6)
    nodes = []
    for _ in range(draw(st.integers(0, 6))):
        node = apb.Node(id=draw(ids), block=draw(st.sampled_from([*block_names(), "embedding", "nope", ""])),
                        inputs=draw(st.lists(ids, max_size=4)))
        for key, value in params(draw).items():
            node.params[key].CopyFrom(value)
        nodes.append(node)
    arch = apb.Architecture(name=draw(st.text(max_size=8)), nodes=nodes, output=draw(st.just("") | ids))
    for key, value in params(draw).items():
        arch.embedding[key].CopyFrom(value)
    return arch


@st.composite
def schemas(draw) -> apb.Schema:
    names = st.sampled_from(["a", "b", "c", "label", ""]) | st.text(max_size=5)
    floats = st.floats() | st.floats(-10, 10)
    schema = apb.Schema(label=draw(names), embedding_dim=draw(st.integers(-3, 64) | st.integers(-(2**31), 2**31 - 1)),
                        date_column=draw(names))
    for _ in range(draw(st.integers(0, 4))):
        col = schema.dense.add(name=draw(names), mean=draw(floats), fill=draw(floats),
                               transform=draw(st.sampled_from(["", "none", "log1p", "exp"])))
        if draw(st.booleans()):
            col.std = draw(floats)
    for _ in range(draw(st.integers(0, 5))):
        col = schema.sparse.add(name=draw(names), hash_size=draw(st.integers(-3, 1000) | INT64),
                                multi=draw(st.booleans()),
                                hashing=draw(st.sampled_from(["", "identity", "fnv1a64", "md5"])))
        if draw(st.booleans()):
            col.avg_len = draw(floats)
    return schema


@st.composite
def typed_request(draw, method: str, dataset: str):
    if method == "ListBlocks":
        return rpb.ListBlocksRequest(tag=draw(st.sampled_from(["", "interaction", "dense"]) | st.text(max_size=10)))
    if method == "GetBlock":
        return rpb.GetBlockRequest(name=draw(st.sampled_from(block_names()) | st.text(max_size=12)))
    request = METHODS[method][0]()
    if draw(st.integers(0, 9)):
        request.architecture.CopyFrom(draw(architectures()))
    source = draw(st.sampled_from(["schema", "schema", "schema", "dataset", "none"]))
    if source == "schema":
        request.schema.CopyFrom(draw(schemas()))
    elif source == "dataset":
        request.dataset = draw(st.sampled_from([dataset, f"{dataset}/..", "/", "", "../../etc"]) | st.text(max_size=12))
    return request


def _huge_request(method: str, size: int) -> bytes:
    text = "x" * size
    if method == "ListBlocks":
        return rpb.ListBlocksRequest(tag=text).SerializeToString()
    if method == "GetBlock":
        return rpb.GetBlockRequest(name=text).SerializeToString()
    arch = apb.Architecture(name=text, nodes=[apb.Node(id=text[:size // 2], block=text[:size // 3],
                                                       inputs=[text[:1000]] * 10)])
    arch.nodes[0].params[text[:500]].string_value = text[:size // 4]
    return METHODS[method][0](architecture=arch, schema=apb.Schema(
        sparse=[apb.SparseColumn(name=text[:2000], hash_size=10)])).SerializeToString()


def test_fuzz_block_registry(fuzz_server) -> None:
    server, dataset = fuzz_server
    seen: collections.Counter = collections.Counter()
    channel = grpc.insecure_channel(server.address)
    calls = {m: channel.unary_unary(f"/rankitect.v1.BlockRegistry/{m}") for m in METHODS}

    @settings(max_examples=EXAMPLES, deadline=None, database=None, derandomize=False,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(st.data())
    def one_request(data) -> None:
        method, kind, payload = draw_payload(data, METHODS, lambda m: typed_request(m, dataset), _huge_request, HUGE)
        code, details = status_of(calls[method], payload, METHODS[method][1])
        seen[code] += 1
        assert code in DEFINED, f"{method} ({kind}): {code.name}: {details}"

    try:
        one_request()
    finally:
        channel.close()
    assert sum(seen.values()) >= EXAMPLES, seen
    assert seen[grpc.StatusCode.OK] and seen[grpc.StatusCode.INVALID_ARGUMENT], seen
    with RankitectClient(server.address, timeout=5) as client:  # still answering
        assert client.health() == "SERVING"
        assert [b["name"] for b in client.list_blocks()] == block_names()
