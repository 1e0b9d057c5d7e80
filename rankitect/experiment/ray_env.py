"""The environment a local Ray needs, set by the entry points (the CLI, `rankitect.search`,
the job driver) before anything imports Ray; imports nothing heavy, so the CLI can call it
before its command runs."""

from __future__ import annotations

import os
import secrets
import socket
import stat
import tempfile
from pathlib import Path

from rankitect.errors import UserError

_LOOPBACK = ("127.0.0.1", "localhost", "::1")


def free_port() -> int:
    """A TCP port free on 127.0.0.1 now (for a local Ray's head or dashboard)."""
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        return s.getsockname()[1]


def is_loopback(address: str | None) -> bool:
    """A local Ray to start (no address), or one on this machine's loopback."""
    if not address:
        return True
    host = address.split("://")[-1].rsplit(":", 1)[0].strip("[]")
    return host in _LOOPBACK


def loopback_environment(address: str | None = None) -> None:
    """For a local Ray (or one on loopback): RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0, without which
    Ray rewrites 127.0.0.1 to the machine's outward address and cannot reach its own cluster.
    And Ray's token authentication (`auth_environment`). Values already set are kept."""
    if is_loopback(address):
        os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")
    auth_environment(address)


def auth_environment(address: str | None = None) -> None:
    """Ray's token authentication for this process and the Rays and drivers it starts. A
    RAY_AUTH_MODE already set is the user's choice and kept. A token given as Ray reads it
    (RAY_AUTH_TOKEN, RAY_AUTH_TOKEN_PATH) turns the mode on, so a cluster that wants it gets it
    (`--address`, `launch --cluster`). A local Ray (no address) gets this user's token of
    `local_token_file()`: without one, anyone on the machine who reaches its ports runs code as
    this user."""
    if "RAY_AUTH_MODE" in os.environ:
        return
    if os.environ.get("RAY_AUTH_TOKEN") or os.environ.get("RAY_AUTH_TOKEN_PATH"):
        os.environ["RAY_AUTH_MODE"] = "token"
    elif not address:
        os.environ["RAY_AUTH_MODE"] = "token"
        os.environ["RAY_AUTH_TOKEN_PATH"] = str(local_token_file())


def local_ray_folder() -> Path:
    """The folder of this user's local Rays (`ray.init`'s temp dir): owner-only."""
    return Path(tempfile.gettempdir()) / f"rankitect-ray-{os.getuid()}"


def local_token_file() -> Path:
    """This user's token for the local Rays: made once, then reused, in a folder of its own
    beside local_ray_folder() (Ray opens that one to everyone): folder 0700, token 0600, not
    ~/.ray, which a shared home would share. UserError when the folder or the file is someone
    else's (another user could read or plant the token)."""
    folder = Path(tempfile.gettempdir()) / f"rankitect-ray-auth-{os.getuid()}"
    folder.mkdir(mode=0o700, exist_ok=True)
    _owned(folder)
    os.chmod(folder, 0o700)
    token = folder / "auth_token"
    try:
        return write_token(token)
    except FileExistsError:
        _owned(token)
        os.chmod(token, 0o600)
        return token


def write_token(path: Path) -> Path:
    """A fresh token in a new owner-only file `path` (for a Ray of its own session)."""
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL | os.O_NOFOLLOW, 0o600)
    with os.fdopen(fd, "w") as out:
        out.write(secrets.token_hex(32))
    return path


def _owned(path: Path) -> None:
    info = path.lstat()
    if stat.S_ISLNK(info.st_mode) or info.st_uid != os.getuid():
        raise UserError(f"{path} (the local Ray's token) is a link or belongs to another user (uid "
                        f"{info.st_uid}); remove it, or give a token of your own with RAY_AUTH_TOKEN_PATH")
