"""One job's driver process as the runner sees it: its output read into the job's events.

The runner (launcher.jobs.runner) starts the process; a `Driver` reads its stdout (the
worker's JSON lines, launcher.jobs.events) and its stderr (log lines) on two threads of its
own, to the end of the process whatever the store does: a write the store refuses (a full
disk) loses that one event (counted in `lost`; the runner says how many in the job's last
state message) and the reader goes on, so the process never blocks on a full pipe. The
partial result (a dict like result.json's) is changed here first and then stored: a refused
write keeps it here, and the next write that works, or the job's end, stores it whole.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import threading
from collections import deque
from collections.abc import Callable, Iterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from launcher.jobs import events as ev
from launcher.jobs.store import WRITE_FAILURES, JobStore, StoreError
from launcher.jobs.worker import SEARCH_DIR
from rankitect.experiment.results import RESULT_FILE

log = logging.getLogger(__name__)
MAX_LOG_EVENTS = 5_000  # per driver process: a chatty job cannot fill the store
MAX_LINE_CHARS = 2_000
STDERR_TAIL_LINES = 20  # kept to explain a driver that crashed


@dataclass
class Driver:
    """The driver process of job `job_id`; `refused(exc, what)` hears of each write the store
    refused (the runner logs them now and then)."""

    job_id: str
    process: subprocess.Popen
    store: JobStore
    refused: Callable[[StoreError, str], None]
    log_events: int = 0
    error: str = ""  # the worker's "error" line: why it failed
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    readers: list[threading.Thread] = field(default_factory=list)
    result: dict[str, Any] | None = None  # the partial result, read from the store at its first change
    lost: int = 0  # events the store refused

    def start_readers(self) -> None:
        self.readers = [threading.Thread(target=self._read_stdout, daemon=True),
                        threading.Thread(target=self._read_stderr, daemon=True)]
        for reader in self.readers:
            reader.start()

    def join_readers(self) -> None:
        for reader in self.readers:
            reader.join()

    def final_result(self, job_dir: Path) -> tuple[dict[str, Any], bool]:
        """(the job's result, whether the store may lack it): `job_dir`'s result.json, else the
        partial result kept here, else the stored one."""
        result_file = job_dir / SEARCH_DIR / RESULT_FILE
        try:
            if result_file.is_file():
                return json.loads(result_file.read_text()), True
        except (OSError, ValueError) as exc:
            log.warning("job %s: cannot read %s: %s", self.job_id, result_file, exc)
        if self.result is not None:
            return self.result, True
        return self.store.result(self.job_id) or {}, False

    def crash_reason(self, code: int) -> str:
        """Why the process ended with `code`: the signal or the status, and its last stderr lines."""
        how = f"killed by signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
            else f"exit status {code}"
        last = " | ".join(list(self.stderr_tail)[-3:])
        return f"the driver process ended ({how})" + (f": {last}" if last else "")

    # -- the readers -----------------------------------------------------------------------
    def _store(self, write: Callable[[], Any]) -> bool:
        """Run one store write for the job; False (counted) when the store refused it."""
        try:
            write()
            return True
        except StoreError as exc:
            if exc.reason not in WRITE_FAILURES:
                raise
            self.lost += 1
            self.refused(exc, f"job {self.job_id}: its events are lost until it writes again")
            return False

    def log(self, text: str, source: str) -> None:
        if self.log_events > MAX_LOG_EVENTS:
            return
        self.log_events += 1
        if self.log_events > MAX_LOG_EVENTS:
            text, source = f"(more than {MAX_LOG_EVENTS} log lines: the rest are in the server's log only)", "server"
        self._store(lambda: self.store.append_event(self.job_id, "log",
                                                    {"text": text[:MAX_LINE_CHARS], "source": source}))

    def _read_stdout(self) -> None:
        assert self.process.stdout is not None
        for line in _lines(self.process.stdout):
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            try:
                if not isinstance(message, dict) or "kind" not in message:
                    self.log(line, "driver")
                else:
                    self._handle(message)
            except Exception:  # noqa: BLE001 (one odd line must not stop the reader)
                log.exception("job %s: could not record %s", self.job_id, line[:200])

    def _read_stderr(self) -> None:
        assert self.process.stderr is not None
        for line in _lines(self.process.stderr):
            self.stderr_tail.append(line)
            try:
                self.log(line, "driver")
            except Exception:  # noqa: BLE001
                log.exception("job %s: could not record %s", self.job_id, line[:200])

    def _handle(self, message: dict[str, Any]) -> None:
        kind, job_id, store = message["kind"], self.job_id, self.store
        if kind == "log":
            self.log(str(message.get("text", "")), "driver")
        elif kind in ("phase", "progress"):
            payload = ev.progress_payload(message)
            self._store(lambda: store.append_event(job_id, "progress", payload, phase=payload["phase"]))
            if kind == "phase":  # what the phase is about, for the log
                self.log(f"phase {payload['phase']}: {payload['message']}", "driver")
        elif kind == "trial":
            self._update_result(lambda r: ev.add_trial(r, message["trial"]))
            self._store(lambda: store.append_event(job_id, "trial", ev.trial_payload(message),
                                                   trials_done=int(message["done"]),
                                                   trials_total=int(message["total"])))
        elif kind == "best":
            self._update_result(lambda r: r.update(best=message["trial"]))
            self._store(lambda: store.append_event(job_id, "best", {"trial": message["trial"]},
                                                   best_json=json.dumps(message["trial"])))
        elif kind == "pareto":
            self._update_result(lambda r: r.update(pareto=message["points"]))
            self._store(lambda: store.append_event(job_id, "pareto", {"points": message["points"]}))
        elif kind == "baseline":
            self._update_result(lambda r: r.setdefault("baselines", {}).update({message["name"]: message["record"]}))
            self._store(lambda: store.append_event(job_id, "log", ev.baseline_log(message["name"], message["record"])))
        elif kind == "artifact":
            info = json.dumps({k: message[k] for k in ("file", "size", "sha256")})
            self._store(lambda: store.update(job_id, artifact_json=info, artifact_error=""))
        elif kind == "artifact_error":
            self._store(lambda: store.update(job_id, artifact_error=str(message["error"])))
            self.log(str(message["error"]), "driver")
        elif kind == "error":
            self.error = str(message.get("message", ""))

    def _update_result(self, change: Callable[[dict[str, Any]], Any]) -> None:
        """Apply `change(result)` to the partial result, then store it. Only the stdout reader
        calls this, so the dict needs no lock."""
        if self.result is None:
            self.result = self.store.result(self.job_id) or ev.empty_result()
        change(self.result)
        self._store(lambda: self.store.put_result(self.job_id, self.result))


def _lines(stream: IO[str]) -> Iterator[str]:
    for line in stream:
        line = line.rstrip("\n")
        if line.strip():
            yield line
