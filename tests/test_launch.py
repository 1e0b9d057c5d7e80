"""`rankitect launch`: a search submitted to a real Ray head (with its dashboard) through the Jobs API.

One head for the module, on 127.0.0.1 with every port moved; the jobs run the repo's code
(shipped as the working dir) with the venv's python.
"""

from __future__ import annotations

import os
import re
import shutil
import signal
import subprocess
import sys
import tempfile
import time
import urllib.request
from collections.abc import Iterator
from pathlib import Path

import pytest
import yaml

from launcher.cli import main
from launcher.jobs.local_ray import free_port, moved_ports
from tests.conftest import ROOT, ray_env, stop_cluster
from tests.helpers import tiny_synth


@pytest.fixture(scope="module")
def head(gate_dir) -> Iterator[str]:
    """The dashboard URL of a Ray head started for this module (2 CPUs, Jobs API on). Its
    jobs inherit its environment, the test gate's variable included (`trial_gate` holds them)."""
    temp_dir = Path(tempfile.mkdtemp(prefix="rkray-", dir="/tmp"))
    env = ray_env(temp_dir, gate_dir)
    env["PATH"] = f"{Path(sys.executable).parent}{os.pathsep}{env.get('PATH', '')}"  # the jobs' `python`
    dashboard_port = free_port()
    ports = [f"--port={free_port()}", *moved_ports(keep=("dashboard-port",))]  # every fixed default moved
    try:
        subprocess.run([str(Path(sys.executable).parent / "ray"), "start", "--head", "--num-cpus=2",
                        "--include-dashboard=true", "--dashboard-host=127.0.0.1",
                        f"--dashboard-port={dashboard_port}", "--node-ip-address=127.0.0.1",
                        f"--temp-dir={temp_dir}", "--disable-usage-stats", "--object-store-memory=300000000",
                        *ports], env=env, check=True, capture_output=True)
        url = f"http://127.0.0.1:{dashboard_port}"
        deadline = time.monotonic() + 60
        while True:
            try:
                with urllib.request.urlopen(f"{url}/api/version", timeout=2):
                    break
            except OSError:
                if time.monotonic() > deadline:
                    raise
                time.sleep(0.3)
        yield url
    finally:
        stop_cluster(temp_dir)
        shutil.rmtree(temp_dir, ignore_errors=True)


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("launch") / "ds", days=3, rows_per_day=2000)


def _config(tmp_path: Path, data_path: str, **extra: object) -> Path:
    """A tiny random search (2 trials, 1 epoch, no baselines) written to tmp_path/tiny.yaml."""
    config = {"data": {"path": data_path, "train_dates": "first:1", "valid_dates": "2024-01-02",
                       "test_dates": "last:1"},
              "space": {"name": "nasrec", "blocks": 2}, "searcher": {"name": "random"},
              "budget": {"trials": 2}, "train": {"epochs": 1, "batch_size": 256}, "baselines": [], **extra}
    path = tmp_path / "tiny.yaml"
    path.write_text(yaml.safe_dump(config))
    return path


def _client(url: str):  # noqa: ANN202
    from ray.job_submission import JobSubmissionClient

    return JobSubmissionClient(url)


def test_launch_runs_the_search_on_the_cluster_and_follows_its_log(head, data, tmp_path, monkeypatch,
                                                                   capsys) -> None:
    monkeypatch.chdir(tmp_path)  # relative paths are resolved here, not in the job's copy of the repo
    config = _config(tmp_path, os.path.relpath(data, tmp_path))
    assert main(["launch", "--cluster", head, "--config", str(config), "--working-dir", str(ROOT),
                 "--out", "run"]) == 0
    captured = capsys.readouterr()
    run = tmp_path / "run"
    assert f"the cluster reads data from {data} and writes the run to {run}" in captured.err
    assert f"wrote {run / 'result.json'}" in captured.out  # the job's log, followed
    assert "SUCCEEDED" in captured.err and "Traceback" not in captured.err
    result = yaml.safe_load((run / "result.json").read_text())
    assert [t["number"] for t in result["trials"]] == [0, 1]
    assert all(t["status"] == "complete" for t in result["trials"])

    # The finished job can be followed again (whole log, final status) and not stopped.
    job_id = re.search(r"submitted job (\S+):", captured.err).group(1)
    assert main(["launch", "--cluster", head, "--follow", job_id]) == 0
    captured = capsys.readouterr()
    assert f"wrote {run / 'result.json'}" in captured.out and f"job {job_id} SUCCEEDED" in captured.err
    assert main(["launch", "--cluster", head, "--stop", job_id]) == 0
    assert "already SUCCEEDED" in capsys.readouterr().err


