"""`rankitect serve` under faults (issue 18): a store that refuses writes, a full disk, drivers and
servers killed at each phase of a job, the queue's limits, other owners' jobs.

Real parts throughout: a real gRPC server on 127.0.0.1, real SQLite, real driver processes on
the session's Ray. A full disk is a real one where the machine lets a test mount a small tmpfs
(root); a write the store refuses is also injected at the store's one write path (JobStore._write),
so that case runs everywhere. Work is held where a fault must hit it by the test gate
(rankitect.test_gate: trials, and the worker's phases "job 0" start, "job 1" export,
"job 2" pack, "job 3" after the artifact), never by timing.

What each case may lose, asserted: nothing. Every event number from 1 to the job's last, once
and in order; the trials told before the fault kept with the same metrics (not retrained);
the job's end recorded with the reason; the artifact whole (its SHA-256).
"""

from __future__ import annotations

import contextlib
import hashlib
import os
import signal
import sqlite3
import subprocess
import sys
import uuid
from collections.abc import Iterator
from pathlib import Path

import grpc
import pytest

from launcher.jobs.runner import JobRunner
from launcher.jobs.store import CANCELLED, CANCELLING, FAILED, RUNNING, SUCCEEDED, JobStore
from launcher.rpc.auth import TokenTable
from launcher.rpc.client import RankitectClient
from launcher.rpc.gen import search_pb2 as spb
from rankitect import test_gate
from tests.conftest import ROOT, wait_until
from tests.helpers import tiny_synth
from tests.rpc_helpers import GOOD_TOKEN, OTHER_TOKEN, running_server, write_token_file
from tests.test_rpc_restart import drivers_of
from tests.test_rpc_search import refused, search_config, state

RANKITECT = str(Path(sys.executable).parent / "rankitect")
WAIT_S = 300  # generous bounds of the waits below; nothing is timed


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("allowed")
    tiny_synth(folder / "ds", days=3, rows_per_day=1200)
    return folder.resolve()


@pytest.fixture
def gated(trial_gate, monkeypatch):
    """The trial gate, seen by the drivers of an in-process server (they inherit this
    process's environment; Ray's workers have it from their cluster)."""
    monkeypatch.setenv(test_gate.ENV_VAR, str(trial_gate.folder))
    return trial_gate


def config(root: Path, trials: int = 2, **sections) -> dict:
    return search_config(root / "ds", trials=trials, baselines=[], **sections)


def wait_state(client: RankitectClient, job_id: str, *states: str, proc: subprocess.Popen | None = None) -> spb.Job:
    seen: list[spb.Job] = []
    wait_until(lambda: seen.append(client.get_job(job_id)) or state(seen[-1]) in states, proc, WAIT_S,
               f"{job_id} in {states}")
    return seen[-1]


def history(client: RankitectClient, job_id: str) -> list[spb.JobEvent]:
    """Every event of the ended job, watched from the first."""
    return list(client.watch_job(job_id))


def assert_nothing_lost(events: list[spb.JobEvent], final: spb.Job) -> None:
    assert [e.number for e in events] == list(range(1, final.last_event + 1))


def trial_metrics(client: RankitectClient, job_id: str) -> dict[int, float]:
    return {t.number: t.metrics.ne for t in client.get_result(job_id).trials if t.status == spb.TRIAL_STATUS_COMPLETE}


def kill(pid: int) -> None:
    os.kill(pid, signal.SIGKILL)
    wait_until(lambda: not Path(f"/proc/{pid}").exists() or _zombie(pid), None, 60, f"process {pid} gone")


def _zombie(pid: int) -> bool:
    try:
        return Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()[0] == "Z"
    except OSError:
        return True


def assert_artifact_whole(client: RankitectClient, job_id: str, folder: Path) -> None:
    info = client.download_artifact(job_id, folder / f"{job_id}.tar.gz")
    assert hashlib.sha256((folder / f"{job_id}.tar.gz").read_bytes()).hexdigest() == info.sha256


