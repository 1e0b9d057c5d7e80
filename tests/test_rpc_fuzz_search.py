"""Fuzz SearchService over a real channel: every method with random (often wrong) fields,
random bytes, another method's message, huge strings, and configs from random YAML to nearly
valid ones. Every reply must carry a defined status (never UNKNOWN or INTERNAL), and the server
must still answer afterwards. It has no job slot and no waiting room (max_jobs 0, max_queued 0),
so a valid submission is refused as RESOURCE_EXHAUSTED and nothing runs."""

from __future__ import annotations

import collections

import grpc
import pytest
import yaml
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from launcher.jobs.store import CANCELLED, FAILED, RUNNING, SUCCEEDED, JobStore
from launcher.rpc.client import RankitectClient
from launcher.rpc.gen import search_pb2 as spb
from tests.helpers import tiny_synth
from tests.rpc_helpers import draw_payload, running_server, status_of
from tests.test_rpc_search import search_config

EXAMPLES = 500
METHODS = {"SubmitSearch": (spb.SubmitSearchRequest, spb.SubmitSearchResponse, False),
           "GetJob": (spb.GetJobRequest, spb.Job, False),
           "ListJobs": (spb.ListJobsRequest, spb.ListJobsResponse, False),
           "CancelJob": (spb.CancelJobRequest, spb.Job, False),
           "ResumeJob": (spb.ResumeJobRequest, spb.Job, False),
           "WatchJob": (spb.WatchJobRequest, spb.JobEvent, True),
           "GetResult": (spb.GetResultRequest, spb.SearchResult, False),
           "DownloadArtifact": (spb.DownloadArtifactRequest, spb.ArtifactChunk, True)}
DEFINED = {grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
           grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.RESOURCE_EXHAUSTED,
           grpc.StatusCode.FAILED_PRECONDITION, grpc.StatusCode.ALREADY_EXISTS, grpc.StatusCode.OUT_OF_RANGE}
HUGE = [10_000, 1_000_000, 5_000_000]  # the last is over the 4 MiB request limit
CONFIG_KEYS = ["data", "space", "searcher", "budget", "train", "baselines", "objectives", "final", "seed", "out",
               "path", "train_dates", "valid_dates", "test_dates", "name", "trials", "epochs", "storage", "x"]


@pytest.fixture(scope="module")
def fuzz_server(ray_cluster, tmp_path_factory):
    from hypothesis.configuration import set_hypothesis_home_dir

    set_hypothesis_home_dir(str(tmp_path_factory.mktemp("hypothesis")))
    root = tmp_path_factory.mktemp("fuzzroot")
    data = tiny_synth(root / "ds", days=3, rows_per_day=300)
    runs = tmp_path_factory.mktemp("fuzzserve") / "runs"
    store = JobStore(runs / "jobs.sqlite3")  # jobs in every final state; none may run again here
    text = yaml.safe_dump(search_config(data))
    ids, mine = [], []  # every job; those of the anonymous caller the fuzz test is
    for owner, end in (("anonymous", SUCCEEDED), ("bob", CANCELLED), ("bob", FAILED), ("anonymous", SUCCEEDED)):
        job, _ = store.create(owner, None, text, "digest", "random on nasrec", "random", 3)
        store.transition(job.job_id, RUNNING, "started")
        store.transition(job.job_id, end, "ended", error="boom" if end == FAILED else "")
        ids.append(job.job_id)
        if owner == "anonymous":
            mine.append(job.job_id)
    store.close()
    with running_server(allow_roots=(root.resolve(),), ray_address=ray_cluster, runs_dir=runs,
                        max_jobs=0, max_queued=0) as server:
        yield server, str(data), ids, mine, text


json_values = st.recursive(
    st.none() | st.booleans() | st.floats() | st.text(max_size=6) | st.integers(-5, 10**12),
    lambda inner: st.lists(inner, max_size=3) | st.dictionaries(st.sampled_from(CONFIG_KEYS) | st.text(max_size=4),
                                                                inner, max_size=4),
    max_leaves=10)


