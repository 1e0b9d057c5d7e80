"""One job of `rankitect serve`: `python -m launcher.jobs.worker --job-dir DIR [--address RAY]`.

DIR (made by the server) holds `config.yaml`, the config as submitted with its overrides
applied. The process runs the search into DIR/search (a run folder like `rankitect search
--out` makes: run again, it continues from its checkpoints), then exports the best model into
DIR/export and packs it as DIR/model.tar.gz.

It reports on stdout, one JSON object per line (`{"kind": ...}`, see launcher.jobs.events);
anything else it or a library prints is a log line. Exit status: 0 done (the export may still
have failed: an "artifact_error" line says so), 2 the config or data is wrong (an "error" line
says how), 130 interrupted (SIGINT or SIGTERM; the search saved what it had), 1 anything else.
DIR/.lock is held while it runs, so two processes never drive one job's search.

Tests hold a driver at each phase of its job through the test gate (rankitect.test_gate, off
unless a test sets its variable): "job 0" before the search, "job 1" before the export,
"job 2" before the packing, "job 3" after the artifact was reported.
"""

from __future__ import annotations

import argparse
import fcntl
import json
import os
import shutil
import signal
import sys
import tarfile
import time
from pathlib import Path
from typing import Any, TextIO

import yaml

from rankitect.errors import UserError
from rankitect.experiment.events import SearchEvents
from rankitect.export.serving import sha256_file
from rankitect.json_values import json_safe
from rankitect.test_gate import wait_at_gate

CONFIG_FILE = "config.yaml"
SEARCH_DIR = "search"
EXPORT_DIR = "export"
ARTIFACT_FILE = "model.tar.gz"
LOCK_FILE = ".lock"
LOCK_WAIT_S = 120.0  # an earlier driver of this job may still be saving after its server died
EXIT_OK, EXIT_FAILED, EXIT_USER_ERROR, EXIT_INTERRUPTED = 0, 1, 2, 130
GATE_START, GATE_EXPORT, GATE_PACK, GATE_DONE = "job 0", "job 1", "job 2", "job 3"  # the phases a test can hold


class JsonLineEvents(SearchEvents):
    """Each event as one JSON line on `stream` (flushed: the server reads them as they come)."""

    def __init__(self, stream: TextIO) -> None:
        self.stream = stream

    def emit(self, kind: str, **fields: Any) -> None:
        try:
            self.stream.write(json.dumps(json_safe({"kind": kind, **fields}), allow_nan=False) + "\n")
            self.stream.flush()
        except (BrokenPipeError, ValueError):  # the server is gone (or closed the pipe): keep working
            pass

    def phase(self, phase: str, message: str) -> None:
        self.emit("phase", phase=phase, message=message)

    def progress(self, phase: str, done: int, total: int, unit: str) -> None:
        self.emit("progress", phase=phase, done=done, total=total, unit=unit)

    def trial(self, trial: dict[str, Any], done: int, total: int) -> None:
        self.emit("trial", trial=trial, done=done, total=total)

    def best(self, trial: dict[str, Any]) -> None:
        self.emit("best", trial=trial)

    def pareto(self, points: list[dict[str, Any]]) -> None:
        self.emit("pareto", points=points)

    def baseline(self, name: str, record: dict[str, Any]) -> None:
        self.emit("baseline", name=name, record=record)

    def log(self, text: str) -> None:
        self.emit("log", text=text)


def hold_lock(job_dir: Path, wait_s: float = LOCK_WAIT_S) -> int:
    """An exclusive lock on DIR/.lock (the fd to keep open); UserError after `wait_s` seconds."""
    fd = os.open(job_dir / LOCK_FILE, os.O_RDWR | os.O_CREAT, 0o644)
    deadline = time.monotonic() + wait_s
    while True:
        try:
            fcntl.flock(fd, fcntl.LOCK_EX | fcntl.LOCK_NB)
            return fd
        except BlockingIOError:
            if time.monotonic() > deadline:
                os.close(fd)
                raise UserError(f"{job_dir}: another process still drives this job after {wait_s:.0f} s") from None
            time.sleep(0.5)


