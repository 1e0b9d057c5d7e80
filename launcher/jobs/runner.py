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
- A store that refuses writes (a full disk, an I/O error): the readers of a driver's output
  go on reading (the events the store cannot take are counted and said in the job's last
  state message; the partial result is kept in memory and stored at the next write that
  works), and a driver's end that cannot be recorded is retried by the scheduling thread
  until the store writes again, so the job ends FAILED (or as it ended) with the reason. No
  new job starts meanwhile. A job the store has RUNNING or CANCELLING that no driver of this
  runner runs (its end was lost) is ended by the scheduling thread: FAILED, or CANCELLED.
"""

from __future__ import annotations

import logging
import signal
import subprocess
import sys
import threading
import time
from collections.abc import Callable
from pathlib import Path

from launcher.jobs import parent_death
from launcher.jobs.driver import MAX_LINE_CHARS, Driver
from launcher.jobs.local_ray import LocalRayHead
from launcher.jobs.store import (
    CANCELLED,
    CANCELLING,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    WRITE_FAILURES,
    JobRecord,
    JobStore,
    StoreError,
)
from launcher.jobs.worker import ARTIFACT_FILE, CONFIG_FILE, EXIT_INTERRUPTED, EXIT_OK, EXIT_USER_ERROR
from rankitect.errors import UserError

log = logging.getLogger(__name__)
STORE_WARNING_S = 60.0  # a store that refuses writes is logged at most this often
ENDED = (RUNNING, CANCELLING)  # the states a driver's end is recorded from


class JobRunner:
    """Starts queued jobs; `start()` once, `stop()` at shutdown. Thread-safe."""

    def __init__(self, store: JobStore, runs_dir: Path, ray_address: str | None, max_jobs: int,
                 stop_grace_s: float = 60.0, ray_dashboard: bool = False) -> None:
        """`ray_address`: the cluster the drivers join; None: a local Ray (LocalRayHead) is
        started when the first job starts, and stopped with the runner; `ray_dashboard`: with
        its dashboard, whose URL goes to stderr when it starts."""
        self.store, self.runs_dir = store, Path(runs_dir)
        self.ray_address, self.max_jobs, self.stop_grace_s = ray_address, max_jobs, stop_grace_s
        self._local_ray = LocalRayHead(dashboard=ray_dashboard) if ray_address is None else None
        self._drivers: dict[str, Driver] = {}  # from its start until its end is recorded
        self._unrecorded: dict[str, Callable[[], None]] = {}  # job id: what records its end (retried)
        self._lock = threading.Lock()
        self._launching = threading.Lock()  # held from a job's RUNNING until its driver is known
        self._wake = threading.Event()
        self._stopping = threading.Event()
        self._thread: threading.Thread | None = None
        self._recovered = False
        self._warned_at = -STORE_WARNING_S

    def job_dir(self, job_id: str) -> Path:
        return self.runs_dir / job_id

    # -- lifecycle -------------------------------------------------------------------------
    def start(self) -> None:
        """Check that the store belongs to the runs folder (StoreUnusable otherwise), recover
        what a previous server left (retried by the scheduling thread while the store cannot
        write), then start the scheduling thread."""
        self.runs_dir.mkdir(parents=True, exist_ok=True)
        self.store.attach_runs_dir(self.runs_dir)
        self._try_recover()
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

    def _try_recover(self) -> None:
        try:
            self.recover()
            self._recovered = True
        except StoreError as exc:
            if exc.reason not in WRITE_FAILURES:
                raise
            self._warn_store(exc, "the jobs a previous server left are recovered once it writes again")

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
        """CANCELLED (queued, or running with no driver left), CANCELLING (running; its driver is
        interrupted), unchanged (cancelled already). StoreError "final" for a job that ended
        otherwise."""
        job = self.store.transition(job_id, CANCELLED, "cancelled while queued", expect=(QUEUED,))
        if job is not None:
            return job
        job = self.store.transition(job_id, CANCELLING, "cancelling: the driver saves its trials and stops",
                                    expect=(RUNNING,))
        if job is not None:
            return self._stop_driver(job, interrupt=True)
        job = self.store.get(job_id)
        if job.state == CANCELLING:  # asked again: its driver may have gone meanwhile
            return self._stop_driver(job, interrupt=False)
        if job.state == CANCELLED:
            return job
        raise StoreError("final", f"job_id: job {job_id} already ended {job.state}; only queued or running "
                                  f"jobs can be cancelled", job)

    def _stop_driver(self, job: JobRecord, interrupt: bool) -> JobRecord:
        """Interrupt the driver of a CANCELLING job (once: `interrupt`; a second SIGINT would
        cut its saving short); with no driver, the job is CANCELLED here."""
        with self._launching, self._lock:
            driver = self._drivers.get(job.job_id)
        if driver is None:
            done = self.store.transition(job.job_id, CANCELLED, "cancelled: no driver ran the job any more",
                                         expect=(CANCELLING,), phase="cancelled")
            return done or self.store.get(job.job_id)
        if driver.process.poll() is None:
            if interrupt:
                driver.process.send_signal(signal.SIGINT)
        else:
            self._wake.set()  # it ended, its end not recorded yet: the scheduling thread retries now
        return job

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

    # -- the scheduling thread (it starts every driver: see the module doc) -------------------
    def _schedule(self) -> None:
        while not self._stopping.is_set():
            self._wake.clear()
            try:
                self._retry_unrecorded()
                if not self._recovered:
                    self._try_recover()
                if self._recovered:
                    self._end_lost_jobs()
                    while len(self.running) < self.max_jobs and not self._stopping.is_set():
                        job = self.store.oldest_queued()
                        if job is None:
                            break
                        self._launch(job)
            except StoreError as exc:
                if exc.reason not in WRITE_FAILURES:
                    log.exception("scheduling failed")
                self._warn_store(exc, "queued jobs start once it writes again")
            except Exception:  # noqa: BLE001 (the thread must outlive one bad job)
                log.exception("scheduling failed")
            self._wake.wait(1.0)
        self._shut_down_drivers()

    def _warn_store(self, exc: StoreError, then: str) -> None:
        if time.monotonic() - self._warned_at >= STORE_WARNING_S:
            self._warned_at = time.monotonic()
            log.warning("the job store %s refuses writes (%s); %s", self.store.path, exc, then)

    def _retry_unrecorded(self) -> None:
        """Record the ends that could not be recorded (StoreError of a refused write: the rest
        waits for the next round)."""
        with self._lock:
            pending = list(self._unrecorded.items())
        for job_id, record in pending:
            try:
                record()
            except StoreError as exc:
                if exc.reason in WRITE_FAILURES:
                    raise
                log.warning("job %s: its end cannot be recorded: %s", job_id, exc)
            except Exception:  # noqa: BLE001
                log.exception("job %s: its end cannot be recorded", job_id)
            with self._lock:
                self._unrecorded.pop(job_id, None)
                self._drivers.pop(job_id, None)

    def _end_lost_jobs(self) -> None:
        """End the jobs the store has RUNNING or CANCELLING that no driver of this runner runs
        (their end was lost; on this thread, no job is between its RUNNING and its driver)."""
        for job in self.store.list(states=ENDED, limit=10_000):
            with self._lock:
                if job.job_id in self._drivers or job.job_id in self._unrecorded:
                    continue
            if job.state == CANCELLING:
                self.store.transition(job.job_id, CANCELLED, "cancelled: no driver ran the job any more",
                                      expect=(CANCELLING,), phase="cancelled")
            else:
                self.store.transition(job.job_id, FAILED, "failed: no driver runs the job any more; ResumeJob "
                                                           "retries it", expect=(RUNNING,), phase="failed",
                                      error="the job's driver is gone and its end was not recorded")

    def _launch(self, job: JobRecord) -> None:
        folder = self.job_dir(job.job_id)
        if self._local_ray is not None and self._local_ray.address is None:
            try:
                self._local_ray.start()
                if self._local_ray.dashboard_url:
                    print(f"Ray dashboard: {self._local_ray.dashboard_url} (the jobs' trials, baselines and "
                          f"shards by name)", file=sys.stderr, flush=True)
            except UserError as exc:  # the job fails, the server stays up
                self.store.transition(job.job_id, FAILED, "could not start a local Ray", expect=(QUEUED,),
                                      error=str(exc))
                return
        try:
            folder.mkdir(parents=True, exist_ok=True)
            tmp = folder / f".{CONFIG_FILE}.tmp"
            tmp.write_text(job.config_yaml)  # aside, then renamed: a full disk leaves the old one whole
            tmp.replace(folder / CONFIG_FILE)
        except OSError as exc:
            self.store.transition(job.job_id, FAILED, "could not write the job's run folder; ResumeJob retries "
                                                      "it", expect=(QUEUED,), error=f"run folder {folder}: {exc}")
            return
        address = self.ray_address or self._local_ray.address
        command = [sys.executable, "-m", "launcher.jobs.worker", "--job-dir", str(folder), "--address", address]
        with self._launching:  # a cancel waits until the driver is known
            started = self.store.transition(job.job_id, RUNNING, f"started (attempt {job.attempts + 1})",
                                            expect=(QUEUED,), phase="starting")
            if started is None:
                return  # cancelled meanwhile
            try:
                process = subprocess.Popen(parent_death.command(signal.SIGINT, command), stdin=subprocess.DEVNULL,
                                           stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, bufsize=1,
                                           errors="replace", start_new_session=True,
                                           env=self._local_ray.environment() if self._local_ray is not None else None)
            except OSError as exc:
                why = f"driver: {exc}"
                self._record_end(job.job_id, lambda: self.store.transition(
                    job.job_id, FAILED, "could not start the driver", expect=ENDED, error=why))
                return
            driver = Driver(job.job_id, process, self.store, self._warn_store)
            with self._lock:
                self._drivers[job.job_id] = driver
        driver.start_readers()
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
        while self.running and time.monotonic() < deadline + 10:  # the exit threads record the ends
            with self._lock:
                recording = set(self._drivers) - set(self._unrecorded)
            try:
                self._retry_unrecorded()
            except StoreError:
                if not recording:
                    break  # still refused: those jobs stay RUNNING, queued again at the next start
            time.sleep(0.1)
        if self._local_ray is not None:
            self._local_ray.stop()

    # -- a driver's end --------------------------------------------------------------------
    def _await_exit(self, driver: Driver) -> None:
        code = driver.process.wait()
        driver.join_readers()
        self._record_end(driver.job_id, lambda: self._finish(driver, code))

    def _record_end(self, job_id: str, record: Callable[[], None]) -> None:
        """Run `record` (it moves the job to its end state); when the store refuses it, it is
        retried by the scheduling thread (the driver stays counted until then). Any other
        failure ends the job FAILED, saying so."""
        try:
            try:
                record()
            except StoreError as exc:
                if exc.reason in WRITE_FAILURES:
                    raise
                log.warning("job %s: could not record its end: %s", job_id, exc)
            except Exception as exc:  # noqa: BLE001 (a bug here must not strand the job)
                log.exception("job %s: could not record its end", job_id)
                record = self._failed_end(job_id, f"the server could not record the driver's end: {exc!r}")
                record()
        except StoreError as exc:
            if exc.reason not in WRITE_FAILURES:
                raise
            self._warn_store(exc, f"job {job_id}: its end is recorded once it writes again")
            with self._lock:
                self._unrecorded[job_id] = record
            return
        finally:
            self._wake.set()
        with self._lock:
            self._drivers.pop(job_id, None)

    def _failed_end(self, job_id: str, why: str) -> Callable[[], None]:
        return lambda: self.store.transition(job_id, FAILED, "failed; ResumeJob retries it", expect=ENDED,
                                             error=why[:MAX_LINE_CHARS], phase="failed")

    def _finish(self, driver: Driver, code: int) -> None:
        job_id, store = driver.job_id, self.store
        result, unstored = driver.final_result(self.job_dir(job_id))
        if unstored:
            store.put_result(job_id, result)
        kept = sum(1 for t in result.get("trials", []) if t.get("status") == "complete")
        lost = f" ({driver.lost} events the job store refused are missing)" if driver.lost else ""
        job = store.get(job_id)
        if code == EXIT_OK:
            artifact = "" if (self.job_dir(job_id) / ARTIFACT_FILE).is_file() else f"; no artifact: {job.artifact_error}"
            store.transition(job_id, SUCCEEDED, f"succeeded: {kept} trials complete{artifact}{lost}", expect=ENDED,
                             phase="done")
        elif job.state == CANCELLING:
            store.transition(job_id, CANCELLED, f"cancelled: {kept} finished trials kept; ResumeJob continues "
                                                f"it{lost}", expect=ENDED, phase="cancelled")
        elif self._stopping.is_set():
            store.transition(job_id, QUEUED, f"the server stopped: {kept} finished trials kept; the job continues "
                                             f"when the server starts again{lost}", expect=ENDED, phase="")
        else:
            why = driver.error or ("the driver was interrupted" if code == EXIT_INTERRUPTED else
                                   driver.crash_reason(code))
            kind = "the config or data is wrong" if code == EXIT_USER_ERROR else "the driver failed"
            store.transition(job_id, FAILED, f"failed ({kind}): {kept} finished trials kept; ResumeJob retries "
                                             f"it{lost}", error=why[:MAX_LINE_CHARS], expect=ENDED, phase="failed")