# -- a job whose driver is gone (item 7), without Ray ---------------------------------------------
def test_a_job_whose_driver_is_gone_is_never_left_running_or_cancelling(tmp_path) -> None:
    """CancelJob of a RUNNING job that no driver runs ends it CANCELLED (it stayed CANCELLING for
    good); at a start, CANCELLING ones are CANCELLED; while the runner runs, RUNNING and
    CANCELLING jobs without a driver are ended (FAILED with the reason, CANCELLED)."""
    runs = tmp_path / "runs"
    store = JobStore(runs / "jobs.sqlite3")
    runner = JobRunner(store, runs, ray_address="127.0.0.1:1", max_jobs=0)  # starts nothing
    try:
        def job_in(*states: str) -> str:
            job, _ = store.create("alice", None, "seed: 1\n", "d", "random on nasrec", "random", 3)
            for s in states:
                store.transition(job.job_id, s, f"to {s}")
            return job.job_id

        stranded = job_in(RUNNING)
        assert runner.cancel(stranded).state == CANCELLED
        assert store.get(stranded).phase == "cancelled"
        left_cancelling = job_in(RUNNING, CANCELLING)
        runner.start()
        assert store.get(left_cancelling).state == CANCELLED
        lost_running, lost_cancelling = job_in(RUNNING), job_in(RUNNING, CANCELLING)
        wait_until(lambda: store.get(lost_running).final and store.get(lost_cancelling).final, None, 60,
                   "the lost jobs ended")
        failed = store.get(lost_running)
        assert failed.state == FAILED and "driver" in failed.error
        assert store.get(lost_cancelling).state == CANCELLED
        assert runner.resume(lost_running).state == "QUEUED"  # and it can be resumed
    finally:
        runner.stop()
        store.close()


# -- another owner's job (item 10), without Ray ---------------------------------------------------
def test_another_owners_job_is_not_found_exactly_like_a_missing_one(tmp_path) -> None:
    runs = tmp_path / "runs"
    store = JobStore(runs / "jobs.sqlite3")
    job, _ = store.create("alice", None, "seed: 1\n", "d", "random on nasrec", "random", 3)
    store.transition(job.job_id, RUNNING, "started")
    store.transition(job.job_id, SUCCEEDED, "done")
    store.close()
    missing = "job-000099"
    tokens = TokenTable.load(write_token_file(tmp_path / "tokens"))
    with running_server(tokens=tokens, runs_dir=runs) as server, \
            RankitectClient(server.address, token=OTHER_TOKEN, timeout=30) as bob, \
            RankitectClient(server.address, token=GOOD_TOKEN, timeout=30) as alice:
        calls = {"GetJob": bob.get_job, "CancelJob": bob.cancel_job, "ResumeJob": bob.resume_job,
                 "GetResult": bob.get_result, "WatchJob": lambda j: bob.watch_job(j),
                 "DownloadArtifact": lambda j: bob.download_artifact(j, tmp_path / "x.tar.gz")}
        for name, call in calls.items():
            theirs, nothing = refused(call, job.job_id), refused(call, missing)
            assert theirs.code() == nothing.code() == grpc.StatusCode.NOT_FOUND, (name, theirs, nothing)
            assert theirs.details().replace(job.job_id, "ID") == nothing.details().replace(missing, "ID"), name
        assert job.job_id not in [j.job_id for j in bob.list_jobs()]
        assert state(alice.get_job(job.job_id)) == "SUCCEEDED"  # its owner still sees it
        assert refused(alice.resume_job, job.job_id).code() == grpc.StatusCode.FAILED_PRECONDITION


# -- the queue (items 8 and 10) -------------------------------------------------------------------
def test_max_queued_0_takes_a_job_when_a_slot_is_free(ray_cluster, root, gated) -> None:
    """--max-queued 0: no waiting room. A job is taken while the slot is free (today every one
    was refused) and refused while it is taken."""
    gated.hold(first=0, last=0, what="job")  # the driver holds before its search
    with running_server(allow_roots=(root,), ray_address=ray_cluster, max_jobs=1, max_queued=0) as srv, \
            RankitectClient(srv.address, timeout=30) as client:
        first, created = client.submit_search(config(root))
        assert created
        gated.wait_started("job 0")
        error = refused(client.submit_search, config(root, seed=2))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-queued is 0" in error.details()
        client.cancel_job(first.job_id)
        assert state(wait_state(client, first.job_id, "CANCELLED", "FAILED")) == "CANCELLED"
        wait_until(lambda: not drivers_of(srv.options.runs_dir / first.job_id), None, 60, "the driver gone")
        second, created = client.submit_search(config(root, seed=3))  # the slot is free again
        assert created
        client.cancel_job(second.job_id)
        assert state(wait_state(client, second.job_id, "CANCELLED", "FAILED")) == "CANCELLED"
        assert [j.job_id for j in client.list_jobs()] == [second.job_id, first.job_id]


