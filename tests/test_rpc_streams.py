"""Streams cannot stop the server answering: a real server on 127.0.0.1 whose job store holds
two queued jobs (one of alice, one of bob; --max-jobs 0 here, so they wait and their WatchJob
streams stay open), streams opened one by one, each read up to its first message.

A stream that is open holds a pool thread (grpc's sync server): streams have slots of their
own, and beyond a limit (in all, per connection, per owner, without a token) a stream is
RESOURCE_EXHAUSTED at once while health Check and unary calls keep their threads.
"""

from __future__ import annotations

import contextlib
import threading
from collections.abc import Iterator
from pathlib import Path
from typing import Any

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc

from launcher.jobs.store import JobStore
from launcher.rpc.auth import TokenTable
from launcher.rpc.gen import search_pb2 as spb
from launcher.rpc.gen import search_pb2_grpc
from launcher.rpc.server import ServerOptions, build_server
from launcher.rpc.streams import StreamLimits, StreamSlots
from tests.conftest import wait_until
from tests.rpc_helpers import GOOD_TOKEN, OTHER_TOKEN, running_server, write_token_file

FIRST_MESSAGE_S = 30  # generous: a stream that is let in answers its first message at once
CALL_S = 30  # deadline of the unary calls (a starved server would miss it)
ALICE_JOB, BOB_JOB, ANONYMOUS_JOB = "job-000001", "job-000002", "job-000003"


@pytest.fixture(scope="module")
def tokens(tmp_path_factory) -> TokenTable:
    return TokenTable.load(write_token_file(tmp_path_factory.mktemp("tokens") / "tokens"))


@pytest.fixture
def runs(tmp_path) -> Path:
    """A runs folder whose store holds a queued job of alice, one of bob and one of anonymous
    (the owner of every call on a server without tokens)."""
    store = JobStore(tmp_path / "runs" / "jobs.sqlite3")
    for owner in ("alice", "bob", "anonymous"):
        store.create(owner, None, "data: {}\n", "digest", "random on nasrec", "random", 1)
    store.close()
    return tmp_path / "runs"


def _metadata(token: str | None) -> tuple[tuple[str, str], ...]:
    return (("authorization", f"Bearer {token}"),) if token else ()


class Streams:
    """Streams opened on `address`, each on a connection of its own unless `channel` is
    given; every one is cancelled (and every channel closed) by `close()`."""

    def __init__(self, address: str) -> None:
        self.address = address
        self.calls: list[Any] = []
        self.channels: list[grpc.Channel] = []

    def connection(self) -> grpc.Channel:
        """A channel on a TCP connection of its own (grpc shares one between channels to
        the same target unless told otherwise)."""
        channel = grpc.insecure_channel(self.address, options=[("grpc.use_local_subchannel_pool", 1)])
        self.channels.append(channel)
        return channel

    def open(self, what: str, token: str | None = None, channel: grpc.Channel | None = None,
             job_id: str = ALICE_JOB) -> tuple[grpc.StatusCode, str]:
        """Open a `health` Watch or a `watch` (WatchJob) stream and read its first message:
        (OK, "") when it came, (code, details) when the stream was refused."""
        channel = channel or self.connection()
        if what == "health":
            call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest(),
                                                              metadata=_metadata(token))
        else:
            call = search_pb2_grpc.SearchServiceStub(channel).WatchJob(spb.WatchJobRequest(job_id=job_id),
                                                                        metadata=_metadata(token))
        self.calls.append(call)
        outcome: list[Any] = []
        reader = threading.Thread(target=lambda: outcome.append(_first(call)), daemon=True)
        reader.start()
        reader.join(FIRST_MESSAGE_S)
        if not outcome:
            call.cancel()
            raise AssertionError(f"{what} stream #{len(self.calls)}: neither its first message nor a refusal "
                                 f"in {FIRST_MESSAGE_S} s (the server is not answering streams)")
        return outcome[0]

    def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


def _first(call: Any) -> tuple[grpc.StatusCode, str]:
    try:
        next(call)
        return grpc.StatusCode.OK, ""
    except grpc.RpcError as exc:
        return exc.code(), exc.details() or ""