def pack(folder: Path, target: Path) -> tuple[int, str]:
    """`folder` as a tar.gz at `target` (written aside, then renamed): (bytes, SHA-256 hex)."""
    tmp = target.with_name(target.name + ".tmp")
    with tarfile.open(tmp, "w:gz") as tar:
        tar.add(folder, arcname=folder.name)
    digest = sha256_file(tmp)
    tmp.replace(target)
    return target.stat().st_size, digest


def run_job(job_dir: Path, address: str | None, events: JsonLineEvents) -> int:
    from rankitect.experiment.config import SearchConfig
    from rankitect.experiment.run import SearchInterrupted, search
    from rankitect.export.artifact import export_run

    lock = hold_lock(job_dir)
    try:
        config = SearchConfig.from_dict(yaml.safe_load((job_dir / CONFIG_FILE).read_text()))
        wait_at_gate(GATE_START)
        try:
            result = search(config, job_dir / SEARCH_DIR, address=address, progress=False, events=events)
        except SearchInterrupted as exc:
            events.emit("interrupted", message=str(exc))
            return EXIT_INTERRUPTED
        events.emit("searched", trials=len(result.trials), best=result.best)
        if result.best is None:
            events.emit("artifact_error", error="no trial completed: there is no model to export")
            return EXIT_OK
        events.phase("export", "exporting the best model")
        wait_at_gate(GATE_EXPORT)
        try:
            export_run(job_dir / SEARCH_DIR, job_dir / EXPORT_DIR, force=True, log=events.log)
        except UserError as exc:
            events.emit("artifact_error", error=f"export failed: {exc}")
            return EXIT_OK
        wait_at_gate(GATE_PACK)
        size, sha256 = pack(job_dir / EXPORT_DIR, job_dir / ARTIFACT_FILE)
        events.emit("artifact", file=ARTIFACT_FILE, size=size, sha256=sha256)
        wait_at_gate(GATE_DONE)
        return EXIT_OK
    finally:
        os.close(lock)


def _interrupt(signum: int, frame: Any) -> None:
    raise KeyboardInterrupt


def main(argv: list[str] | None = None) -> int:
    parser = argparse.ArgumentParser(prog="python -m launcher.jobs.worker", description=__doc__)
    parser.add_argument("--job-dir", type=Path, required=True)
    parser.add_argument("--address", default=None, help="Ray address (a local Ray without it)")
    args = parser.parse_args(argv)
    signal.signal(signal.SIGTERM, _interrupt)  # stopped like Ctrl-C: the search saves what it has
    # The runner cancels with SIGINT, and a server started in the background (`nohup ... &`)
    # hands its drivers SIGINT ignored: take it back.
    signal.signal(signal.SIGINT, signal.default_int_handler)
    events = JsonLineEvents(sys.stdout)
    try:
        return run_job(args.job_dir, args.address, events)
    except KeyboardInterrupt:
        events.emit("interrupted", message="interrupted")
        return EXIT_INTERRUPTED
    except UserError as exc:
        events.emit("error", message=str(exc))
        print(f"rankitect: {exc}", file=sys.stderr)
        return EXIT_USER_ERROR
    except Exception as exc:  # noqa: BLE001 (reported to the server, with the traceback on stderr)
        import traceback

        traceback.print_exc()
        events.emit("error", message=f"{type(exc).__name__}: {exc}{_disk_note(args.job_dir)}")
        return EXIT_FAILED


DISK_NEARLY_FULL_BYTES = 1 << 20


def _disk_note(job_dir: Path) -> str:
    """What a failure's message adds when the job's disk is (nearly) full: a write refused for
    lack of space is often told obscurely (torch.save: "unexpected pos 64 vs 0")."""
    try:
        free = shutil.disk_usage(job_dir).free
    except OSError:
        return ""
    if free >= DISK_NEARLY_FULL_BYTES:
        return ""
    return f" (No space left on device: {free:,} bytes free under {job_dir}; free space, then ResumeJob)"


if __name__ == "__main__":
    sys.exit(main())