def test_one_owner_cannot_fill_the_shared_queue(ray_cluster, root, gated, tmp_path) -> None:
    gated.hold(first=0, last=0, what="job")
    tokens = TokenTable.load(write_token_file(tmp_path / "tokens"))
    with running_server(tokens=tokens, allow_roots=(root,), ray_address=ray_cluster, max_jobs=1, max_queued=2,
                        max_queued_per_owner=1) as srv, \
            RankitectClient(srv.address, token=GOOD_TOKEN, timeout=30) as alice, \
            RankitectClient(srv.address, token=OTHER_TOKEN, timeout=30) as bob:
        running, _ = alice.submit_search(config(root))  # takes the free slot
        gated.wait_started("job 0")
        waiting, _ = alice.submit_search(config(root, seed=2))
        error = refused(alice.submit_search, config(root, seed=3))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED, error
        assert "--max-queued-per-owner is 1" in error.details() and "'alice'" in error.details()
        bobs, _ = bob.submit_search(config(root, seed=4))  # another owner still gets in
        error = refused(bob.submit_search, config(root, seed=5))
        assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "--max-queued is 2" in error.details()
        for client, job in ((bob, bobs), (alice, waiting), (alice, running)):
            client.cancel_job(job.job_id)
        for client, job in ((bob, bobs), (alice, waiting), (alice, running)):
            assert state(wait_state(client, job.job_id, "CANCELLED", "FAILED")) == "CANCELLED"
        assert len(list(alice.list_jobs())) == 2 and len(list(bob.list_jobs())) == 1


# -- a store that refuses writes (item 7): injected at its one write path ------------------------
@contextlib.contextmanager
def store_refusing_writes(monkeypatch) -> Iterator[dict[str, bool]]:
    """While `on["refuse"]`, every write of every JobStore fails inside its transaction as
    SQLite fails on a full disk."""
    on = {"refuse": False}
    original = JobStore._write

    def write(self, fn, *args):  # noqa: ANN001, ANN202
        if not on["refuse"]:
            return original(self, fn, *args)

        def full(*_args):  # noqa: ANN202
            raise sqlite3.OperationalError("database or disk is full")

        return original(self, full, *args)

    monkeypatch.setattr(JobStore, "_write", write)
    yield on


def test_a_store_that_refuses_writes_fails_the_job_cleanly_and_resume_finishes(
        ray_cluster, root, gated, monkeypatch, tmp_path) -> None:
    """The driver is killed while the store refuses every write: the server goes on answering
    (reads, health; writes RESOURCE_EXHAUSTED naming the full disk), and once the store writes
    again the job is FAILED with the reason (it stayed RUNNING for good); resumed, it finishes
    with the trial told before kept."""
    gated.hold(first=1)
    with store_refusing_writes(monkeypatch) as disk, \
            running_server(allow_roots=(root,), ray_address=ray_cluster, max_jobs=1) as srv, \
            RankitectClient(srv.address, timeout=30) as client:
        job, _ = client.submit_search(config(root))
        seen = []
        for event in client.watch_job(job.job_id):
            seen.append(event)
            if event.WhichOneof("kind") == "trial":
                break
        gated.wait_started("trial 1")
        told = trial_metrics(client, job.job_id)
        assert list(told) == [0]
        disk["refuse"] = True
        (driver,) = drivers_of(srv.options.runs_dir / job.job_id)
        kill(driver)
        gated.wait_stopped("trial 1")
        assert client.health() == "SERVING"
        assert state(client.get_job(job.job_id)) == "RUNNING"  # its end waits for the store
        for call, args in ((client.submit_search, (config(root, seed=2),)), (client.cancel_job, (job.job_id,))):
            error = refused(call, *args)
            assert error.code() == grpc.StatusCode.RESOURCE_EXHAUSTED and "disk is full" in error.details(), error
        disk["refuse"] = False
        failed = wait_state(client, job.job_id, "FAILED", "SUCCEEDED", "CANCELLED")
        assert state(failed) == "FAILED" and "SIGKILL" in failed.error, failed
        gated.release()
        assert state(client.resume_job(job.job_id)) == "QUEUED"
        final = wait_state(client, job.job_id, "SUCCEEDED", "FAILED")
        assert state(final) == "SUCCEEDED" and final.attempts == 2, final.error
        trials = trial_metrics(client, job.job_id)
        assert sorted(trials) == [0, 1] and trials[0] == told[0]
        events = history(client, job.job_id)
        assert_nothing_lost(events, final)
        assert [e.SerializeToString() for e in events[:len(seen)]] == [e.SerializeToString() for e in seen]
        assert_artifact_whole(client, job.job_id, tmp_path)


