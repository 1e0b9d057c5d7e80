"""A test hook: hold work at a named point until the test releases it.

Tests that interrupt, cancel or kill a search mid-run must find it there whatever the speed
of the machine; this gate holds it there. It does nothing unless the environment variable
RANKITECT_TEST_TRIAL_GATE names a folder, and nothing is held unless that folder holds an
armed `hold` file: production never sets either.

`run_trial` passes every trial through `wait_at_gate(spec.name)` ("trial 7", "baseline lr",
...). The protocol, all in files of the gate folder G:

- `arm(G, "trial", first=1)` writes G/hold: from then on the named points "trial N" with
  first <= N <= last (last=None: no end) wait; everything else passes ("baseline lr" has no
  number, so it is never held).
- A point that waits first writes G/started-<name, spaces as '-'> holding the pid of its
  process (`started_file`), so a test knows it is held and which process to kill; it then
  polls G/hold every POLL_SECONDS while G/hold is unchanged.
- `release(G)` removes G/hold: every held point goes on. Arming again (a new `id`) also
  releases what the previous arming held.

A held point stays interruptible: it only sleeps, so killing its process (a Ray actor killed
by a driver's Ctrl-C, a cancel or a stop, or SIGKILL) ends it as it would end training.

An exception to the package's rule that nothing here reads environment variables: a Ray
worker has no other way to hear from a test. The variable must reach the process that runs
the point: Ray workers inherit the environment of the Ray cluster's processes (`ray start`,
which `rankitect serve` runs as a child with its own environment), not the driver's, so a
test sets it where its cluster is started.
"""

from __future__ import annotations

import json
import os
import secrets
import time
from pathlib import Path

ENV_VAR = "RANKITECT_TEST_TRIAL_GATE"
HOLD_FILE = "hold"
POLL_SECONDS = 0.05


def wait_at_gate(name: str) -> None:
    """Return at once, unless the gate named by RANKITECT_TEST_TRIAL_GATE is armed for `name`
    ("<word> <number>"): then write its started file and wait until the gate is released."""
    folder = os.environ.get(ENV_VAR)
    if not folder:
        return
    hold = Path(folder) / HOLD_FILE
    armed = _read(hold)
    if armed is None or not _holds(armed, name, hold):
        return
    _write(started_file(Path(folder), name), f"{os.getpid()}\n")
    while _read(hold) == armed:
        time.sleep(POLL_SECONDS)


def arm(folder: Path, what: str, first: int = 0, last: int | None = None) -> None:
    """Hold the points "`what` N" with first <= N <= last from now on (the test side);
    the started files of an earlier arming are removed."""
    if not what or " " in what:
        raise ValueError(f"what: one word without spaces, got {what!r}")
    if first < 0 or (last is not None and last < first):
        raise ValueError(f"first and last: need 0 <= first <= last, got {first=}, {last=}")
    folder.mkdir(parents=True, exist_ok=True)
    for old in folder.glob("started-*"):
        old.unlink(missing_ok=True)
    _write(folder / HOLD_FILE, json.dumps({"what": what, "first": first, "last": last,
                                           "id": secrets.token_hex(8)}) + "\n")


def release(folder: Path) -> None:
    """Let every held point go on, and hold no new one (the test side)."""
    (folder / HOLD_FILE).unlink(missing_ok=True)


def started_file(folder: Path, name: str) -> Path:
    """The file a point named `name` writes (its pid) once it waits at the gate in `folder`."""
    return folder / f"started-{name.replace(' ', '-')}"


def _holds(armed: str, name: str, hold: Path) -> bool:
    try:
        rule = json.loads(armed)
        what, first, last = rule["what"], int(rule["first"]), rule["last"]
    except (ValueError, KeyError, TypeError):
        raise ValueError(f"{hold}: not a gate written by test_gate.arm, got {armed!r}") from None
    word, _, number = name.partition(" ")
    if word != what or not number.isdigit():
        return False
    return first <= int(number) and (last is None or int(number) <= int(last))


def _read(path: Path) -> str | None:
    try:
        return path.read_text()
    except FileNotFoundError:
        return None


def _write(path: Path, text: str) -> None:
    """Atomically: a reader sees the whole file or none."""
    tmp = path.with_name(f".{path.name}.{os.getpid()}.tmp")
    tmp.write_text(text)
    tmp.replace(path)