@contextlib.contextmanager
def streams_on(address: str) -> Iterator[Streams]:
    streams = Streams(address)
    try:
        yield streams
    finally:
        streams.close()


def _answers(address: str) -> None:
    """Health Check, GetJob (alice) and ListJobs (bob) answer, on a fresh connection."""
    with grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)]) as channel:
        health = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_S)
        assert health.status == health_pb2.HealthCheckResponse.SERVING
        search = search_pb2_grpc.SearchServiceStub(channel)
        job = search.GetJob(spb.GetJobRequest(job_id=ALICE_JOB), metadata=_metadata(GOOD_TOKEN), timeout=CALL_S)
        assert job.owner == "alice" and job.state == spb.JOB_STATE_QUEUED
        listed = search.ListJobs(spb.ListJobsRequest(), metadata=_metadata(OTHER_TOKEN), timeout=CALL_S)
        assert [j.job_id for j in listed.jobs] == [BOB_JOB]


def test_streams_past_the_unary_threads_leave_health_and_unary_calls_answering(tokens, runs) -> None:
    """The issue's attack, scaled down: 2 threads for unary calls (the whole pool before the
    fix), 10 health Watch streams without a token and 6 WatchJob streams."""
    with running_server(tokens=tokens, runs_dir=runs, max_jobs=0, workers=2) as server, \
            streams_on(server.address) as streams:
        health = [streams.open("health") for _ in range(10)]
        limit = server.options.max_unauthenticated_streams
        assert [code for code, _ in health] == [grpc.StatusCode.OK] * limit + \
            [grpc.StatusCode.RESOURCE_EXHAUSTED] * (10 - limit)
        assert "without a token" in health[-1][1] and str(limit) in health[-1][1]
        watches = [streams.open("watch", GOOD_TOKEN) for _ in range(6)]
        assert [code for code, _ in watches] == [grpc.StatusCode.OK] * 6
        assert server.stream_slots.open == limit + 6
        _answers(server.address)


def test_each_stream_limit_answers_resource_exhausted_naming_it(tokens, runs) -> None:
    """More stream attempts (13) than the pool has threads (1 + 7): the limits refuse the
    extra ones, and the one thread for unary calls is left to them."""
    limits = {"max_streams": 7, "max_streams_per_connection": 3, "max_streams_per_owner": 4,
              "max_unauthenticated_streams": 2}
    with running_server(tokens=tokens, runs_dir=runs, max_jobs=0, workers=1, **limits) as server, \
            streams_on(server.address) as streams:
        ok = (grpc.StatusCode.OK, "")
        assert [streams.open("health") for _ in range(2)] == [ok, ok]
        code, details = streams.open("health", token="not-a-known-token-at-all")
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "without a token" in details, details

        alice = streams.connection()
        assert [streams.open("watch", GOOD_TOKEN, alice) for _ in range(3)] == [ok] * 3
        code, details = streams.open("watch", GOOD_TOKEN, alice)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "per connection: 3" in details, details

        assert streams.open("health", GOOD_TOKEN) == ok  # a health stream with a token is its owner's
        code, details = streams.open("watch", GOOD_TOKEN)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "'alice'" in details and "per owner: 4" in details

        assert streams.open("watch", OTHER_TOKEN, job_id=BOB_JOB) == ok  # 2 + 4 + 1: the server is full
        for what, token in (("watch", OTHER_TOKEN), ("health", None), ("health", OTHER_TOKEN)):
            code, details = streams.open(what, token, job_id=BOB_JOB)
            assert code == grpc.StatusCode.RESOURCE_EXHAUSTED, (what, token, details)
        assert "has 7 open streams (its limit: 7)" in details, details
        assert server.stream_slots.open == 7
        _answers(server.address)
        code, details = streams.open("watch", None)  # not even counted: refused before
        assert code == grpc.StatusCode.UNAUTHENTICATED, details


