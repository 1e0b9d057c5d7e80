"""A local Ray for `rankitect serve` without --address: `ray start --head --block` on 127.0.0.1.

It runs as a child process of the server rather than inside it: the server never imports Ray,
and the child gets SIGTERM from the kernel when the server dies, even by SIGKILL (the
parent-death signal, launcher.jobs.parent_death), upon which `ray start --block` stops every
process of its cluster, the agents included. Every port is a free one (two servers, or a user's own Ray, coexist) and
the session files live in a short folder of their own under /tmp (Ray's socket paths are
limited to about 100 characters; Ray's own folder is `r` in it), with the cluster's token (Ray's token authentication: a fresh
token per server, owner-only, passed to the drivers by `environment()`; never ~/.ray). A folder
left by a server that was SIGKILLed (its owner file names a process that is gone) is removed by
the next start.
"""

from __future__ import annotations

import os
import shutil
import signal
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from launcher.jobs import parent_death
from rankitect.errors import UserError
from rankitect.experiment.ray_env import free_port, write_token

OBJECT_STORE_BYTES = 512 * 1024**2
FOLDER_PREFIX = "rkserve-ray-"
OWNER_FILE = "owner"  # "PID START_TIME" of the server that made the folder
_PORT_FLAGS = ("ray-client-server-port", "dashboard-port", "dashboard-agent-listen-port",
               "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


def loopback_env() -> dict[str, str]:
    """The environment that keeps a Ray (and its drivers) on 127.0.0.1, without usage stats."""
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_USAGE_STATS_ENABLED": "0"}


def moved_ports(keep: tuple[str, ...] = ()) -> list[str]:
    """`ray start` flags giving every fixed default port (but those in `keep`) a free one, so
    that several Rays of this machine coexist."""
    return [f"--{flag}={free_port()}" for flag in _PORT_FLAGS if flag not in keep]


class LocalRayHead:
    """`start()` gives the address; `stop()` ends the cluster. Not thread-safe: start and stop
    it from one thread (the parent-death signal fires when the starting thread ends).
    `dashboard`: Ray's dashboard (and its Jobs API) on 127.0.0.1, at `dashboard_url`."""

    def __init__(self, num_cpus: int | None = None, dashboard: bool = False) -> None:
        self.num_cpus, self.dashboard = num_cpus, dashboard
        self.address: str | None = None
        self.dashboard_url: str | None = None
        self.token_file: Path | None = None
        self._process: subprocess.Popen | None = None
        self._temp_dir: Path | None = None

    def environment(self) -> dict[str, str]:
        """What a process joining this cluster needs: loopback, and the cluster's token."""
        env = loopback_env()
        env.pop("RAY_AUTH_TOKEN", None)  # Ray would take it before the file
        if self.token_file is not None:
            env.update({"RAY_AUTH_MODE": "token", "RAY_AUTH_TOKEN_PATH": str(self.token_file)})
        return env

    def start(self, timeout_s: float = 90.0) -> str:
        remove_stale_folders()
        # mode 0700: Ray opens its own temp dir to everyone (0777), so that is a folder inside it
        self._temp_dir = Path(tempfile.mkdtemp(prefix=FOLDER_PREFIX, dir="/tmp"))
        (self._temp_dir / OWNER_FILE).write_text(_process_identity(os.getpid()))
        self.token_file = write_token(self._temp_dir / "auth_token")
        port, dashboard_port = free_port(), free_port()
        dashboard = (["--include-dashboard=true", "--dashboard-host=127.0.0.1", f"--dashboard-port={dashboard_port}"]
                     if self.dashboard else ["--include-dashboard=false"])
        command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
                   "--node-ip-address=127.0.0.1", *dashboard, "--disable-usage-stats",
                   f"--temp-dir={self._temp_dir / 'r'}", f"--object-store-memory={OBJECT_STORE_BYTES}",
                   *moved_ports(keep=("dashboard-port",) if self.dashboard else ())]
        if self.num_cpus is not None:
            command.append(f"--num-cpus={self.num_cpus}")
        log = open(self._temp_dir / "ray-start.log", "w")
        self._process = subprocess.Popen(parent_death.command(signal.SIGTERM, command), env=self.environment(),
                                         stdin=subprocess.DEVNULL, stdout=log, stderr=subprocess.STDOUT,
                                         start_new_session=True)
        log.close()
        address = f"127.0.0.1:{port}"
        deadline = time.monotonic() + timeout_s
        while "Ray runtime started" not in self._log():
            if self._process.poll() is not None or time.monotonic() > deadline:
                tail = self._log()[-2000:]
                self.stop()
                raise UserError(f"could not start a local Ray (ray start --head): {tail}")
            time.sleep(0.25)
        self.address = address
        if self.dashboard:
            self.dashboard_url = f"http://127.0.0.1:{dashboard_port}"
        return address

    def _log(self) -> str:
        try:
            return (self._temp_dir / "ray-start.log").read_text(errors="replace")
        except OSError:
            return ""

    def stop(self, timeout_s: float = 45.0) -> None:
        """SIGTERM to `ray start --block`, which stops its cluster (draining takes a moment)."""
        if self._process is not None and self._process.poll() is None:
            self._process.send_signal(signal.SIGTERM)
            try:
                self._process.wait(timeout_s)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        self._process, self.address, self.dashboard_url, self.token_file = None, None, None, None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None


def remove_stale_folders(parent: Path = Path("/tmp")) -> list[Path]:
    """Remove the folders of local Rays whose server is gone (SIGKILLed: no stop() ran); the
    folders of running servers, and other users', stay. Returns those removed."""
    removed = []
    for folder in parent.glob(f"{FOLDER_PREFIX}*"):
        try:
            if folder.lstat().st_uid != os.getuid() or not folder.is_dir() or folder.is_symlink():
                continue
            owner = (folder / OWNER_FILE).read_text()
        except OSError:  # no owner file: a folder this code did not make, or one being made
            continue
        pid = int(owner.split()[0]) if owner.split() and owner.split()[0].isdigit() else 0
        if pid and _process_identity(pid) == owner:
            continue
        shutil.rmtree(folder, ignore_errors=True)
        removed.append(folder)
    return removed


def _process_identity(pid: int) -> str:
    """"PID START_TIME" of a running process (the start time tells a reused pid apart), "" if gone."""
    try:
        fields = Path(f"/proc/{pid}/stat").read_text().rsplit(")", 1)[1].split()
    except (OSError, IndexError):
        return ""
    return f"{pid} {fields[19]}"
