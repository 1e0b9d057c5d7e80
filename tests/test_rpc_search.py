"""SearchService against a real server on 127.0.0.1: jobs run as real driver processes on the
session's Ray, their state in a real SQLite store. Every RPC's success path and its refusals,
owners and tokens, cancel mid-search and resume, the CLI clients."""

from __future__ import annotations

import hashlib
import json
import subprocess
import sys
import tarfile
from pathlib import Path
from typing import Any

import grpc
import pytest
import yaml

from launcher.cli import main
from launcher.rpc.auth import TokenTable
from launcher.rpc.client import RankitectClient
from launcher.rpc.gen import search_pb2 as spb
from rankitect.test_gate import ENV_VAR
from tests.helpers import tiny_synth
from tests.rpc_helpers import GOOD_TOKEN, OTHER_TOKEN, running_server, write_token_file

TIMEOUT_S = 300


def search_config(data: Path, trials: int = 3, **sections: Any) -> dict[str, Any]:
    config = {"data": {"path": str(data), "train_dates": "first:1", "valid_dates": "2024-01-02",
                       "test_dates": "last:1"},
              "space": {"name": "nasrec", "blocks": 2}, "searcher": {"name": "random"},
              "budget": {"trials": trials}, "train": {"epochs": 1, "batch_size": 256}, "baselines": ["lr"]}
    config.update(sections)
    return config


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("allowed")
    tiny_synth(folder / "ds", days=3, rows_per_day=1200)
    return folder


@pytest.fixture(scope="module")
def server(ray_cluster, root, tmp_path_factory):
    tokens = TokenTable.load(write_token_file(tmp_path_factory.mktemp("tokens") / "tokens"))
    with running_server(tokens=tokens, allow_roots=(root.resolve(),), ray_address=ray_cluster,
                        runs_dir=tmp_path_factory.mktemp("serve") / "runs", max_jobs=1, max_queued=4) as srv:
        yield srv


@pytest.fixture
def alice(server):
    with RankitectClient(server.address, token=GOOD_TOKEN, timeout=30) as client:
        yield client


@pytest.fixture
def bob(server):
    with RankitectClient(server.address, token=OTHER_TOKEN, timeout=30) as client:
        yield client


