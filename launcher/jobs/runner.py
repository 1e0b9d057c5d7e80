"""Run the store's queued jobs as driver processes on the server's Ray, at most `max_jobs` at once.

Each job runs as `python -m launcher.jobs.worker` in its folder RUNS_DIR/<job_id> (its own
process: a job's Ray driver, memory and Ctrl-C are its own). The runner turns the worker's
JSON lines into the job's events (launcher.jobs.events) and its other output into log lines.

- Cancel: a queued job is CANCELLED at once; a running one goes CANCELLING and its driver gets
  SIGINT (the search saves what it told), then CANCELLED when the process has exited.
- Resume: a CANCELLED or FAILED job is queued again; its driver continues from its run folder.
- A server killed while jobs run: each driver gets SIGINT when the server dies (the kernel's
  parent-death signal) and saves what it has; at the next start the runner finds them RUNNING
  in the store and queues them again, so they continue from their last checkpoint. A server
  stopped gracefully does the same on its way down.
- Without a Ray address the runner starts a local one (launcher.jobs.local_ray) for the first
  job, from its scheduling thread, which also starts every driver: the parent-death signal
  is tied to the thread that started a child, and this one lives as long as the runner.
"""

from __future__ import annotations

import json
import logging
import signal
import subprocess
import sys
import threading
import time
from collections import deque
from dataclasses import dataclass, field
from pathlib import Path
from typing import IO, Any

from launcher.jobs import events as ev
from launcher.jobs import parent_death
from launcher.jobs.local_ray import LocalRayHead, loopback_env
from launcher.jobs.store import (
    CANCELLED,
    CANCELLING,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobRecord,
    JobStore,
    StoreError,
)
from launcher.jobs.worker import (
    ARTIFACT_FILE,
    CONFIG_FILE,
    EXIT_INTERRUPTED,
    EXIT_OK,
    EXIT_USER_ERROR,
    SEARCH_DIR,
)
from rankitect.errors import UserError
from rankitect.experiment.results import RESULT_FILE

log = logging.getLogger(__name__)
MAX_LOG_EVENTS = 5_000  # per driver process: a chatty job cannot fill the store
MAX_LINE_CHARS = 2_000
STDERR_TAIL_LINES = 20  # kept to explain a driver that crashed


@dataclass
class _Driver:
    job_id: str
    process: subprocess.Popen
    log_events: int = 0
    error: str = ""
    stderr_tail: deque = field(default_factory=lambda: deque(maxlen=STDERR_TAIL_LINES))
    readers: list[threading.Thread] = field(default_factory=list)
    result: dict[str, Any] | None = None  # the partial result, read from the store at its first change


