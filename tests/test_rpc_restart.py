"""`rankitect serve` killed with SIGKILL while a job runs, then started again on the same store:
the job is found and continues, its finished trials kept; the watcher re-attaches where it
left off; no event is lost or repeated and no job id is reused. The server is the real command
(a subprocess) on the session's Ray."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import time
from pathlib import Path

import pytest

from launcher.rpc.client import RankitectClient
from launcher.rpc.gen import search_pb2 as spb
from tests.conftest import ROOT
from tests.helpers import tiny_synth
from tests.test_rpc_search import search_config, state

RANKITECT = str(Path(sys.executable).parent / "rankitect")


def start_server(tmp_path: Path, ray_address: str, log_name: str) -> tuple[subprocess.Popen, str]:
    command = [RANKITECT, "serve", "--port", "0", "--address", ray_address, "--allow-root", str(tmp_path),
               "--runs-dir", str(tmp_path / "runs"), "--db", str(tmp_path / "jobs.sqlite3"), "--max-jobs", "1"]
    log = open(tmp_path / log_name, "w")
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=log, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    line = proc.stdout.readline()
    assert line.startswith("rankitect serve: listening on "), line + (tmp_path / log_name).read_text()
    return proc, line.split()[4]


def drivers_of(run_dir: Path) -> list[int]:
    """Pids of the job driver processes working in `run_dir`."""
    pids = []
    for proc in Path("/proc").iterdir():
        try:
            if proc.name.isdigit() and str(run_dir).encode() in (proc / "cmdline").read_bytes() \
                    and b"launcher.jobs.worker" in (proc / "cmdline").read_bytes():
                pids.append(int(proc.name))
        except OSError:
            continue
    return pids


def test_sigkill_and_restart_continue_the_job(ray_cluster, tmp_path, trial_gate) -> None:
    """The server is killed once trial 0 is told, with trials 1 and 2 held (nothing else can
    end meanwhile); the restarted server runs the job to its end, trial 0 kept."""
    data = tiny_synth(tmp_path / "ds", days=3, rows_per_day=1200)
    trial_gate.hold(first=1)
    proc, address = start_server(tmp_path, ray_cluster, "serve1.log")
    seen: list[spb.JobEvent] = []
    try:
        with RankitectClient(address, timeout=30) as client:
            job, _ = client.submit_search(search_config(data, trials=3, baselines=[]))
            for event in client.watch_job(job.job_id):
                seen.append(event)
                if event.WhichOneof("kind") == "trial":
                    break
            trial_gate.wait_started("trial 1", "trial 2")
            before_kill = {t.number: t.metrics.ne for t in client.get_result(job.job_id).trials}
    finally:
        proc.send_signal(signal.SIGKILL)
        proc.wait()
    assert list(before_kill) == [0]
    run_dir = tmp_path / "runs" / job.job_id
    deadline = time.monotonic() + 60
    while drivers_of(run_dir) and time.monotonic() < deadline:  # the driver got SIGINT as its parent died
        time.sleep(0.5)
    assert drivers_of(run_dir) == []
    trial_gate.wait_stopped("trial 1", "trial 2")  # and its held workers went with it
    trial_gate.release()

    proc, address = start_server(tmp_path, ray_cluster, "serve2.log")
    try:
        with RankitectClient(address, timeout=30) as client:
            rest = list(client.watch_job(job.job_id, from_event=seen[-1].number + 1))
            final = client.get_job(job.job_id)
            trials = {t.number: t.metrics.ne for t in client.get_result(job.job_id).trials}
            history = list(client.watch_job(job.job_id))
            second, _ = client.submit_search(search_config(data, trials=1, baselines=[]), validate_only=False)
            client.cancel_job(second.job_id)
    finally:
        proc.send_signal(signal.SIGTERM)
        out, _ = proc.communicate(timeout=120)
    assert proc.returncode == 0
    numbers = [e.number for e in seen + rest]
    assert numbers == list(range(1, len(numbers) + 1))  # nothing lost, nothing repeated
    assert [e.SerializeToString(deterministic=True) for e in history] == [e.SerializeToString(deterministic=True) for e in seen + rest]
    states = [(state(e.state), e.state.message) for e in rest if e.WhichOneof("kind") == "state"]
    assert states[0][0] == "QUEUED" and "server restarted" in states[0][1]
    assert [s for s, _ in states[1:]] == ["RUNNING", "SUCCEEDED"]
    assert state(final) == "SUCCEEDED" and final.attempts == 2
    assert sorted(trials) == list(range(3))
    assert {n: trials[n] for n in before_kill} == pytest.approx(before_kill)  # kept, not retrained
    assert second.job_id > job.job_id  # ids only grow, also across restarts
