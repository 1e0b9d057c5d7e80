"""Shared fixtures. Real data samples live in ../shared/data (skipped with a reason if absent)."""

from __future__ import annotations

import os
from pathlib import Path

import pytest

# Before anything imports Ray: keep test clusters on loopback (Ray reads this at import).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RANKITECT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data with the real Criteo and Avazu sample rows."""
    if not (SHARED_DATA / "criteo_sample.txt").is_file():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set RANKITECT_SHARED_DATA)")
    return SHARED_DATA


def ray_env(temp_dir: Path) -> dict[str, str]:
    """Environment that keeps a Ray cluster on loopback and its files out of the home folder."""
    from launcher.jobs.local_ray import loopback_env

    return {**loopback_env(), "RAY_TMPDIR": str(temp_dir)}


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory) -> str:
    """A real Ray head started with `ray start` on 127.0.0.1 (2 CPUs), shared by the whole session.

    The test process is connected to it too, so `search()` called in a test uses it; drivers
    started as subprocesses get its address.
    """
    import subprocess
    import sys
    import tempfile

    import ray

    from launcher.jobs.local_ray import free_port, moved_ports

    temp_dir = Path(tempfile.mkdtemp(prefix="rkray-", dir="/tmp"))
    env = ray_env(temp_dir)
    ray_bin = str(Path(sys.executable).parent / "ray")
    port = free_port()
    ports = moved_ports()  # two test sessions (or a user's Ray) coexist
    subprocess.run([ray_bin, "start", "--head", f"--port={port}", "--num-cpus=2", "--include-dashboard=false",
                    "--node-ip-address=127.0.0.1", f"--temp-dir={temp_dir}", "--disable-usage-stats",
                    "--object-store-memory=300000000", *ports], env=env, check=True, capture_output=True)
    address = f"127.0.0.1:{port}"
    ray.init(address=address, logging_level="WARNING", log_to_driver=False, _node_ip_address="127.0.0.1")
    yield address
    ray.shutdown()
    stop_cluster(temp_dir)


def stop_cluster(temp_dir: Path) -> None:
    """Stop the Ray processes of one cluster (those whose command line names its temp dir).

    `ray stop` would stop every Ray of this user on the machine, other sessions' included.
    """
    import signal
    import time

    def belongs(proc: Path) -> bool:
        """Its command line names the temp dir, or (agents rename themselves "ray::...") it
        holds a file open under it."""
        if str(temp_dir).encode() in (proc / "cmdline").read_bytes():
            return True
        for fd in (proc / "fd").iterdir():
            try:
                if os.readlink(fd).startswith(str(temp_dir)):
                    return True
            except OSError:
                continue
        return False

    def members() -> list[int]:
        pids = []
        for proc in Path("/proc").iterdir():
            if proc.name.isdigit() and proc.name != str(os.getpid()):
                try:
                    if belongs(proc):
                        pids.append(int(proc.name))
                except OSError:
                    continue
        return pids

    for sig in (signal.SIGTERM, signal.SIGKILL):
        for pid in members():
            try:
                os.kill(pid, sig)
            except OSError:
                pass
        deadline = time.monotonic() + 5
        while members() and time.monotonic() < deadline:
            time.sleep(0.1)
