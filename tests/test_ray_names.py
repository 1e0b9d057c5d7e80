"""`rankitect search --dashboard` and `rankitect serve --dashboard`: a local Ray with its
dashboard, where Ray's state API lists the running search's calls by what they run and its
workers by whose they are."""

from __future__ import annotations

import os
import signal
import subprocess
import sys
import threading
import urllib.error
import urllib.request
from pathlib import Path

import pytest
import yaml

from launcher.rpc.client import RankitectClient
from tests.conftest import ROOT, wait_until
from tests.helpers import tiny_synth
from tests.rpc_helpers import GOOD_TOKEN, write_token_file

RANKITECT = str(Path(sys.executable).parent / "rankitect")


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("names") / "ds", days=3, rows_per_day=600)


def _config(data: Path) -> dict:
    return {"data": {"path": str(data), "train_dates": "first:1", "valid_dates": "2024-01-02",
                       "test_dates": "last:1"},
              "space": {"name": "nasrec", "blocks": 1}, "searcher": {"name": "random"}, "budget": {"trials": 2},
              "train": {"epochs": 1, "batch_size": 256}, "baselines": ["lr"]}


def test_the_state_api_lists_the_named_calls_of_a_running_search(data, tmp_path, trial_gate) -> None:
    from ray.util.state import list_actors, list_tasks

    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(_config(data)))
    out = tmp_path / "run"
    trial_gate.hold(first=0, last=0)
    proc = subprocess.Popen([RANKITECT, "search", "--config", str(path), "--out", str(out), "--dashboard"],
                            cwd=ROOT, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **trial_gate.env})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        wait_until(lambda: any(line.startswith("Ray dashboard: http://") for line in lines), proc, 180,
                   "the dashboard's URL")
        url = next(line for line in lines if line.startswith("Ray dashboard: ")).split()[2]
        trial_gate.wait_started("trial 0", proc=proc)

        def running(name: str) -> bool:
            return any(t.name == name for t in list_tasks(address=url, filters=[("state", "=", "RUNNING")],
                                                          raise_on_missing_output=False))

        wait_until(lambda: running("trial 0"), proc, 120, "trial 0 running in Ray's task list")
        # The state API is eventually consistent: tasks and actors' names arrive as Ray reports them.
        def names() -> set[str]:
            return {t.name for t in list_tasks(address=url, limit=1000, raise_on_missing_output=False)}

        def workers() -> list:
            return [a for a in list_actors(address=url, detail=True, raise_on_missing_output=False)
                    if a.class_name == "TrialWorker"]

        # The baseline trained beside the search, by its name.
        wait_until(lambda: "baseline lr" in names(), proc, 60, "baseline lr in Ray's task list")
        assert not any(n.endswith(".run") for n in names())  # no call is shown as TrialWorker.run
        wait_until(lambda: workers() and all(a.repr_name for a in workers()), proc, 60, "the workers' names")
        assert all(a.repr_name == f"TrialWorker(search {out}, 1 CPUs)" for a in workers()), \
            [a.repr_name for a in workers()]
    finally:
        trial_gate.release()
    assert proc.wait(240) == 0
    reader.join(10)


def test_serve_with_a_dashboard_prints_its_url_at_its_first_job(data, tmp_path, trial_gate) -> None:
    """The server starts its local Ray, with the dashboard, at its first job and prints the URL.
    That Ray runs with the server's own token (test_ray_auth.py), so the page loads and its API
    answers 401 without the token, on loopback."""
    command = [RANKITECT, "serve", "--port", "0", "--dashboard", "--token-file",
               str(write_token_file(tmp_path / "tokens")), "--allow-root", str(data.parent),
               "--runs-dir", str(tmp_path / "runs")]
    trial_gate.hold(first=0, last=0)
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, **trial_gate.env, "PYTHONUNBUFFERED": "1"})
    lines: list[str] = []
    reader = threading.Thread(target=lambda: lines.extend(proc.stderr), daemon=True)
    reader.start()
    try:
        listening = proc.stdout.readline()
        assert listening.startswith("rankitect serve: listening on 127.0.0.1:"), listening
        with RankitectClient(listening.split()[4], token=GOOD_TOKEN, timeout=30) as client:
            job, _ = client.submit_search(_config(data))
            trial_gate.wait_started("trial 0", proc=proc)  # the job runs on the server's Ray
            wait_until(lambda: any(line.startswith("Ray dashboard: ") for line in lines), proc, 60,
                       "the dashboard's URL")
            (line,) = [line for line in lines if line.startswith("Ray dashboard: ")]
            url = line.split()[2]
            assert url.startswith("http://127.0.0.1:")
            with urllib.request.urlopen(url, timeout=30) as page:
                assert page.status == 200 and b"<html" in page.read().lower()
            with pytest.raises(urllib.error.HTTPError) as refused:
                urllib.request.urlopen(f"{url}/api/v0/tasks", timeout=30)
            assert refused.value.code == 401
            client.cancel_job(job.job_id)
    finally:
        trial_gate.release()
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(120)
        finally:
            if proc.poll() is None:
                proc.kill()
                proc.wait()
    reader.join(10)