def refused(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        result = call(*args, **kwargs)
        if hasattr(result, "__next__"):
            list(result)
    return info.value


def state(job: spb.Job) -> str:
    return spb.JobState.Name(job.state).removeprefix("JOB_STATE_")


def events_until_end(client: RankitectClient, job_id: str, from_event: int = 0) -> list[spb.JobEvent]:
    events = []
    for event in client.watch_job(job_id, from_event=from_event):
        events.append(event)
    return events


def first_trial_then(client: RankitectClient, job_id: str, action) -> list[spb.JobEvent]:
    """Watch `job_id`; call `action()` once its first trial is told; every event to the end."""
    events, acted = [], False
    for event in client.watch_job(job_id):
        events.append(event)
        if not acted and event.WhichOneof("kind") == "trial":
            action()
            acted = True
    assert acted, [e.WhichOneof("kind") for e in events]
    return events


@pytest.fixture(scope="module")
def finished(server, root) -> dict[str, Any]:
    """One job run to the end: its id, its events, the folder the server gave it."""
    with RankitectClient(server.address, token=GOOD_TOKEN, timeout=30) as client:
        job, created = client.submit_search(search_config(root / "ds"), request_id="first-job")
        assert created and state(job) == "QUEUED"
        events = events_until_end(client, job.job_id)
    return {"job_id": job.job_id, "events": events,
            "run": server.options.runs_dir / job.job_id}


def test_a_job_runs_to_success_with_every_event(finished, alice, root) -> None:
    events = finished["events"]
    assert [e.number for e in events] == list(range(1, len(events) + 1))
    states = [state(e.state) for e in events if e.WhichOneof("kind") == "state"]
    assert states == ["QUEUED", "RUNNING", "SUCCEEDED"]
    trials = [e.trial for e in events if e.WhichOneof("kind") == "trial"]
    assert [t.trial.number for t in trials] == [0, 1, 2]
    assert [t.progress.trials_done for t in trials] == [1, 2, 3]
    saved = json.loads((finished["run"] / "search" / "result.json").read_text())
    # The events carry what result.json holds: the same trials, best and front.
    assert [t.trial.metrics.ne for t in trials] == pytest.approx([t["metrics"]["ne"] for t in saved["trials"]])
    bests = [e.best.trial.number for e in events if e.WhichOneof("kind") == "best"]
    assert bests[-1] == saved["best"]["number"]
    fronts = [[p.number for p in e.pareto.points] for e in events if e.WhichOneof("kind") == "pareto"]
    assert fronts[-1] == [t.get("number", -1) for t in saved["pareto"]]  # -1: a baseline on the front
    logs = [e.log.text for e in events if e.WhichOneof("kind") == "log"]
    assert any(text.startswith("baseline lr: complete") for text in logs)

    job = alice.get_job(finished["job_id"])
    assert state(job) == "SUCCEEDED" and job.owner == "alice" and job.searcher == "random"
    assert (job.progress.trials_done, job.progress.trials_total) == (3, 3)
    assert job.best.number == saved["best"]["number"] and job.last_event == len(events)
    assert job.finished_at.seconds >= job.started_at.seconds >= job.created_at.seconds > 0
    assert yaml.safe_load(job.config_yaml)["data"]["path"] == str((root / "ds").resolve())


def test_watch_reattaches_from_any_event(finished, alice) -> None:
    events = finished["events"]
    middle = len(events) // 2
    again = events_until_end(alice, finished["job_id"], from_event=middle)
    assert [e.SerializeToString(deterministic=True) for e in again] == [e.SerializeToString(deterministic=True) for e in events[middle - 1:]]
    assert events_until_end(alice, finished["job_id"], from_event=len(events) + 5) == []


def test_result_is_result_json(finished, alice) -> None:
    reply = alice.get_result(finished["job_id"])
    saved = json.loads((finished["run"] / "search" / "result.json").read_text())
    assert json.loads(reply.result_json) == saved
    assert [t.number for t in reply.trials] == [t["number"] for t in saved["trials"]]
    assert [t.metrics.flops_per_example for t in reply.pareto] == [t["metrics"]["flops_per_example"]
                                                                    for t in saved["pareto"]]
    assert reply.best.test_metrics.ne == pytest.approx(saved["best"]["test_metrics"]["ne"])
    assert reply.best.architecture.nodes[0].id == saved["best"]["arch"]["nodes"][0]["id"]
    assert reply.baselines["lr"].metrics.ne == pytest.approx(saved["baselines"]["lr"]["metrics"]["ne"])


def test_download_streams_the_exported_model(finished, alice, tmp_path) -> None:
    info = alice.download_artifact(finished["job_id"], tmp_path / "model.tar.gz")
    data = (tmp_path / "model.tar.gz").read_bytes()
    assert info.size == len(data) and info.sha256 == hashlib.sha256(data).hexdigest()
    with tarfile.open(tmp_path / "model.tar.gz") as tar:
        names = set(tar.getnames())
    assert {"export/model.pt2", "export/rankitect_serving.py", "export/manifest.json"} <= names
    # A broken download continues from an offset: the rest of the same bytes.
    half = info.size // 2
    rest = b"".join(c.data for c in alice.search.DownloadArtifact(
        spb.DownloadArtifactRequest(job_id=finished["job_id"], offset=half), metadata=alice.metadata))
    assert rest == data[half:]
    error = refused(alice.search.DownloadArtifact, spb.DownloadArtifactRequest(
        job_id=finished["job_id"], offset=info.size + 1), metadata=alice.metadata)
    assert error.code() == grpc.StatusCode.OUT_OF_RANGE and f"0..{info.size}" in error.details()


def test_submit_is_idempotent_by_request_id(finished, alice, root) -> None:
    job, created = alice.submit_search(search_config(root / "ds"), request_id="first-job")
    assert not created and job.job_id == finished["job_id"]
    error = refused(alice.submit_search, search_config(root / "ds", trials=4), request_id="first-job")
    assert error.code() == grpc.StatusCode.ALREADY_EXISTS and finished["job_id"] in error.details()


def test_calls_the_job_state_does_not_allow(finished, alice) -> None:
    for call in (alice.cancel_job, alice.resume_job):
        error = refused(call, finished["job_id"])
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "SUCCEEDED" in error.details()


def test_owners_see_only_their_jobs(finished, alice, bob, server) -> None:
    job_id = finished["job_id"]
    for call in (bob.get_job, bob.cancel_job, bob.resume_job, bob.get_result,
                 lambda j: bob.watch_job(j), lambda j: bob.download_artifact(j, "/nonexistent/x")):
        error = refused(call, job_id)
        assert error.code() == grpc.StatusCode.NOT_FOUND, error
        assert error.details() == f"job_id: no job {job_id!r}"  # as for an id that does not exist
    assert job_id in [j.job_id for j in alice.list_jobs()]
    assert job_id not in [j.job_id for j in bob.list_jobs()]
    with RankitectClient(server.address, timeout=10) as anonymous:
        error = refused(anonymous.get_job, job_id)
        assert error.code() == grpc.StatusCode.UNAUTHENTICATED
    with RankitectClient(server.address, token="not-a-known-token-at-all", timeout=10) as stranger:
        assert refused(stranger.list_jobs).code() == grpc.StatusCode.UNAUTHENTICATED


BAD_SUBMISSIONS = [
    ("data: [unclosed", (), grpc.StatusCode.INVALID_ARGUMENT, "config_yaml: not valid YAML (line 1"),
    ("- a list", (), grpc.StatusCode.INVALID_ARGUMENT, "config_yaml: must be a mapping"),
    ("", (), grpc.StatusCode.INVALID_ARGUMENT, "config_yaml: empty"),
    ("{config}", ("budget.trials=0",), grpc.StatusCode.INVALID_ARGUMENT, "config.budget.trials: must be >= 1, got 0"),
    ("{config}", ("nonsense",), grpc.StatusCode.INVALID_ARGUMENT, "overrides[0]: expected KEY=VALUE"),
    ("{config}", ("colour=blue",), grpc.StatusCode.INVALID_ARGUMENT, "config.colour: unknown key"),
    ("{config}", ("searcher.name=simulated_annealing",), grpc.StatusCode.INVALID_ARGUMENT, "simulated_annealing"),
    ("{config}", ("data.valid_dates=2031-01-01",), grpc.StatusCode.INVALID_ARGUMENT, "config.data.valid_dates"),
    ("{config}", ("data.valid_dates=2014-01-33",), grpc.StatusCode.INVALID_ARGUMENT,
     "config.data.valid_dates: date '2014-01-33' is not a date"),
    ("{config}", ("searcher.storage=sqlite:////tmp/x.db",), grpc.StatusCode.INVALID_ARGUMENT,
     "config.searcher.storage: cannot be set on a server"),
    ("{config}", ("logging.tensorboard=/tmp/tb",), grpc.StatusCode.INVALID_ARGUMENT,
     "config.logging.tensorboard: cannot be set on a server"),
    ("{config}", ("logging.mlflow=sqlite:////tmp/mlflow.db",), grpc.StatusCode.INVALID_ARGUMENT,
     "config.logging.mlflow: cannot be set on a server"),
    ("{config}", ("data.path=/etc",), grpc.StatusCode.PERMISSION_DENIED,
     "config.data.path: '/etc' is outside the server's allowed folders"),
    ("{config}", ("data.path={root}/../../..",), grpc.StatusCode.PERMISSION_DENIED, "config.data.path"),
    ("{config}", ("baselines=[/etc/passwd]",), grpc.StatusCode.PERMISSION_DENIED, "config.baselines[0]"),
    ("{config}", ("data.path={root}/missing",), grpc.StatusCode.INVALID_ARGUMENT, "config.data.path: dataset"),
]


@pytest.mark.parametrize("text,overrides,code,message", BAD_SUBMISSIONS,
                         ids=[f"{i}-{m[:30]}" for i, (_, _, _, m) in enumerate(BAD_SUBMISSIONS)])
def test_bad_submissions_name_the_field(alice, root, text, overrides, code, message) -> None:
    before = [j.job_id for j in alice.list_jobs()]
    config = yaml.safe_dump(search_config(root / "ds"))
    overrides = [o.format(root=root) for o in overrides]
    error = refused(alice.submit_search, text.format(config=config), overrides)
    assert error.code() == code, error.details()
    assert message.format(root=root) in error.details()
    assert [j.job_id for j in alice.list_jobs()] == before  # nothing was stored


def test_malformed_requests(alice) -> None:
    cases = [
        (alice.get_job, ("",), grpc.StatusCode.INVALID_ARGUMENT, "job_id: required"),
        (alice.get_job, ("job-999999",), grpc.StatusCode.NOT_FOUND, "job_id: no job 'job-999999'"),
        (alice.cancel_job, ("nope",), grpc.StatusCode.NOT_FOUND, "no job"),
        (alice.submit_search, ("seed: 1",), grpc.StatusCode.INVALID_ARGUMENT, "config.data: required key is missing"),
        (alice.submit_search, ("x: 1",), grpc.StatusCode.INVALID_ARGUMENT, "config.x: unknown key"),
    ]
    for call, args, code, message in cases:
        error = refused(call, *args)
        assert error.code() == code and message in error.details(), (error.code(), error.details())
    error = refused(alice.submit_search, "x: 1", request_id="bad id with spaces")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT and "request_id" in error.details()
    raw = alice.search
    for request, method, message in [
        (spb.ListJobsRequest(page_token="abc"), raw.ListJobs, "page_token"),
        (spb.ListJobsRequest(page_size=-1), raw.ListJobs, "page_size: must be >= 0"),
        (spb.ListJobsRequest(states=[42]), raw.ListJobs, "states[0]: not a job state: 42"),
        (spb.WatchJobRequest(job_id="job-999999"), raw.WatchJob, "no job"),
    ]:
        error = refused(method, request, metadata=alice.metadata)
        assert message in error.details(), error.details()


def test_validate_only_creates_nothing(alice, root) -> None:
    before = [j.job_id for j in alice.list_jobs()]
    job, created = alice.submit_search(search_config(root / "ds", trials=7), validate_only=True)
    assert not created and job.job_id == "" and job.progress.trials_total == 7
    assert yaml.safe_load(job.config_yaml)["data"]["path"] == str((root / "ds").resolve())
    assert [j.job_id for j in alice.list_jobs()] == before


def test_full_queue_is_resource_exhausted(ray_cluster, root, trial_gate, monkeypatch) -> None:
    """--max-queued 0: a job is taken while a slot is free; with the one slot taken (its
    driver held before its search), the next is refused and nothing is stored for it."""
    monkeypatch.setenv(ENV_VAR, str(trial_gate.folder))  # the drivers of this in-process server see the gate
    trial_gate.hold(first=0, last=0, what="job")
    with running_server(allow_roots=(root.resolve(),), ray_address=ray_cluster, max_queued=0, max_jobs=1) as srv, \
            RankitectClient(srv.address, timeout=30) as client:
        first, _ = client.submit_search(search_config(root / "ds"))
        trial_gate.wait_started("job 0")
        error = refused(client.submit_search, search_config(root / "ds"))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-queued is 0" in error.details()
        assert [j.job_id for j in client.list_jobs()] == [first.job_id]
        assert state(client.cancel_job(first.job_id)) in ("CANCELLING", "CANCELLED")


def test_cancel_mid_search_keeps_trials_and_resume_finishes(alice, root, server, trial_gate) -> None:
    """Cancelled once trial 0 is told, with trials 1 and 2 held: trial 0 is kept, the held
    workers end with the driver, and the resumed job trains the other 7."""
    trial_gate.hold(first=1)
    job, _ = alice.submit_search(search_config(root / "ds", trials=8, baselines=[]))
    assert state(alice.get_job(job.job_id)) in ("QUEUED", "RUNNING")
    cancelled: list[spb.Job] = []

    def cancel() -> None:
        trial_gate.wait_started("trial 1", "trial 2")  # told trial 0 asked trial 2: nothing else can finish
        cancelled.append(alice.cancel_job(job.job_id))

    events = first_trial_then(alice, job.job_id, cancel)
    assert state(cancelled[0]) == "CANCELLING"
    assert state(alice.cancel_job(job.job_id)) in ("CANCELLING", "CANCELLED")  # again: no error
    assert [state(e.state) for e in events if e.WhichOneof("kind") == "state"][-2:] == ["CANCELLING", "CANCELLED"]
    assert [e.trial.trial.number for e in events if e.WhichOneof("kind") == "trial"] == [0]
    kept = {t.number: t.metrics.ne for t in alice.get_result(job.job_id).trials}
    assert list(kept) == [0]
    trial_gate.wait_stopped("trial 1", "trial 2")

    trial_gate.release()
    resumed = alice.resume_job(job.job_id)
    assert state(resumed) == "QUEUED"
    rest = events_until_end(alice, job.job_id, from_event=events[-1].number + 1)
    assert [e.number for e in rest] == list(range(events[-1].number + 1, events[-1].number + 1 + len(rest)))
    assert state(rest[-1].state) == "SUCCEEDED"
    final = alice.get_job(job.job_id)
    assert state(final) == "SUCCEEDED" and final.attempts == 2
    trials = {t.number: t.metrics.ne for t in alice.get_result(job.job_id).trials}
    assert sorted(trials) == list(range(8))
    assert {n: trials[n] for n in kept} == kept  # the trial done before the cancel was not retrained
    # The whole history, watched from the start, ends only at the job's real end.
    everything = events_until_end(alice, job.job_id)
    assert [e.number for e in everything] == list(range(1, final.last_event + 1))


def test_a_queued_job_cancels_at_once(alice, root, trial_gate) -> None:
    """The first job holds the only slot (--max-jobs 1) with its trials held, so the second
    stays queued until it is cancelled."""
    trial_gate.hold()
    running, _ = alice.submit_search(search_config(root / "ds", trials=6, baselines=[]))
    queued, _ = alice.submit_search(search_config(root / "ds", trials=2, baselines=[], seed=5))
    try:
        trial_gate.wait_started("trial 0", "trial 1")
        assert state(alice.get_job(running.job_id)) == "RUNNING"
        job = alice.cancel_job(queued.job_id)
        assert state(job) == "CANCELLED" and job.attempts == 0
        error = refused(alice.get_result, queued.job_id)
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION and "not started" in error.details()
        error = refused(alice.download_artifact, queued.job_id, "/nonexistent/x")
        assert error.code() == grpc.StatusCode.FAILED_PRECONDITION
        pages = [j.job_id for j in alice.list_jobs(page_size=1)]
        assert pages[:2] == [queued.job_id, running.job_id] and len(pages) == len(set(pages))
        only = [j.job_id for j in alice.list_jobs(states=[spb.JOB_STATE_CANCELLED])]
        assert queued.job_id in only and running.job_id not in only
    finally:
        alice.cancel_job(running.job_id)
        events_until_end(alice, running.job_id)
    assert state(alice.get_job(running.job_id)) == "CANCELLED"
    trial_gate.wait_stopped("trial 0", "trial 1")


def test_cli_clients(finished, server, root, tmp_path, capsys) -> None:
    token_file = tmp_path / "token"
    token_file.write_text(GOOD_TOKEN + "\n")
    common = ["--server", server.address, "--token-file", str(token_file)]
    config = tmp_path / "search.yaml"
    config.write_text(yaml.safe_dump(search_config(root / "ds")))

    assert main(["submit", "--config", str(config), "--request-id", "first-job", *common]) == 0
    assert capsys.readouterr().out.strip().splitlines()[-1] == finished["job_id"]
    assert main(["jobs", *common]) == 0
    line = next(x for x in capsys.readouterr().out.splitlines() if x.startswith(finished["job_id"]))
    best = json.loads((finished["run"] / "search" / "result.json").read_text())["best"]
    assert "SUCCEEDED" in line and "random" in line and "3/3" in line
    assert f"best NE {best['metrics']['ne']:.4f}" in line, line
    assert main(["watch", finished["job_id"], *common]) == 0
    out = capsys.readouterr().out
    assert "SUCCEEDED" in out and "trial 2 complete" in out
    assert main(["result", finished["job_id"], *common]) == 0
    assert "baseline lr" in capsys.readouterr().out
    assert main(["download", finished["job_id"], "--out", str(tmp_path / "model"), *common]) == 0
    assert (tmp_path / "model" / "model.pt2").is_file()
    assert main(["download", finished["job_id"], "--out", str(tmp_path / "model"), *common]) == 2
    assert "exists; use --force" in capsys.readouterr().err
    assert main(["download", finished["job_id"], "--out", str(tmp_path / "model"), "--force", *common]) == 0
    mine = tmp_path / "mine"
    (mine / "notes").mkdir(parents=True)
    assert main(["download", finished["job_id"], "--out", str(mine), "--force", *common]) == 2
    assert "is not a Rankitect export" in capsys.readouterr().err and (mine / "notes").is_dir()
    (tmp_path / "afile").write_text("")
    for out in (tmp_path / "afile" / "m", Path("/proc/m")):  # a file as the parent; a virtual file system
        assert main(["download", finished["job_id"], "--out", str(out), *common]) == 2
        err = capsys.readouterr().err
        assert f"--out {out}: cannot write there" in err and "Traceback" not in err, err
    assert (tmp_path / "afile").read_text() == ""
    for argv in (["jobs", *common], ["blocks"]):  # `rankitect jobs | head`: the reader left before any write
        reader_gone = subprocess.Popen([sys.executable, "-m", "launcher.cli", *argv], stdout=subprocess.PIPE,
                                       stderr=subprocess.PIPE, cwd=Path(__file__).resolve().parent.parent)
        reader_gone.stdout.close()
        err = reader_gone.stderr.read().decode()
        assert reader_gone.wait(timeout=120) == 141 and err == "", (argv, err)

    for argv, message in [(["cancel", finished["job_id"]], "FAILED_PRECONDITION: job_id: job"),
                          (["resume", "job-999999"], "NOT_FOUND"),
                          (["submit", "--config", str(tmp_path / "missing.yaml")], "--config"),
                          (["watch", finished["job_id"], "--from", "-1"], "--from -1")]:
        assert main([*argv, *common]) == 2, argv
        err = capsys.readouterr().err
        assert message in err and "Traceback" not in err, err
    assert main(["jobs", "--server", server.address]) == 2  # no token
    assert "UNAUTHENTICATED" in capsys.readouterr().err
    assert main(["jobs", "--server", "127.0.0.1:1", "--token-file", str(token_file)]) == 1  # nobody there
    assert "UNAVAILABLE" in capsys.readouterr().err
