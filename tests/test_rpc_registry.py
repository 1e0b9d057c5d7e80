"""BlockRegistry over a real channel to a real server on 127.0.0.1: every RPC, its errors,
health, reflection, the client, and `rankitect blocks --server`."""

from __future__ import annotations

import json
import pickle
import socket

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from launcher.cli import main
from launcher.rpc import convert
from launcher.rpc.client import RankitectClient
from launcher.rpc.errors import exit_code
from launcher.rpc.gen import architecture_pb2 as apb
from launcher.rpc.gen import registry_pb2 as rpb
from launcher.rpc.gen import search_pb2
from rankitect.arch.graph import Architecture
from rankitect.arch.validate import validate
from rankitect.blocks import block_names, get_block, list_blocks
from rankitect.cost import cost_of
from tests.helpers import toy_schema
from tests.rpc_helpers import EXAMPLE_ARCHS, baseline_archs, running_server, schemas


@pytest.fixture(scope="module")
def roots(tmp_path_factory):
    allowed = tmp_path_factory.mktemp("allowed")
    (allowed / "ds").mkdir()
    toy_schema().save(allowed / "ds")
    outside = tmp_path_factory.mktemp("outside")
    toy_schema().save(outside)
    return allowed, outside


@pytest.fixture(scope="module")
def server(roots):
    with running_server(allow_roots=(roots[0].resolve(),)) as srv:
        yield srv


@pytest.fixture(scope="module")
def client(server):
    with RankitectClient(server.address, timeout=10) as c:
        yield c


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def _bad_arch() -> Architecture:
    nodes = [{"id": "feat", "block": "concat", "inputs": ["dense", "sparse"], "params": {"mode": "flat"}},
             {"id": "hidden", "block": "fc", "inputs": ["feat"], "params": {"width": 0}},
             {"id": "logit", "block": "fc", "inputs": ["hidden", "nowhere"], "params": {"width": 1}}]
    return Architecture.from_dict({"nodes": nodes})


# -- ListBlocks / GetBlock ------------------------------------------------------------------------
def test_list_blocks_is_the_in_process_registry(client) -> None:
    listed = client.list_blocks()
    assert [b["name"] for b in listed] == block_names()
    assert listed == [s.to_dict() for s in list_blocks()]
    interaction = client.list_blocks(tag="interaction")
    assert [b["name"] for b in interaction] == [s.name for s in list_blocks() if "interaction" in s.tags]


def test_get_block_params_are_the_hyper_params(client) -> None:
    for name in block_names():
        spec = get_block(name).spec
        got = client.get_block(name)
        assert got == spec.to_dict()
        assert [(p["name"], p["kind"], p["default"]) for p in got["params"]] == \
               [(p.name, p.kind, list(p.default) if isinstance(p.default, tuple) else p.default) for p in spec.params]
    msg = client.call(client.registry.GetBlock, rpb.GetBlockRequest(name="mlp"))
    widths = msg.params[0]
    assert (widths.kind, list(widths.default_value.int_list.values), widths.min_len, widths.max_len) == \
           (rpb.PARAM_KIND_INT_LIST, [64, 32], 1, 8)


def test_get_block_unknown_is_not_found_and_empty_is_invalid(client) -> None:
    code, details = _code(lambda: client.get_block("nope"))
    assert code == grpc.StatusCode.NOT_FOUND and "'nope'" in details and "mlp" in details
    code, details = _code(lambda: client.get_block(""))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith("name:")
    code, details = _code(lambda: client.get_block("x" * 100_000))
    assert code == grpc.StatusCode.NOT_FOUND and len(details) < 3000


# -- ValidateArchitecture -----------------------------------------------------------------------
def test_validate_good_architectures(client) -> None:
    for schema in schemas().values():
        for arch in baseline_archs(schema).values():
            request = rpb.ValidateArchitectureRequest(architecture=convert.architecture_to_proto(arch),
                                                      schema=convert.schema_to_proto(schema))
            reply = client.call(client.registry.ValidateArchitecture, request)
            assert reply.valid and not reply.errors
            expected = validate(arch, schema).nodes
            assert [(n.id, list(n.output_shape), n.flops, n.num_params) for n in reply.nodes] == \
                   [(n.id, list(n.output_shape), n.flops, n.num_params) for n in expected]
    for path in EXAMPLE_ARCHS:
        assert client.validate_architecture(Architecture.load(path), toy_schema(num_dense=4)) == []