def test_a_stream_that_ends_gives_its_slot_back(tokens, runs) -> None:
    limits = {"max_streams": 3, "max_unauthenticated_streams": 1}
    with running_server(tokens=tokens, runs_dir=runs, max_jobs=0, **limits) as server, \
            streams_on(server.address) as streams:
        ok = (grpc.StatusCode.OK, "")
        assert streams.open("health") == ok
        assert streams.open("health")[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        assert [streams.open("watch", GOOD_TOKEN) for _ in range(2)] == [ok, ok]
        assert streams.open("watch", OTHER_TOKEN, job_id=BOB_JOB)[0] == grpc.StatusCode.RESOURCE_EXHAUSTED
        streams.calls[0].cancel()  # the health stream
        streams.calls[2].cancel()  # a WatchJob stream
        wait_until(lambda: server.stream_slots.open == 1, seconds=60, what="the cancelled streams' slots back")
        assert streams.open("health") == ok
        assert streams.open("watch", OTHER_TOKEN, job_id=BOB_JOB) == ok
        # A stream that ends by itself too: a watch of an ended job (cancelled here) returns.
        with grpc.insecure_channel(server.address) as channel:
            search = search_pb2_grpc.SearchServiceStub(channel)
            search.CancelJob(spb.CancelJobRequest(job_id=BOB_JOB), metadata=_metadata(OTHER_TOKEN), timeout=CALL_S)
        wait_until(lambda: server.stream_slots.open == 2, seconds=60, what="the ended watch's slot back")


def test_without_tokens_only_the_total_and_connection_limits_apply(runs) -> None:
    with running_server(runs_dir=runs, max_jobs=0, workers=1, max_streams=3, max_streams_per_connection=2,
                        max_unauthenticated_streams=1, max_streams_per_owner=1) as server, \
            streams_on(server.address) as streams:
        ok = (grpc.StatusCode.OK, "")
        one = streams.connection()
        assert [streams.open("health", channel=one), streams.open("watch", channel=one, job_id=ANONYMOUS_JOB)] \
            == [ok, ok]
        code, details = streams.open("watch", channel=one, job_id=ANONYMOUS_JOB)
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "per connection: 2" in details, details
        assert streams.open("watch", job_id=ANONYMOUS_JOB) == ok
        code, details = streams.open("health")
        assert code == grpc.StatusCode.RESOURCE_EXHAUSTED and "its limit: 3" in details, details
        with grpc.insecure_channel(server.address) as channel:
            reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=CALL_S)
            assert reply.status == health_pb2.HealthCheckResponse.SERVING
            job = search_pb2_grpc.SearchServiceStub(channel).GetJob(spb.GetJobRequest(job_id=ANONYMOUS_JOB),
                                                                    timeout=CALL_S)
            assert job.owner == "anonymous"


def test_stream_limits_below_one_are_refused_naming_the_field(tmp_path) -> None:
    with pytest.raises(ValueError, match="max_streams_per_owner must be an integer >= 1, got 0"):
        build_server(ServerOptions(host="127.0.0.1", port=0, runs_dir=tmp_path, max_streams_per_owner=0))
    with pytest.raises(ValueError, match="stream limit total must be an integer >= 1, got -1"):
        StreamLimits(total=-1)


def test_slots_count_each_limit_and_give_back_once() -> None:
    slots = StreamSlots(StreamLimits(total=3, per_connection=2, per_owner=2, unauthenticated=1), authenticated=True)
    first = slots.acquire("ipv4:127.0.0.1:1", "alice")
    slots.acquire("ipv4:127.0.0.1:2", "alice")
    with pytest.raises(Exception, match="per owner: 2"):
        slots.acquire("ipv4:127.0.0.1:3", "alice")
    slots.acquire("ipv4:127.0.0.1:1", None)
    with pytest.raises(Exception, match="its limit: 3"):
        slots.acquire("ipv4:127.0.0.1:4", "bob")
    first()
    first()  # a second call changes nothing
    assert slots.open == 2
    slots.acquire("ipv4:127.0.0.1:4", "bob")
    assert slots.open == 3