@st.composite
def config_texts(draw, data: str, valid: str) -> str:
    kind = draw(st.sampled_from(["text", "random_yaml", "mutated", "mutated", "valid"]))
    if kind == "text":
        return draw(st.text(max_size=60) | st.sampled_from(["[" * 3000, "{a: " * 500, "&a [*a]", "!!python/object:os.system"]))
    if kind == "random_yaml":
        return yaml.safe_dump(draw(json_values))
    config = yaml.safe_load(valid)
    if kind == "mutated":
        section = draw(st.sampled_from(sorted(config)))
        if isinstance(config[section], dict) and draw(st.booleans()):
            key = draw(st.sampled_from(sorted(config[section])) | st.sampled_from(CONFIG_KEYS))
            config[section][key] = draw(json_values)
        else:
            config[section] = draw(json_values)
    return yaml.safe_dump(config)


@st.composite
def typed_request(draw, method: str, data: str, ids: list[str], valid: str):
    job_ids = st.sampled_from([*ids, "job-999999", "", "../../etc", "job-0"]) | st.text(max_size=12)
    if method == "SubmitSearch":
        return spb.SubmitSearchRequest(request_id=draw(st.sampled_from(["", "r1", "bad id"]) | st.text(max_size=20)),
                                       config_yaml=draw(config_texts(data, valid)),
                                       overrides=draw(st.lists(st.text(max_size=20) | st.sampled_from(
                                           ["budget.trials=0", "seed=1", "data.path=/etc", "a.b.c=[1"]), max_size=3)),
                                       validate_only=draw(st.booleans()))
    if method == "ListJobs":
        return spb.ListJobsRequest(states=draw(st.lists(st.integers(-3, 9), max_size=3)),
                                   page_size=draw(st.integers(-5, 5) | st.integers(-(2**31), 2**31 - 1)),
                                   page_token=draw(st.sampled_from(["", "1", "2", "0"]) | st.text(max_size=20)))
    if method == "WatchJob":
        return spb.WatchJobRequest(job_id=draw(job_ids), from_event=draw(st.integers(-3, 8) | st.integers(-(2**63), 2**63 - 1)))
    if method == "DownloadArtifact":
        return spb.DownloadArtifactRequest(job_id=draw(job_ids), artifact=draw(st.sampled_from(["", "model", "x"])),
                                           offset=draw(st.integers(-3, 10) | st.integers(-(2**63), 2**63 - 1)))
    return METHODS[method][0](job_id=draw(job_ids))


def _huge_request(method: str, size: int) -> bytes:
    """A SubmitSearchRequest of about `size` bytes, whatever the method it is sent to."""
    return spb.SubmitSearchRequest(config_yaml="x" * size, request_id="y" * 1000).SerializeToString()


def test_fuzz_search_service(fuzz_server) -> None:
    server, data, ids, mine, valid = fuzz_server
    seen: collections.Counter = collections.Counter()
    channel = grpc.insecure_channel(server.address)
    calls = {m: (channel.unary_stream if streams else channel.unary_unary)(f"/rankitect.v1.SearchService/{m}")
             for m, (_, _, streams) in METHODS.items()}

    @settings(max_examples=EXAMPLES, deadline=None, database=None,
              suppress_health_check=[HealthCheck.too_slow, HealthCheck.data_too_large,
                                     HealthCheck.large_base_example])
    @given(st.data())
    def one_request(draw) -> None:
        method, kind, payload = draw_payload(draw, METHODS, lambda m: typed_request(m, data, ids, valid), _huge_request,
                                             HUGE)
        code, details = status_of(calls[method], payload, METHODS[method][1], streams=METHODS[method][2])
        seen[code] += 1
        assert code in DEFINED, f"{method} ({kind}): {code.name}: {details}"

    try:
        one_request()
    finally:
        channel.close()
    assert sum(seen.values()) >= EXAMPLES, seen
    # (another owner's job is NOT_FOUND, as a missing one: PERMISSION_DENIED only for paths)
    for code in (grpc.StatusCode.OK, grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND,
                 grpc.StatusCode.FAILED_PRECONDITION):
        assert seen[code], seen
    with RankitectClient(server.address, timeout=10) as client:  # still answering, nothing started
        assert client.health() == "SERVING"
        assert client.health("rankitect.v1.SearchService") == "SERVING"
        jobs = list(client.list_jobs())
        assert sorted(j.job_id for j in jobs) == sorted(mine)
        assert {state for state in (spb.JobState.Name(j.state) for j in jobs)} == {"JOB_STATE_SUCCEEDED"}
