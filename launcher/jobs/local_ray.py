"""A local Ray for `rankitect serve` without --address: `ray start --head --block` on 127.0.0.1.

It runs as a child process of the server rather than inside it: the server never imports Ray,
and the child gets SIGTERM from the kernel when the server dies, even by SIGKILL (the
parent-death signal, launcher.jobs.parent_death), upon which `ray start --block` stops every
process of its cluster, the agents included. Every port is a free one (two servers, or a user's own Ray, coexist) and
the session files live in a short folder of their own under /tmp (Ray's socket paths are
limited to about 100 characters).
"""

from __future__ import annotations

import os
import shutil
import signal
import socket
import subprocess
import sys
import tempfile
import time
from pathlib import Path

from launcher.jobs import parent_death
from rankitect.errors import UserError

OBJECT_STORE_BYTES = 512 * 1024**2
_PORT_FLAGS = ("ray-client-server-port", "dashboard-port", "dashboard-agent-listen-port",
               "dashboard-agent-grpc-port", "runtime-env-agent-port", "metrics-export-port")


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def loopback_env() -> dict[str, str]:
    """The environment that keeps a Ray (and its drivers) on 127.0.0.1 and out of ~/.ray."""
    return {**os.environ, "RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER": "0", "RAY_AUTH_MODE": "disabled",
            "RAY_USAGE_STATS_ENABLED": "0"}


def moved_ports(keep: tuple[str, ...] = ()) -> list[str]:
    """`ray start` flags giving every fixed default port (but those in `keep`) a free one, so
    that several Rays of this machine coexist."""
    return [f"--{flag}={free_port()}" for flag in _PORT_FLAGS if flag not in keep]


class LocalRayHead:
    """`start()` gives the address; `stop()` ends the cluster. Not thread-safe: start and stop
    it from one thread (the parent-death signal fires when the starting thread ends)."""

    def __init__(self, num_cpus: int | None = None) -> None:
        self.num_cpus = num_cpus
        self.address: str | None = None
        self._process: subprocess.Popen | None = None
        self._temp_dir: Path | None = None

    def start(self, timeout_s: float = 90.0) -> str:
        self._temp_dir = Path(tempfile.mkdtemp(prefix="rkserve-ray-", dir="/tmp"))
        port = free_port()
        command = [str(Path(sys.executable).parent / "ray"), "start", "--head", "--block", f"--port={port}",
                   "--node-ip-address=127.0.0.1", "--include-dashboard=false", "--disable-usage-stats",
                   f"--temp-dir={self._temp_dir}", f"--object-store-memory={OBJECT_STORE_BYTES}",
                   *moved_ports()]
        if self.num_cpus is not None:
            command.append(f"--num-cpus={self.num_cpus}")
        log = open(self._temp_dir / "ray-start.log", "w")
        self._process = subprocess.Popen(parent_death.command(signal.SIGTERM, command), env=loopback_env(),
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
        self._process, self.address = None, None
        if self._temp_dir is not None:
            shutil.rmtree(self._temp_dir, ignore_errors=True)
            self._temp_dir = None
