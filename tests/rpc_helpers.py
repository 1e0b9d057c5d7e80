"""Shared by the gRPC tests: a real server on 127.0.0.1 (a free port), schemas, token files."""

from __future__ import annotations

import contextlib
import dataclasses
import tempfile
from collections.abc import Callable, Iterable, Iterator
from pathlib import Path

import grpc
from hypothesis import strategies as st

from launcher.rpc.server import RankitectServer, ServerOptions, ServiceBinding, build_server
from rankitect.schema import Schema
from search_spaces.baselines import BASELINES
from tests.conftest import ROOT
from tests.helpers import toy_schema

GOOD_TOKEN = "tok-alice-0123456789abcdef"
OTHER_TOKEN = "tok-bob-0123456789abcdefgh"
EXAMPLE_ARCHS = sorted((ROOT / "examples" / "archs").glob("*.json"))


@contextlib.contextmanager
def running_server(services: tuple[ServiceBinding, ...] = (), **options) -> Iterator[RankitectServer]:
    """A started server on 127.0.0.1 and a free port; stopped on exit. Its job store and run
    folders are in a temporary folder unless `runs_dir` is given."""
    with tempfile.TemporaryDirectory(prefix="rk-serve-") as scratch:
        options.setdefault("runs_dir", Path(scratch) / "runs")
        server = build_server(dataclasses.replace(ServerOptions(host="127.0.0.1", port=0), **options), services)
        server.start()
        try:
            yield server
        finally:
            server.stop(grace=0.5)


def status_of(call, payload: bytes, reply_type, streams: bool = False) -> tuple[grpc.StatusCode, str]:  # noqa: ANN001
    """(status, details) of one raw call; every reply must parse as `reply_type`, and details
    stay short (they travel in a header)."""
    try:
        replies = call(payload, timeout=20)
        for reply in (replies if streams else [replies]):
            reply_type.FromString(reply)  # answers of the declared type
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        details = exc.details() or ""
        assert len(details) < 5000
        return exc.code(), details


FUZZ_KINDS = ["typed"] * 6 + ["bytes", "other_type", "huge"]


def draw_payload(data: st.DataObject, methods: Iterable[str], typed: Callable[[str], st.SearchStrategy],
                 huge: Callable[[str, int], bytes], sizes: list[int]) -> tuple[str, str, bytes]:
    """(method, kind, request bytes) of one fuzz call: a typed request of the method (6 in 9), random
    bytes, another method's request, or a huge request (`huge(method, size)`, size from `sizes`)."""
    names = sorted(methods)
    method = data.draw(st.sampled_from(names), label="method")
    kind = data.draw(st.sampled_from(FUZZ_KINDS), label="kind")
    if kind == "typed":
        return method, kind, data.draw(typed(method)).SerializeToString()
    if kind == "bytes":
        return method, kind, data.draw(st.binary(max_size=300))
    if kind == "other_type":
        other = data.draw(st.sampled_from([m for m in names if m != method]))
        return method, kind, data.draw(typed(other)).SerializeToString()
    return method, kind, huge(method, data.draw(st.sampled_from(sizes)))


def write_token_file(path: Path) -> Path:
    path.write_text(f"# tokens of the test server\n{GOOD_TOKEN} alice\n\n{OTHER_TOKEN} bob\n")
    return path


def schemas() -> dict[str, Schema]:
    """Schemas the baselines are checked on: with and without dense columns, a multi column."""
    return {"toy": toy_schema(), "no_dense": toy_schema(num_dense=0, num_sparse=3, dim=4, multi=False),
            "wide": toy_schema(num_dense=13, num_sparse=26, dim=16)}


def baseline_archs(schema: Schema) -> dict:
    return {name: build(schema) for name, build in BASELINES.items()}
