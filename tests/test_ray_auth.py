"""Ray's token authentication on the Rays Rankitect starts, and their folders after a SIGKILL.

Real Rays: `ray start --head` through LocalRayHead (as `rankitect serve` starts it) with its
dashboard and Jobs API, and a `ray.init` local Ray in a subprocess (as `rankitect search`
starts it), each asked over its own wire without, with a wrong and with the right token.
"""

from __future__ import annotations

import os
import shutil
import signal
import stat
import subprocess
import sys
import tempfile
import textwrap
import urllib.error
import urllib.request
from pathlib import Path

import pytest

from launcher.jobs.local_ray import (
    FOLDER_PREFIX,
    OWNER_FILE,
    LocalRayHead,
    _process_identity,
    remove_stale_folders,
)

ROOT = Path(__file__).resolve().parents[1]


def _status(url: str, token: str | None) -> int:
    request = urllib.request.Request(url, headers={"Authorization": f"Bearer {token}"} if token else {})
    try:
        with urllib.request.urlopen(request, timeout=30) as reply:
            return reply.status
    except urllib.error.HTTPError as exc:
        return exc.code


def _without_auth_env() -> dict[str, str]:
    return {k: v for k, v in os.environ.items() if not k.startswith("RAY_AUTH")}


@pytest.fixture(scope="module")
def head() -> LocalRayHead:
    ray = LocalRayHead(num_cpus=1, dashboard=True)
    ray.start()
    yield ray
    ray.stop()


def test_the_serve_ray_wants_its_token_on_the_jobs_api(head: LocalRayHead) -> None:
    token_file = head.token_file
    assert token_file is not None and not token_file.is_relative_to(Path.home())
    assert stat.S_IMODE(token_file.stat().st_mode) == 0o600
    assert stat.S_IMODE(token_file.parent.stat().st_mode) == 0o700
    token = token_file.read_text()
    assert len(token) >= 32
    jobs = f"{head.dashboard_url}/api/jobs/"
    assert _status(jobs, None) == 401
    assert _status(jobs, "0" * len(token)) == 403
    assert _status(jobs, token) == 200
    env = head.environment()
    assert env["RAY_AUTH_MODE"] == "token" and env["RAY_AUTH_TOKEN_PATH"] == str(token_file)


def test_launch_sends_the_token_it_is_given(head: LocalRayHead) -> None:
    """`rankitect launch --cluster` (a process of its own: Ray reads the mode once per process)."""
    stop = [sys.executable, "-m", "launcher.cli", "launch", "--cluster", head.dashboard_url, "--stop",
            "raysubmit_nothing"]
    bare = subprocess.run(stop, env=_without_auth_env(), capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert bare.returncode == 2 and "RAY_AUTH_TOKEN" in bare.stderr and "Traceback" not in bare.stderr, bare.stderr
    given = subprocess.run(stop, env={**_without_auth_env(), "RAY_AUTH_TOKEN_PATH": str(head.token_file)},
                           capture_output=True, text=True, timeout=120, cwd=ROOT)
    assert given.returncode == 2 and "raysubmit_nothing" in given.stderr, given.stderr
    assert "RAY_AUTH_TOKEN" not in given.stderr and "Traceback" not in given.stderr, given.stderr


def test_a_driver_without_the_token_is_refused(head: LocalRayHead) -> None:
    join = "import ray; ray.init(address=%r); print(ray.cluster_resources()['CPU'])" % head.address
    wrong = {**_without_auth_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "0" * 64}
    refused = subprocess.run([sys.executable, "-c", join], env=wrong, capture_output=True, text=True, timeout=120)
    assert refused.returncode != 0 and "auth" in (refused.stdout + refused.stderr).lower()
    joined = subprocess.run([sys.executable, "-c", join], env=head.environment(), capture_output=True, text=True,
                            timeout=120)
    assert joined.returncode == 0 and joined.stdout.strip().endswith("1.0"), joined.stderr[-2000:]


def test_a_local_search_ray_gets_an_owner_only_token(tmp_path: Path) -> None:
    """`rankitect search` without --address: ray.init's local Ray runs with this user's token,
    kept in the Rays' own folder (owner-only), and refuses a driver without it."""
    temp = Path(tempfile.mkdtemp(prefix="rka-", dir="/tmp"))  # short: Ray's socket paths are limited
    env = {**_without_auth_env(), "TMPDIR": str(temp)}
    script = textwrap.dedent("""
        import os, sys
        from rankitect.experiment.ray_env import loopback_environment
        loopback_environment(None)
        from rankitect.experiment.executor import ray_session
        import ray
        with ray_session():
            print(os.environ["RAY_AUTH_MODE"], os.environ["RAY_AUTH_TOKEN_PATH"],
                  ray.get_runtime_context().gcs_address, flush=True)
            sys.stdin.readline()
    """)
    local = subprocess.Popen([sys.executable, "-c", script], env=env, stdin=subprocess.PIPE,
                             stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, cwd=ROOT)
    try:
        mode, token_path, address = local.stdout.readline().split()
        assert mode == "token" and Path(token_path).parent == temp / f"rankitect-ray-auth-{os.getuid()}"
        assert stat.S_IMODE(Path(token_path).stat().st_mode) == 0o600
        assert stat.S_IMODE(Path(token_path).parent.stat().st_mode) == 0o700
        join = f"import ray; ray.init(address={address!r}); print('joined')"
        wrong = {**_without_auth_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN": "1" * 64}
        refused = subprocess.run([sys.executable, "-c", join], env=wrong, capture_output=True, text=True,
                                 timeout=120)
        assert refused.returncode != 0 and "joined" not in refused.stdout
        right = {**_without_auth_env(), "RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": token_path}
        joined = subprocess.run([sys.executable, "-c", join], env=right, capture_output=True, text=True, timeout=120)
        assert "joined" in joined.stdout, joined.stderr[-2000:]
    finally:
        local.communicate("\n", timeout=120)
        shutil.rmtree(temp, ignore_errors=True)
    assert local.returncode == 0


def test_a_sigkilled_servers_ray_folder_goes_at_the_next_start() -> None:
    script = ("from launcher.jobs.local_ray import LocalRayHead; import time\n"
              "h = LocalRayHead(num_cpus=1); h.start(); print(h._temp_dir, flush=True); time.sleep(600)")
    server = subprocess.Popen([sys.executable, "-c", script], stdout=subprocess.PIPE, text=True, cwd=ROOT,
                              env=_without_auth_env())
    folder = Path(server.stdout.readline().strip())
    assert folder.name.startswith(FOLDER_PREFIX) and folder.is_dir()
    mine = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir="/tmp"))  # a live server's folder stays
    (mine / OWNER_FILE).write_text(_process_identity(os.getpid()))
    try:
        server.send_signal(signal.SIGKILL)
        server.wait(timeout=60)
        assert folder.is_dir()  # nothing of the server ran to remove it
        removed = remove_stale_folders()
        assert folder in removed and not folder.exists()
        assert mine.is_dir() and mine not in removed
    finally:
        shutil.rmtree(mine, ignore_errors=True)