def test_ctrl_c_detaches_then_stop_and_follow_the_running_job(head, data, tmp_path, capsys, trial_gate) -> None:
    """Ctrl-C once trial 0 is told and trials 1 and 2 are held: the job keeps running until
    stopped; stopped, it saves exactly trial 0 and its held workers end."""
    config = _config(tmp_path, str(data), budget={"trials": 50})
    client, run = _client(head), tmp_path / "run"
    jobs_before = {job.submission_id for job in client.list_jobs()}
    trial_gate.hold(first=1)
    proc = subprocess.Popen([str(Path(sys.executable).parent / "rankitect"), "launch", "--cluster", head,
                             "--config", str(config), "--working-dir", str(ROOT), "--out", str(run)],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    trial_gate.wait_started("trial 1", "trial 2", proc=proc)  # trial 2 is asked once trial 0 is told
    [job_id] = [job.submission_id for job in client.list_jobs() if job.submission_id not in jobs_before]
    proc.send_signal(signal.SIGINT)
    _, err = proc.communicate(timeout=30)
    assert proc.returncode == 130 and "Traceback" not in err
    assert f"detached; job {job_id} keeps running" in err and f"--stop {job_id}" in err
    assert client.get_job_status(job_id).value == "RUNNING"

    # Stopped with SIGINT, the search saves what it has, as after a Ctrl-C on a terminal.
    assert main(["launch", "--cluster", head, "--stop", job_id]) == 0
    assert f"job {job_id} STOPPED" in capsys.readouterr().err
    deadline = time.monotonic() + 30  # Ray may report STOPPED while the driver still saves
    while not (run / "result.json").is_file() and time.monotonic() < deadline:
        time.sleep(0.2)
    result = yaml.safe_load((run / "result.json").read_text())
    assert [t["number"] for t in result["trials"]] == [0]
    trial_gate.wait_stopped("trial 1", "trial 2")
    assert main(["launch", "--cluster", head, "--follow", job_id]) == 1  # followed to its end: not a success
    captured = capsys.readouterr()
    assert "search interrupted; run the same command again to continue" in captured.out
    assert f"job {job_id} STOPPED" in captured.err
    assert main(["launch", "--cluster", head, "--stop", job_id]) == 0
    assert "already STOPPED" in capsys.readouterr().err
    assert main(["launch", "--cluster", head, "--follow", "no-such-job"]) == 2
    assert "'no-such-job': no such job" in capsys.readouterr().err


def test_no_follow_prints_the_job_id_and_returns(head, data, tmp_path, capsys, trial_gate) -> None:
    config = _config(tmp_path, str(data))
    trial_gate.hold()  # no trial ends: the job is still running when stopped
    assert main(["launch", "--cluster", head, "--config", str(config), "--working-dir", str(ROOT),
                 "--out", str(tmp_path / "run"), "--no-follow"]) == 0
    captured = capsys.readouterr()
    job_id = captured.out.strip()
    assert f"--follow {job_id}" in captured.err and f"--stop {job_id}" in captured.err
    assert _client(head).get_job_status(job_id).value in ("PENDING", "RUNNING")
    trial_gate.wait_started("trial 0", "trial 1")
    assert main(["launch", "--cluster", head, "--stop", job_id]) == 0
    assert f"job {job_id} STOPPED" in capsys.readouterr().err
    trial_gate.wait_stopped("trial 0", "trial 1")


@pytest.mark.parametrize("overrides, message", [
    (["--set", "budget.trials=-1"], "budget.trials: must be >= 1, got -1"),
    (["--set", "searcher.name=nope"], "searcher.name: unknown searcher 'nope'"),
    (["--set", "data.valid_dates=2030-01-01"], "data.valid_dates"),
    (["--set", "data.path=/nowhere/ds", "--set", "space.name=nope"], "space.name: unknown search space"),
])
def test_a_bad_config_submits_nothing(head, data, tmp_path, capsys, overrides, message) -> None:
    jobs_before = {job.submission_id for job in _client(head).list_jobs()}
    config = _config(tmp_path, str(data))
    assert main(["launch", "--cluster", head, "--config", str(config), *overrides]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert {job.submission_id for job in _client(head).list_jobs()} == jobs_before


@pytest.mark.parametrize("argv, message", [
    (["--cluster", "ftp://x", "--follow", "j"], "--cluster 'ftp://x': must be the Ray dashboard's http(s)"),
    (["--cluster", "127.0.0.1:8265", "--follow", "j"], "--cluster '127.0.0.1:8265'"),
    (["--cluster", "http://x", "--follow", "j", "--set", "seed=1"], "--set: goes with --config only"),
])
def test_bad_flags_exit_2(capsys, argv, message) -> None:
    assert main(["launch", *argv]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_an_unreachable_cluster_exits_2_naming_it(capsys) -> None:
    url = f"http://127.0.0.1:{free_port()}"  # nothing listens there
    assert main(["launch", "--cluster", url, "--follow", "j"]) == 2
    err = capsys.readouterr().err
    assert f"--cluster {url}: cannot reach the Ray dashboard" in err and "Traceback" not in err