# -- a real full disk (item 7): a small tmpfs --------------------------------------------------------
@contextlib.contextmanager
def small_disk(folder: Path, size: str = "96m") -> Iterator[Path]:
    folder.mkdir(parents=True)
    if os.geteuid() != 0:
        pytest.skip("mounting a tmpfs needs root; the injected write failure covers the store")
    done = subprocess.run(["mount", "-t", "tmpfs", "-o", f"size={size},mode=0755", "tmpfs", str(folder)],
                          capture_output=True, text=True)
    if done.returncode != 0:
        pytest.skip(f"cannot mount a tmpfs here: {done.stderr.strip()}")
    try:
        yield folder
    finally:
        subprocess.run(["umount", "-l", str(folder)], capture_output=True)


def fill(disk: Path) -> Path:
    """A file that takes every free byte of `disk`."""
    filler = disk / f"filler-{uuid.uuid4().hex}"
    with open(filler, "wb", buffering=0) as handle:
        for chunk in (1 << 20, 4096, 512):
            try:
                while True:
                    handle.write(b"\0" * chunk)
            except OSError:
                pass
    return filler


def test_a_full_disk_fails_the_job_cleanly_and_resume_finishes_after_space_returns(
        ray_cluster, root, gated, tmp_path) -> None:
    """The runs folder and the store on a tmpfs that fills while the driver is held before
    its export: the driver fails (no space), the job ends FAILED with that reason (at the
    latest once space returns) and never stays RUNNING; resumed after space returns, it
    finishes with the same trials and a whole artifact."""
    with small_disk(tmp_path / "disk") as disk:
        gated.hold(first=1, last=1, what="job")  # held before the export
        with running_server(allow_roots=(root,), ray_address=ray_cluster, max_jobs=1,
                            runs_dir=disk / "runs") as srv, RankitectClient(srv.address, timeout=30) as client:
            job, _ = client.submit_search(config(root))
            gated.wait_started("job 1")
            told = trial_metrics(client, job.job_id)
            assert sorted(told) == [0, 1]
            filler = fill(disk)
            gated.release()
            wait_until(lambda: not drivers_of(disk / "runs" / job.job_id), None, WAIT_S, "the driver ended")
            assert client.health() == "SERVING"
            assert state(client.get_job(job.job_id)) in ("RUNNING", "FAILED")
            filler.unlink()  # space returns
            failed = wait_state(client, job.job_id, "FAILED", "SUCCEEDED", "CANCELLED")
            assert state(failed) == "FAILED", failed
            assert "No space left on device" in failed.error or "disk is full" in failed.error, failed.error
            client.resume_job(job.job_id)  # the gate was released: nothing is held
            final = wait_state(client, job.job_id, "SUCCEEDED", "FAILED")
            assert state(final) == "SUCCEEDED", final.error
            assert trial_metrics(client, job.job_id) == told
            assert_nothing_lost(history(client, job.job_id), final)
            assert_artifact_whole(client, job.job_id, tmp_path)


# -- kills at each phase of a job -------------------------------------------------------------------
def test_a_driver_killed_at_each_phase_loses_nothing(ray_cluster, root, gated, tmp_path) -> None:
    """One job, its driver SIGKILLed at every phase in turn and the job resumed after each:
    before its search, with a trial held (trial 0 told), before the export, before the
    packing, after the artifact was reported. Each kill is FAILED naming SIGKILL; the end is
    the job it would have been."""
    phases = [("job", 0, "job 0"), ("trial", 1, "trial 1"), ("job", 1, "job 1"), ("job", 2, "job 2"),
              ("job", 3, "job 3")]
    with running_server(allow_roots=(root,), ray_address=ray_cluster, max_jobs=1) as srv, \
            RankitectClient(srv.address, timeout=30) as client:
        run_dir = srv.options.runs_dir
        told: dict[int, float] = {}
        job = None
        for attempt, (what, number, point) in enumerate(phases, start=1):
            gated.hold(first=number, last=None if what == "trial" else number, what=what)
            if job is None:
                job, _ = client.submit_search(config(root))
            else:
                assert state(client.resume_job(job.job_id)) == "QUEUED"
            gated.wait_started(point, also=lambda: what != "trial" or len(trial_metrics(client, job.job_id)) == 1)
            now = trial_metrics(client, job.job_id)
            assert {n: now[n] for n in told} == told  # kept, not retrained
            told = now
            (driver,) = drivers_of(run_dir / job.job_id)
            kill(driver)
            if what == "trial":
                gated.wait_stopped(point)
            failed = wait_state(client, job.job_id, "FAILED", "SUCCEEDED", "CANCELLED")
            assert state(failed) == "FAILED" and "SIGKILL" in failed.error and failed.attempts == attempt, failed
        gated.release()
        client.resume_job(job.job_id)
        final = wait_state(client, job.job_id, "SUCCEEDED", "FAILED")
        assert state(final) == "SUCCEEDED" and final.attempts == len(phases) + 1, final.error
        assert trial_metrics(client, job.job_id) == told and sorted(told) == [0, 1]
        events = history(client, job.job_id)
        assert_nothing_lost(events, final)
        states = [state(e.state) for e in events if e.WhichOneof("kind") == "state"]
        assert states == ["QUEUED"] + ["RUNNING", "FAILED", "QUEUED"] * len(phases) + ["RUNNING", "SUCCEEDED"]
        assert_artifact_whole(client, job.job_id, tmp_path)