def test_validate_bad_architecture_names_node_and_field(client) -> None:
    errors = client.validate_architecture(_bad_arch(), toy_schema())
    assert ("hidden", "params.width") in {(node, field) for node, field, _ in errors}
    assert ("logit", "inputs") in {(node, field) for node, field, _ in errors}
    assert any("nowhere" in message for *_, message in errors)
    # a structural mistake (an unknown field of a node, a node without id) is a problem, not an RPC error
    msg = apb.Architecture(nodes=[apb.Node(id="", block="fc", inputs=["dense"])])
    reply = client.call(client.registry.ValidateArchitecture, rpb.ValidateArchitectureRequest(
        architecture=msg, schema=convert.schema_to_proto(toy_schema())))
    assert not reply.valid and (reply.errors[0].node, reply.errors[0].field) == ("nodes[0]", "id")


def test_validate_against_a_dataset_on_the_server(client, roots) -> None:
    allowed, outside = roots
    arch = baseline_archs(toy_schema())["dlrm"]
    assert client.validate_architecture(arch, dataset=str(allowed / "ds")) == []
    code, details = _code(lambda: client.validate_architecture(arch, dataset=str(outside)))
    assert code == grpc.StatusCode.PERMISSION_DENIED and details.startswith("dataset:")
    code, details = _code(lambda: client.validate_architecture(arch, dataset=str(allowed / "ds" / ".." / "..")))
    assert code == grpc.StatusCode.PERMISSION_DENIED
    code, details = _code(lambda: client.validate_architecture(arch, dataset=str(allowed)))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "schema.json" in details


def test_malformed_requests_are_invalid_argument_naming_the_field(client) -> None:
    arch = convert.architecture_to_proto(baseline_archs(toy_schema())["lr"])
    cases = [
        (rpb.ValidateArchitectureRequest(architecture=arch), "schema_source:"),
        (rpb.ValidateArchitectureRequest(schema=convert.schema_to_proto(toy_schema())), "architecture:"),
        (rpb.ValidateArchitectureRequest(architecture=arch, schema=apb.Schema(
            sparse=[apb.SparseColumn(name="s", hash_size=-5)])), "schema.sparse[0].hash_size:"),
    ]
    unset = rpb.ValidateArchitectureRequest(architecture=arch, schema=convert.schema_to_proto(toy_schema()))
    unset.architecture.nodes[1].params["width"].Clear()
    unset.architecture.nodes[1].params["width"].SetInParent()
    cases.append((unset, "architecture.nodes[1].params.width:"))
    for request, field in cases:
        code, details = _code(lambda: client.call(client.registry.ValidateArchitecture, request))
        assert code == grpc.StatusCode.INVALID_ARGUMENT and details.startswith(field), details
    raw = client.channel.unary_unary("/rankitect.v1.BlockRegistry/GetBlock")
    code, details = _code(lambda: raw(b"\xff\xff\xff", timeout=5))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "rankitect.v1.GetBlockRequest" in details


# -- EstimateCost -------------------------------------------------------------------------------
def test_estimate_cost_equals_rankitect_cost(client) -> None:
    for schema in schemas().values():
        for name, arch in baseline_archs(schema).items():
            assert client.estimate_cost(arch, schema) == cost_of(arch, schema), name
    reply = client.call(client.registry.EstimateCost, rpb.EstimateCostRequest(
        architecture=convert.architecture_to_proto(baseline_archs(toy_schema())["dlrm"]),
        schema=convert.schema_to_proto(toy_schema())))
    assert reply.dense_params == reply.params - reply.embedding_params > 0
    assert sum(reply.flops_by_node.values()) == reply.flops


def test_estimate_cost_of_an_invalid_architecture_names_node_and_field(client) -> None:
    code, details = _code(lambda: client.estimate_cost(_bad_arch(), toy_schema()))
    assert code == grpc.StatusCode.INVALID_ARGUMENT
    assert details.startswith("architecture:") and "node 'hidden', field 'params.width'" in details