class JobRunner:
    """Starts queued jobs; `start()` once, `stop()` at shutdown. Thread-safe."""

    def __init__(self, store: JobStore, runs_dir: Path, ray_address: str | None, max_jobs: int,
                 stop_grace_s: float = 60.0) -> None:
        """`ray_address`: the cluster the drivers join; None: a local Ray (LocalRayHead) is
        started when the first job starts, and stopped with the runner."""
        self.store, self.runs_dir = store, Path(runs_dir)
        self.ray_address, self.max_jobs, self.stop_grace_s = ray_address, max_jobs, stop_grace_s
        self._local_ray = LocalRayHead() if ray_address is None else None
        self._drivers: dict[str, _Driver] = {}
        self._lock = threading.Lock()
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None

    def job_dir(self, job_id: str) -> Path:
        return self.runs_dir / job_id

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Recover what a previous server left, then start the scheduling thread."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.recover()
        self._thread = threading.Thread(target=self._schedule, name="rankitect-jobs", daemon=True)
        self._thread.start()

    def recover(self) -> None:
        """Jobs the store has RUNNING (their server died) are queued again; CANCELLING ones
        are CANCELLED."""
        for job in self.store.list(states=(RUNNING,), limit=1_000_000):
            self.store.transition(job.job_id, QUEUED, "the server restarted while the job ran; it continues "
                                                      "from its last checkpoint", expect=(RUNNING,))
        for job in self.store.list(states=(CANCELLING,), limit=1_000_000):
            self.store.transition(job.job_id, CANCELLED, "cancelled (the server restarted before the driver "
                                                         "stopped)", expect=(CANCELLING,))

    def stop(self) -> None:
        """Interrupt running drivers (they save), wait for them, and leave their jobs QUEUED."""
        self._stopping.set()
        self._wake.set()
        if self._thread is not None:
            self._thread.join()

    def wake(self) -> None:
        self._wake.set()

    @property
    def running(self) -> list[str]:
        with self._lock:
            return list(self._drivers)

    # -- requests --------------------------------------------------------------------------
    def cancel(self, job_id: str) -> JobRecord:
        """CANCELLED (queued), CANCELLING (running; its driver is interrupted), unchanged
        (cancelling or cancelled already). StoreError "final" for a job that ended otherwise."""
        job = self.store.transition(job_id, CANCELLED, "cancelled while queued", expect=(QUEUED,))
        if job is not None:
            return job
        job = self.store.transition(job_id, CANCELLING, "cancelling: the driver saves its trials and stops",
                                    expect=(RUNNING,))
        if job is not None:
            self._signal(job_id, signal.SIGINT)
            return job
        job = self.store.get(job_id)
        if job.state in (CANCELLING, CANCELLED):
            return job
        raise StoreError("final", f"job_id: job {job_id} already ended {job.state}; only queued or running "
                                  f"jobs can be cancelled", job)

    def resume(self, job_id: str) -> JobRecord:
        """Queue a CANCELLED or FAILED job again. StoreError "state" for any other state."""
        job = self.store.transition(job_id, QUEUED, "resumed: queued to continue from its last checkpoint",
                                    expect=(CANCELLED, FAILED))
        if job is None:
            job = self.store.get(job_id)
            raise StoreError("state", f"job_id: job {job_id} is {job.state}; only CANCELLED or FAILED jobs can "
                                      f"be resumed", job)
        self.wake()
        return job

    def _signal(self, job_id: str, sig: int) -> None:
        with self._lock:
            driver = self._drivers.get(job_id)
        if driver is not None and driver.process.poll() is None:
            driver.process.send_signal(sig)

    # -- the scheduling thread (it starts every driver: see the module doc) -------------------
    def _schedule(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                while len(self.running) < self.max_jobs and not self._stopping.is_set():
                    job = self.store.oldest_queued()
                    if job is None:
                        break
                    self._launch(job)
            except Exception:  # noqa: BLE001 (the thread must outlive one bad job)
                log.exception("scheduling failed")
            self._wake.wait(1.0)
        self._shut_down_drivers()

    def _launch(self, job: JobRecord) -> None:
        folder = self.job_dir(job.job_id)
        folder.mkdir(parents=True, exist_ok=True)
        (folder / CONFIG_FILE).write_text(job.config_yaml)
        started = self.store.transition(job.job_id, RUNNING, f"started (attempt {job.attempts + 1})",
                                        expect=(QUEUED,), phase="starting")
        if started is None:
            return  # cancelled meanwhile
        if self._local_ray is not None and self._local_ray.address is None:
            try:
                self._local_ray.start()
            except UserError as exc:  # the job fails, the server stays up
                self.store.transition(job.job_id, FAILED, "could not start a local Ray", error=str(exc))
                return
        address = self.ray_address or self._local_ray.address
        command = [sys.executable, "-m", "launcher.jobs.worker", "--job-dir", str(folder), "--address", address]
        try:
            process = subprocess.Popen(parent_death.command(signal.SIGINT, command), stdin=subprocess.DEVNULL,
                                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                       errors="replace", start_new_session=True,
                                       env=loopback_env() if self._local_ray is not None else None)
        except OSError as exc:
            self.store.transition(job.job_id, FAILED, "could not start the driver", error=f"driver: {exc}")
            return
        driver = _Driver(job.job_id, process)
        with self._lock:
            self._drivers[job.job_id] = driver
        driver.readers = [threading.Thread(target=self._read_stdout, args=(driver,), daemon=True),
                          threading.Thread(target=self._read_stderr, args=(driver,), daemon=True)]
        for reader in driver.readers:
            reader.start()
        threading.Thread(target=self._await_exit, args=(driver,), daemon=True).start()

    def _shut_down_drivers(self) -> None:
        with self._lock:
            drivers = list(self._drivers.values())
        for driver in drivers:
            if driver.process.poll() is None:
                driver.process.send_signal(signal.SIGINT)
        deadline = time.monotonic() + self.stop_grace_s
        for driver in drivers:
            try:
                driver.process.wait(max(0.0, deadline - time.monotonic()))
            except subprocess.TimeoutExpired:
                driver.process.kill()
        while self.running and time.monotonic() < deadline + 10:
            time.sleep(0.1)  # the exit threads record the final states
        if self._local_ray is not None:
            self._local_ray.stop()

    # -- a driver's output -----------------------------------------------------------------
    def _log(self, driver: _Driver, text: str, source: str) -> None:
        if driver.log_events > MAX_LOG_EVENTS:
            return
        driver.log_events += 1
        if driver.log_events > MAX_LOG_EVENTS:
            text, source = f"(more than {MAX_LOG_EVENTS} log lines: the rest are in the server's log only)", "server"
        self.store.append_event(driver.job_id, "log", {"text": text[:MAX_LINE_CHARS], "source": source})

    def _read_stdout(self, driver: _Driver) -> None:
        assert driver.process.stdout is not None
        for line in _lines(driver.process.stdout):
            try:
                message = json.loads(line)
            except ValueError:
                message = None
            if not isinstance(message, dict) or "kind" not in message:
                self._log(driver, line, "driver")
                continue
            try:
                self._handle(driver, message)
            except Exception:  # noqa: BLE001 (one odd line must not stop the reader)
                log.exception("job %s: could not record %s", driver.job_id, line[:200])

    def _read_stderr(self, driver: _Driver) -> None:
        assert driver.process.stderr is not None
        for line in _lines(driver.process.stderr):
            driver.stderr_tail.append(line)
            self._log(driver, line, "driver")

    def _handle(self, driver: _Driver, message: dict[str, Any]) -> None:
        kind, job_id = message["kind"], driver.job_id
        if kind == "log":
            self._log(driver, str(message.get("text", "")), "driver")
        elif kind in ("phase", "progress"):
            payload = ev.progress_payload(message)
            self.store.append_event(job_id, "progress", payload, phase=payload["phase"])
            if kind == "phase":  # what the phase is about, for the log
                self._log(driver, f"phase {payload['phase']}: {payload['message']}", "driver")
        elif kind == "trial":
            self.store.append_event(job_id, "trial", ev.trial_payload(message), trials_done=int(message["done"]),
                                    trials_total=int(message["total"]))
            self._update_result(driver, lambda r: ev.add_trial(r, message["trial"]))
        elif kind == "best":
            self.store.append_event(job_id, "best", {"trial": message["trial"]},
                                    best_json=json.dumps(message["trial"]))
            self._update_result(driver, lambda r: r.update(best=message["trial"]))
        elif kind == "pareto":
            self.store.append_event(job_id, "pareto", {"points": message["points"]})
            self._update_result(driver, lambda r: r.update(pareto=message["points"]))
        elif kind == "baseline":
            self.store.append_event(job_id, "log", ev.baseline_log(message["name"], message["record"]))
            self._update_result(driver, lambda r: r.setdefault("baselines", {}).update(
                {message["name"]: message["record"]}))
        elif kind == "artifact":
            self.store.update(job_id, artifact_json=json.dumps({k: message[k] for k in ("file", "size", "sha256")}),
                              artifact_error="")
        elif kind == "artifact_error":
            self.store.update(job_id, artifact_error=str(message["error"]))
            self._log(driver, str(message["error"]), "driver")
        elif kind == "error":
            driver.error = str(message.get("message", ""))

    def _update_result(self, driver: _Driver, change: Any) -> None:
        """Apply `change(result)` to the job's partial result (a dict like result.json's) and store
        it. Only the driver's stdout reader calls this, so the dict needs no lock."""
        if driver.result is None:
            driver.result = self.store.result(driver.job_id) or ev.empty_result()
        change(driver.result)
        self.store.put_result(driver.job_id, driver.result)

    # -- a driver's end --------------------------------------------------------------------
    def _await_exit(self, driver: _Driver) -> None:
        code = driver.process.wait()
        for reader in driver.readers:
            reader.join()
        try:
            self._finish(driver, code)
        except Exception:  # noqa: BLE001
            log.exception("job %s: could not record its end (exit %s)", driver.job_id, code)
        finally:
            with self._lock:
                self._drivers.pop(driver.job_id, None)
            self._wake.set()

    def _finish(self, driver: _Driver, code: int) -> None:
        job_id = driver.job_id
        result_file = self.job_dir(job_id) / SEARCH_DIR / RESULT_FILE
        if result_file.is_file():
            result = json.loads(result_file.read_text())
            self.store.put_result(job_id, result)
        else:
            result = self.store.result(job_id) or {}
        kept = sum(1 for t in result.get("trials", []) if t.get("status") == "complete")
        job = self.store.get(job_id)
        if code == EXIT_OK:
            artifact = "" if (self.job_dir(job_id) / ARTIFACT_FILE).is_file() else f"; no artifact: {job.artifact_error}"
            self.store.transition(job_id, SUCCEEDED, f"succeeded: {kept} trials complete{artifact}",
                                  phase="done")
        elif job.state == CANCELLING:
            self.store.transition(job_id, CANCELLED, f"cancelled: {kept} finished trials kept; ResumeJob "
                                                     f"continues it", phase="cancelled")
        elif self._stopping.is_set():
            self.store.transition(job_id, QUEUED, f"the server stopped: {kept} finished trials kept; the job "
                                                  f"continues when the server starts again", phase="")
        else:
            why = driver.error or ("the driver was interrupted" if code == EXIT_INTERRUPTED else
                                   _crash_reason(code, driver.stderr_tail))
            kind = "the config or data is wrong" if code == EXIT_USER_ERROR else "the driver failed"
            self.store.transition(job_id, FAILED, f"failed ({kind}): {kept} finished trials kept; ResumeJob "
                                                  f"retries it", error=why[:MAX_LINE_CHARS], phase="failed")


def _lines(stream: IO[str]) -> Any:
    for line in stream:
        line = line.rstrip("\n")
        if line.strip():
            yield line


def _crash_reason(code: int, tail: deque) -> str:
    how = f"killed by signal {signal.Signals(-code).name}" if code < 0 and -code in signal.valid_signals() \
        else f"exit status {code}"
    last = " | ".join(list(tail)[-3:])
    return f"the driver process ended ({how})" + (f": {last}" if last else "")