def start_server(tmp_path: Path, ray_address: str, gate: Path, log_name: str) -> tuple[subprocess.Popen, str]:
    command = [RANKITECT, "serve", "--port", "0", "--address", ray_address, "--allow-root", str(tmp_path),
               "--runs-dir", str(tmp_path / "runs"), "--max-jobs", "1"]
    log = open(tmp_path / log_name, "w")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1", test_gate.ENV_VAR: str(gate)})
    line = proc.stdout.readline()
    assert line.startswith("rankitect serve: listening on "), line + (tmp_path / log_name).read_text()
    return proc, line.split()[4]


def test_a_server_killed_at_each_phase_loses_nothing(ray_cluster, trial_gate, tmp_path) -> None:
    """The real command SIGKILLed with job A at every phase in turn (before its search, a trial
    held, after the artifact; a driver killed before the export is the test above) and job B
    queued behind it all along, then started again on the same store: both finish, A's told
    trials kept, every event once, ids never reused."""
    data = tiny_synth(tmp_path / "ds", days=3, rows_per_day=1200)
    phases = [("job", 0, "job 0"), ("trial", 1, "trial 1"), ("job", 3, "job 3")]
    a = b = None
    told: dict[int, float] = {}
    for restart, (what, number, point) in enumerate(phases):
        trial_gate.hold(first=number, last=None if what == "trial" else number, what=what)
        proc, address = start_server(tmp_path, ray_cluster, trial_gate.folder, f"serve{restart}.log")
        try:
            with RankitectClient(address, timeout=30) as client:
                if a is None:
                    a, _ = client.submit_search(search_config(data, trials=2, baselines=[]))
                    b, _ = client.submit_search(search_config(data, trials=1, baselines=[], seed=7))
                trial_gate.wait_started(point, proc=proc,
                                        also=lambda: what != "trial" or len(trial_metrics(client, a.job_id)) == 1)
                now = trial_metrics(client, a.job_id)
                assert {n: now[n] for n in told} == told
                told = now
                assert state(client.get_job(b.job_id)) == "QUEUED"
        finally:
            proc.send_signal(signal.SIGKILL)
            proc.wait()
        # The driver got SIGINT as its parent died, and saved what it had.
        wait_until(lambda: not drivers_of(tmp_path / "runs" / a.job_id), None, 120, "A's driver stopped")
        if what == "trial":
            trial_gate.wait_stopped(point)
    trial_gate.release()
    proc, address = start_server(tmp_path, ray_cluster, trial_gate.folder, "serve-last.log")
    try:
        with RankitectClient(address, timeout=30) as client:
            finals = {j.job_id: wait_state(client, j.job_id, "SUCCEEDED", "FAILED", proc=proc) for j in (a, b)}
            assert {state(f) for f in finals.values()} == {"SUCCEEDED"}, [f.error for f in finals.values()]
            assert finals[a.job_id].attempts == len(phases) + 1 and finals[b.job_id].attempts == 1
            assert trial_metrics(client, a.job_id) == told and sorted(told) == [0, 1]
            for job_id, final in finals.items():
                events = history(client, job_id)
                assert_nothing_lost(events, final)
            restarts = [e.state.message for e in history(client, a.job_id)
                        if e.WhichOneof("kind") == "state" and "server restarted" in e.state.message]
            assert len(restarts) == len(phases)
            assert_artifact_whole(client, a.job_id, tmp_path)
            newer, _ = client.submit_search(search_config(data, trials=1, baselines=[]), validate_only=False)
            client.cancel_job(newer.job_id)
            assert newer.job_id > b.job_id > a.job_id  # never reused, across every restart
    finally:
        proc.send_signal(signal.SIGTERM)
        proc.communicate(timeout=120)
    assert proc.returncode == 0