def test_estimate_cost_too_large_for_int64(client) -> None:
    huge = apb.Schema(sparse=[apb.SparseColumn(name=f"s{i}", hash_size=2**62) for i in range(4)], embedding_dim=1024)
    request = rpb.EstimateCostRequest(
        architecture=convert.architecture_to_proto(baseline_archs(toy_schema(num_dense=0))["lr"]), schema=huge)
    code, details = _code(lambda: client.call(client.registry.EstimateCost, request))
    assert code == grpc.StatusCode.INVALID_ARGUMENT and "64 bits" in details


# -- health, reflection, the SearchService ---------------------------------------------------
def test_health_serving(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = health_pb2_grpc.HealthStub(channel)
        status = {name: stub.Check(health_pb2.HealthCheckRequest(service=name), timeout=5).status
                  for name in ("", "rankitect.v1.BlockRegistry", "rankitect.v1.SearchService")}
    assert status == {"": health_pb2.HealthCheckResponse.SERVING,
                      "rankitect.v1.BlockRegistry": health_pb2.HealthCheckResponse.SERVING,
                      "rankitect.v1.SearchService": health_pb2.HealthCheckResponse.SERVING}


def test_reflection_lists_and_describes_the_services(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        requests = [reflection_pb2.ServerReflectionRequest(list_services=""),
                    reflection_pb2.ServerReflectionRequest(file_containing_symbol="rankitect.v1.BlockRegistry")]
        replies = list(stub.ServerReflectionInfo(iter(requests), timeout=5))
    names = {s.name for s in replies[0].list_services_response.service}
    assert {"rankitect.v1.BlockRegistry", "rankitect.v1.SearchService", "grpc.health.v1.Health",
            "grpc.reflection.v1alpha.ServerReflection"} <= names
    assert replies[1].file_descriptor_response.file_descriptor_proto


def test_search_service_answers_without_ray(client) -> None:
    """The SearchService serves before any job exists (a local Ray starts with the first job)."""
    code, details = _code(lambda: client.call(client.search.GetJob, search_pb2.GetJobRequest(job_id="x")))
    assert code == grpc.StatusCode.NOT_FOUND and "no job 'x'" in details


# -- client -------------------------------------------------------------------------------------
def test_client_pickles_without_its_channel(server) -> None:
    client = RankitectClient(server.address, token="t" * 20, timeout=5)
    assert client.health() == "SERVING"
    state = client.__getstate__()
    assert state["_channel"] is None and state["_stubs"] == {}
    copy = pickle.loads(pickle.dumps(client))
    assert (copy.target, copy.token, copy.tls_ca, copy.timeout) == (server.address, "t" * 20, None, 5)
    assert copy._channel is None and [b["name"] for b in copy.list_blocks()] == block_names()
    assert "t" * 20 not in repr(copy)
    copy.close()
    client.close()


def test_exit_codes() -> None:
    assert {c: exit_code(c) for c in (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                                      grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.PERMISSION_DENIED,
                                      grpc.StatusCode.UNAUTHENTICATED)} == dict.fromkeys(
        (grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
         grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED), 2)
    for code in (grpc.StatusCode.UNAVAILABLE, grpc.StatusCode.INTERNAL, grpc.StatusCode.UNKNOWN,
                 grpc.StatusCode.RESOURCE_EXHAUSTED, grpc.StatusCode.DEADLINE_EXCEEDED):
        assert exit_code(code) == 1


# -- `rankitect blocks --server` ------------------------------------------------------------------
def test_blocks_cli_from_a_server(server, capsys) -> None:
    assert main(["blocks", "--json"]) == 0
    local = json.loads(capsys.readouterr().out)
    assert main(["blocks", "--json", "--server", server.address]) == 0
    assert json.loads(capsys.readouterr().out) == local
    assert main(["blocks", "--server", server.address]) == 0
    assert "widths" in capsys.readouterr().out


def test_blocks_cli_refusals(capsys) -> None:
    assert main(["blocks", "--server", "nohost"]) == 2
    assert "--server 'nohost'" in capsys.readouterr().err
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        closed = f"127.0.0.1:{s.getsockname()[1]}"
    assert main(["blocks", "--server", closed]) == 1
    err = capsys.readouterr().err
    assert f"rankitect: {closed}: UNAVAILABLE" in err
