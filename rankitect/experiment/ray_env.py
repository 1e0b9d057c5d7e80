"""The environment a local Ray needs, set by the entry points (the CLI, `rankitect.search`,
the job driver) before anything imports Ray; imports nothing heavy, so the CLI can call it
before its command runs."""

from __future__ import annotations

import os

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def is_loopback(address: str | None) -> bool:
    """A local Ray to start (no address), or one on this machine's loopback."""
    if not address:
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in _LOOPBACK


def loopback_environment(address: str | None = None) -> None:
    """For a local Ray (or one on loopback): RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, without which
    Ray rewrites 127.0.0.1 to the machine's outward address and cannot reach its own cluster,
    and RAY_AUTH_MODE=disabled, which keeps its token out of the home folder. Values already
    set are kept."""
    if is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
        os.environ.setdefault("RAY_AUTH_MODE", "disabled")
