"""Shared fixtures. Real data samples live in ../shared/data (skipped with a reason if absent)."""

from __future__ import annotations

import os
import subprocess
import time
from collections.abc import Callable, Iterator
from pathlib import Path
from types import ModuleType

import pytest

# Before anything imports Ray: keep test clusters on loopback (Ray reads this at import).
os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
os.environ.setdefault("RAY_AUTH_MODE", "disabled")
os.environ.setdefault("RAY_USAGE_STATS_ENABLED", "0")

# Property and fuzz tests draw the same examples every run, so a CI run is reproducible;
# `HYPOTHESIS_PROFILE=explore make test` (or `make fuzz`) draws new ones each run.
from hypothesis import settings as _hypothesis_settings  # noqa: E402

_hypothesis_settings.register_profile("ci", derandomize=True)
_hypothesis_settings.register_profile("explore", derandomize=False)
_hypothesis_settings.load_profile(os.environ.get("HYPOTHESIS_PROFILE", "ci"))

ROOT = Path(__file__).resolve().parents[1]
SHARED_DATA = Path(os.environ.get("RANKITECT_SHARED_DATA", ROOT.parent / "shared" / "data"))


@pytest.fixture(scope="session")
def shared_data() -> Path:
    """../shared/data with the real Criteo and Avazu sample rows."""
    if not (SHARED_DATA / "criteo_sample.txt").is_file():
        pytest.skip(f"real sample data not found at {SHARED_DATA} (set RANKITECT_SHARED_DATA)")
    return SHARED_DATA


def ray_env(temp_dir: Path, gate_dir: Path) -> dict[str, str]:
    """Environment that keeps a Ray cluster on loopback and its files out of the home folder;
    its workers (they inherit it) pass their trials through the test gate in `gate_dir`."""
    from launcher.jobs.local_ray import loopback_env

    return {**loopback_env(), "RAY_TMPDIR": str(temp_dir), _gate().ENV_VAR: str(gate_dir)}


class TrialGate:
    """The test side of the gate that holds trials where a test wants them
    (rankitect.test_gate; every Ray cluster of the tests passes it to its workers).

    A test that interrupts, cancels or kills a search mid-run arms it before starting the
    search, waits until the trials it holds have `started`, interrupts, then releases it (or
    lets the interruption kill what it held: `wait_stopped`). Never speed: a held trial stays
    held until released, however fast training gets.
    """

    def __init__(self, folder: Path) -> None:
        self.folder = folder

    @property
    def env(self) -> dict[str, str]:
        """The variable a process needs to see the gate (Ray workers get it from their cluster)."""
        return {_gate().ENV_VAR: str(self.folder)}

    def hold(self, first: int = 0, last: int | None = None, what: str = "trial") -> None:
        """Hold "`what` N" for first <= N <= last (None: no end): trials of lower number run
        through, baselines are never held."""
        _gate().arm(self.folder, what, first, last)

    def release(self) -> None:
        _gate().release(self.folder)

    def started(self, name: str) -> bool:
        return _gate().started_file(self.folder, name).is_file()

    def pid(self, name: str) -> int:
        """The process that holds `name` (a Ray worker, or the process of a step)."""
        return int(_gate().started_file(self.folder, name).read_text())

    def wait_started(self, *names: str, proc: subprocess.Popen | None = None,
                     also: Callable[[], bool] = lambda: True,
                     seconds: float = 180) -> None:
        """Until every one of `names` waits at the gate and `also()` holds; AssertionError if
        `proc` (the driver) ends first or time runs out."""
        wait_until(lambda: all(self.started(n) for n in names) and also(), proc, seconds,
                   f"{names} held at the gate")

    def wait_stopped(self, *names: str, seconds: float = 60) -> None:
        """Until the processes that held `names` have ended (killed by the interruption)."""
        wait_until(lambda: not any(_alive(self.pid(n)) for n in names), None, seconds,
                   f"the processes holding {names} stopped")


def wait_until(condition: Callable[[], bool], proc: subprocess.Popen | None = None, seconds: float = 180,
               what: str = "the condition") -> None:
    """Poll `condition()` every 0.1 s; AssertionError naming `what` after `seconds`, or as soon
    as `proc` has exited (its stderr in the message)."""
    deadline = time.monotonic() + seconds
    while not condition():
        if proc is not None and proc.poll() is not None:
            err = proc.stderr.read() if proc.stderr is not None else ""
            raise AssertionError(f"waiting for {what}: the process exited with {proc.returncode}: {err}")
        if time.monotonic() > deadline:
            raise AssertionError(f"timed out after {seconds:.0f} s waiting for {what}")
        time.sleep(0.1)


def _gate() -> ModuleType:
    """rankitect.test_gate, imported when a test first needs it (it imports torch)."""
    from rankitect import test_gate

    return test_gate


def _alive(pid: int) -> bool:
    """`pid` runs (a zombie, ended but not yet reaped by its parent, does not)."""
    try:
        stat = Path(f"/proc/{pid}/stat").read_text()
    except OSError:
        return False
    return stat.rsplit(")", 1)[1].split()[0] != "Z"


@pytest.fixture(scope="session")
def gate_dir(tmp_path_factory) -> Path:
    """The folder of the session's test gate (rankitect.test_gate); open unless a
    test arms it through the `trial_gate` fixture."""
    return tmp_path_factory.mktemp("trial-gate")


@pytest.fixture
def trial_gate(gate_dir) -> Iterator[TrialGate]:
    """The session's test gate, for one test: it holds nothing until armed, and is released
    when the test ends, whatever happened."""
    gate = TrialGate(gate_dir)
    gate.release()
    try:
        yield gate
    finally:
        gate.release()


@pytest.fixture(scope="session")
def ray_cluster(tmp_path_factory, gate_dir) -> str:
    """A real Ray head started with `ray start` on 127.0.0.1 (2 CPUs), shared by the whole session.

    The test process is connected to it too, so `search()` called in a test uses it; drivers
    started as subprocesses get its address. Its workers see the session's test gate
    (`trial_gate` holds their trials).
    """
    import sys
    import tempfile

    import ray

    from launcher.jobs.local_ray import free_port, moved_ports

    temp_dir = Path(tempfile.mkdtemp(prefix="rkray-", dir="/tmp"))
    env = ray_env(temp_dir, gate_dir)
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
