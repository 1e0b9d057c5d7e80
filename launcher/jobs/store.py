"""The job store of `rankitect serve`: jobs, their events and their results in one SQLite file.

The file is opened in WAL mode and every change is one transaction, so a server killed at any
moment leaves the store as of its last finished change: no job, event or result that was
stored is lost. Job ids are `job-NNNNNN` from an AUTOINCREMENT sequence: never reused, also
after jobs are deleted. Events are numbered 1, 2, ... per job, in the order they happened;
an event's payload is JSON (its `kind` says which fields it has: see launcher.jobs.events).

Thread-safe: one connection behind a lock; `wait_for_event` lets stream handlers sleep until
an event arrives instead of polling the file.

A store that is not a readable database (cut short, its header overwritten) is refused when
opened, and one that does not match the runs folder it is used with (`attach_runs_dir`: job
folders it has no record of) before the server starts: StoreUnusable, a UserError naming
both. Every change goes through `_write`, the one write path: a write the disk refuses (full,
read-only, an I/O error) is StoreError "disk_full" or "write_failed" and changes nothing.
Ids never name an existing job folder, whatever the store's sequence says.
"""

from __future__ import annotations

import json
import sqlite3
import threading
import time
from collections.abc import Iterable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any, NamedTuple

from launcher.jobs.store_files import StoreUnusable, check_runs_dir, issued, open_store_file
from launcher.jobs.store_files import job_id as make_job_id
from rankitect.json_values import json_safe

__all__ = ["JobRecord", "JobStore", "StoreError", "StoreUnusable", "StoredEvent"]

QUEUED, RUNNING, CANCELLING = "QUEUED", "RUNNING", "CANCELLING"
SUCCEEDED, FAILED, CANCELLED = "SUCCEEDED", "FAILED", "CANCELLED"
STATES = (QUEUED, RUNNING, CANCELLING, SUCCEEDED, FAILED, CANCELLED)
FINAL_STATES = frozenset({SUCCEEDED, FAILED, CANCELLED})
SCHEMA_VERSION = 1
WRITE_FAILURES = frozenset({"disk_full", "write_failed"})  # StoreError reasons of a write the disk refused

_SCHEMA = """
CREATE TABLE IF NOT EXISTS jobs (
    seq INTEGER PRIMARY KEY AUTOINCREMENT,
    job_id TEXT UNIQUE,
    request_id TEXT,
    owner TEXT NOT NULL,
    state TEXT NOT NULL,
    name TEXT NOT NULL DEFAULT '',
    searcher TEXT NOT NULL DEFAULT '',
    config_yaml TEXT NOT NULL,
    config_digest TEXT NOT NULL,
    created_at REAL NOT NULL,
    started_at REAL,
    finished_at REAL,
    error TEXT NOT NULL DEFAULT '',
    trials_done INTEGER NOT NULL DEFAULT 0,
    trials_total INTEGER NOT NULL DEFAULT 0,
    phase TEXT NOT NULL DEFAULT '',
    best_json TEXT,
    last_event INTEGER NOT NULL DEFAULT 0,
    state_event INTEGER NOT NULL DEFAULT 0,
    attempts INTEGER NOT NULL DEFAULT 0,
    artifact_json TEXT,
    artifact_error TEXT NOT NULL DEFAULT '',
    UNIQUE (owner, request_id)
);
CREATE INDEX IF NOT EXISTS jobs_by_owner ON jobs (owner, seq);
CREATE INDEX IF NOT EXISTS jobs_by_state ON jobs (state, seq);
CREATE TABLE IF NOT EXISTS events (
    job_id TEXT NOT NULL,
    number INTEGER NOT NULL,
    time REAL NOT NULL,
    kind TEXT NOT NULL,
    payload TEXT NOT NULL,
    PRIMARY KEY (job_id, number)
) WITHOUT ROWID;
CREATE TABLE IF NOT EXISTS results (
    job_id TEXT PRIMARY KEY,
    result_json TEXT NOT NULL,
    updated_at REAL NOT NULL
);
"""
_JOB_FIELDS = ("seq", "job_id", "request_id", "owner", "state", "name", "searcher", "config_yaml",
               "config_digest", "created_at", "started_at", "finished_at", "error", "trials_done",
               "trials_total", "phase", "best_json", "last_event", "state_event", "attempts", "artifact_json",
               "artifact_error")
_JOB_COLUMNS = ", ".join(_JOB_FIELDS)  # selected in JobRecord's field order: a row is JobRecord(*row)
_UPDATABLE = frozenset(_JOB_FIELDS) - {"seq", "job_id", "request_id", "owner", "config_yaml", "config_digest",
                                       "created_at", "last_event"}


class StoreError(Exception):
    """A request the store refuses; `reason` says which rule (the service maps it to a status):
    not_found, duplicate, queue_full, owner_queue_full, final, state, or one of WRITE_FAILURES."""

    def __init__(self, reason: str, message: str, job: JobRecord | None = None) -> None:
        super().__init__(message)
        self.reason, self.job = reason, job


class JobRecord(NamedTuple):
    """One row of `jobs`. Times are seconds since the epoch (None: not yet). A tuple: built
    from a row at C speed, compared whole as one (the pages GetJob / ListJobs keep)."""

    seq: int
    job_id: str
    request_id: str | None
    owner: str
    state: str
    name: str
    searcher: str
    config_yaml: str
    config_digest: str
    created_at: float
    started_at: float | None
    finished_at: float | None
    error: str
    trials_done: int
    trials_total: int
    phase: str
    best_json: str | None
    last_event: int
    state_event: int  # number of the event that set `state`
    attempts: int  # how many times a driver process was started
    artifact_json: str | None  # {"file", "size", "sha256"} of the exported model, once packed
    artifact_error: str  # why there is no artifact (export failed, no trial completed)

    @property
    def final(self) -> bool:
        return self.state in FINAL_STATES

    @property
    def best(self) -> dict[str, Any] | None:
        return json.loads(self.best_json) if self.best_json else None

    @property
    def artifact(self) -> dict[str, Any] | None:
        return json.loads(self.artifact_json) if self.artifact_json else None


@dataclass(frozen=True)
class StoredEvent:
    job_id: str
    number: int
    time: float
    kind: str
    payload: dict[str, Any]


class JobStore:
    """The store at `path` (created with its folder if missing). `close()` when done."""

    def __init__(self, path: Path) -> None:
        self.path = Path(path)
        self.path.parent.mkdir(parents=True, exist_ok=True)
        self.runs_dir: Path | None = None  # set by attach_runs_dir: ids then skip existing job folders
        self._lock = threading.RLock()
        self._changed = threading.Condition(self._lock)
        self._db = sqlite3.connect(str(self.path), check_same_thread=False, isolation_level=None, timeout=30)
        self._db.row_factory = sqlite3.Row
        try:
            open_store_file(self._db, self.path, _SCHEMA, SCHEMA_VERSION)
        except BaseException:
            self._db.close()
            raise

    def attach_runs_dir(self, runs_dir: Path) -> None:
        """Use the store with the job folders in `runs_dir` (the runner does, before the server
        answers): StoreUnusable, naming both, if they do not belong together (see
        launcher.jobs.store_files.check_runs_dir). From then on new ids skip existing folders."""
        with self._lock:
            check_runs_dir(self._db, self.path, Path(runs_dir))
            self.runs_dir = Path(runs_dir)

    def close(self) -> None:
        with self._lock:
            self._db.close()

    # -- transactions ----------------------------------------------------------------------
    def _write(self, fn: Any, *args: Any) -> Any:
        """Run fn(*args) in one IMMEDIATE transaction; wake the waiters after it committed. The
        store's one write path: a write the disk refuses changes nothing and is StoreError
        "disk_full" (SQLITE_FULL) or "write_failed" (any other error of the database)."""
        with self._lock:
            try:
                self._db.execute("BEGIN IMMEDIATE")
                try:
                    out = fn(*args)
                    self._db.execute("COMMIT")
                except BaseException:
                    if self._db.in_transaction:  # SQLite may have rolled back already (a full disk)
                        try:
                            self._db.execute("ROLLBACK")
                        except sqlite3.Error:
                            pass
                    raise
            except sqlite3.Error as exc:
                raise _write_error(exc) from None
            self._changed.notify_all()
            return out

    def _job(self, job_id: str) -> JobRecord | None:
        row = self._db.execute(f"SELECT {_JOB_COLUMNS} FROM jobs WHERE job_id = ?", (job_id,)).fetchone()
        return JobRecord(*row) if row else None

    def _append(self, job_id: str, kind: str, payload: Mapping[str, Any], updates: Mapping[str, Any]) -> int:
        job = self._job(job_id)
        if job is None:
            raise StoreError("not_found", f"job_id: no job {job_id!r}")
        number = job.last_event + 1
        self._db.execute("INSERT INTO events (job_id, number, time, kind, payload) VALUES (?, ?, ?, ?, ?)",
                         (job_id, number, time.time(), kind, _dumps(payload)))
        fields = {**updates, "last_event": number}
        if kind == "state":
            fields["state_event"] = number
        self._set(job_id, fields)
        return number

    def _set(self, job_id: str, fields: Mapping[str, Any]) -> None:
        unknown = set(fields) - _UPDATABLE - {"last_event"}
        if unknown:
            raise ValueError(f"not updatable job fields: {sorted(unknown)}")
        columns = ", ".join(f"{k} = ?" for k in fields)
        self._db.execute(f"UPDATE jobs SET {columns} WHERE job_id = ?", (*fields.values(), job_id))

    # -- jobs ------------------------------------------------------------------------------
    def create(self, owner: str, request_id: str | None, config_yaml: str, config_digest: str, name: str,
               searcher: str, trials_total: int, max_queued: int | None = None, slots: int = 0,
               max_queued_per_owner: int | None = None) -> tuple[JobRecord, bool]:
        """A new QUEUED job, or (the existing job, False) for a request id `owner` used before
        with the same config digest. StoreError "duplicate" for the same request id with
        another config. The queue: of `slots` jobs that may run at once those not taken (by a
        RUNNING or CANCELLING job) start a job at once; beyond them at most `max_queued` jobs
        wait ("queue_full") and at most `max_queued_per_owner` of one owner ("owner_queue_full").
        None: no such limit."""

        def create() -> tuple[JobRecord, bool]:
            if request_id:
                row = self._db.execute("SELECT job_id FROM jobs WHERE owner = ? AND request_id = ?",
                                       (owner, request_id)).fetchone()
                if row is not None:
                    job = self._job(row["job_id"])
                    if job.config_digest != config_digest:
                        raise StoreError("duplicate", f"request_id: {request_id!r} was used for job {job.job_id} "
                                                      f"with another config", job)
                    return job, False
            if max_queued is not None or max_queued_per_owner is not None:
                self._check_queue(owner, max_queued, slots, max_queued_per_owner)
            number = issued(self._db) + 1
            while self.runs_dir is not None and (self.runs_dir / make_job_id(number)).exists():
                number += 1  # a folder the store does not know of: its id is taken
            new_id = make_job_id(number)
            self._db.execute(
                "INSERT INTO jobs (seq, job_id, request_id, owner, state, name, searcher, config_yaml, config_digest, "
                "created_at, trials_total) VALUES (?, ?, ?, ?, ?, ?, ?, ?, ?, ?, ?)",
                (number, new_id, request_id or None, owner, QUEUED, name, searcher, config_yaml, config_digest,
                 time.time(), trials_total))
            self._append(new_id, "state", {"state": QUEUED, "message": "submitted"}, {})
            return self._job(new_id), True

        return self._write(create)

    def _check_queue(self, owner: str, max_queued: int | None, slots: int, per_owner: int | None) -> None:
        """StoreError "queue_full" / "owner_queue_full" if one more queued job would wait beyond
        the limits (the free slots, which start a job at once, do not count as waiting)."""
        counts = dict(self._db.execute("SELECT state, COUNT(*) FROM jobs WHERE state IN (?, ?, ?) GROUP BY state",
                                       (QUEUED, RUNNING, CANCELLING)).fetchall())
        free = max(0, slots - counts.get(RUNNING, 0) - counts.get(CANCELLING, 0))
        queued = counts.get(QUEUED, 0)
        if max_queued is not None and queued - free >= max_queued:
            raise StoreError("queue_full", f"the server's queue is full ({max(0, queued - free)} jobs wait for a "
                                           f"slot; its --max-queued is {max_queued}); try again later")
        if per_owner is not None:
            mine = self._db.execute("SELECT COUNT(*) FROM jobs WHERE state = ? AND owner = ?",
                                    (QUEUED, owner)).fetchone()[0]
            if mine - free >= per_owner:
                raise StoreError("owner_queue_full", f"owner {owner!r} has {max(0, mine - free)} jobs waiting for a "
                                                     f"slot, the server's --max-queued-per-owner is {per_owner}; "
                                                     f"try again when one has started")

    def get(self, job_id: str) -> JobRecord | None:
        with self._lock:
            return self._job(job_id)

    def list(self, owner: str | None = None, states: Iterable[str] = (), limit: int = 50,
             before_seq: int | None = None) -> list[JobRecord]:
        """Jobs newest first (of `owner` if given; in `states` if any), at most `limit`, those
        older than `before_seq` if given."""
        where, args = [], []
        if owner is not None:
            where.append("owner = ?")
            args.append(owner)
        states = list(states)
        if states:
            where.append(f"state IN ({', '.join('?' * len(states))})")
            args += states
        if before_seq is not None:
            where.append("seq < ?")
            args.append(before_seq)
        sql = f"SELECT {_JOB_COLUMNS} FROM jobs" + (f" WHERE {' AND '.join(where)}" if where else "") + " ORDER BY seq DESC LIMIT ?"
        with self._lock:
            rows = self._db.execute(sql, (*args, limit)).fetchall()
        return [JobRecord(*row) for row in rows]

    def oldest_queued(self) -> JobRecord | None:
        with self._lock:
            row = self._db.execute("SELECT job_id FROM jobs WHERE state = ? ORDER BY seq LIMIT 1",
                                   (QUEUED,)).fetchone()
            return self._job(row["job_id"]) if row else None

    def update(self, job_id: str, **fields: Any) -> None:
        """Set job fields without an event (progress, best)."""
        self._write(self._set, job_id, fields)

    def transition(self, job_id: str, state: str, message: str, expect: Iterable[str] | None = None,
                   **fields: Any) -> JobRecord | None:
        """Put the job in `state` with a state event (and `fields`); started_at is set on
        RUNNING, finished_at on a final state. With `expect`, only from those states: None (and
        nothing changed) when the job is in another. StoreError "not_found" for no such job."""
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state!r}")
        allowed = None if expect is None else set(expect)

        def move() -> JobRecord | None:
            job = self._job(job_id)
            if job is None:
                raise StoreError("not_found", f"job_id: no job {job_id!r}")
            if allowed is not None and job.state not in allowed:
                return None
            updates = {"state": state, **fields}
            if state == RUNNING:
                updates.update(started_at=time.time(), finished_at=None, attempts=job.attempts + 1)
            elif state in FINAL_STATES:
                updates["finished_at"] = time.time()
            else:
                updates["finished_at"] = None
            if state != FAILED:
                updates.setdefault("error", "")
            self._append(job_id, "state", {"state": state, "message": message}, updates)
            return self._job(job_id)

        return self._write(move)

    # -- events ----------------------------------------------------------------------------
    def append_event(self, job_id: str, kind: str, payload: Mapping[str, Any], **fields: Any) -> int:
        """Store one event (not a state change: use `transition`) and set `fields` of the job in
        the same transaction; its number."""
        if kind == "state":
            raise ValueError("state events are written by transition()")
        return self._write(self._append, job_id, kind, payload, fields)

    def events(self, job_id: str, from_number: int = 1, limit: int = 500) -> list[StoredEvent]:
        with self._lock:
            rows = self._db.execute("SELECT * FROM events WHERE job_id = ? AND number >= ? ORDER BY number LIMIT ?",
                                    (job_id, from_number, limit)).fetchall()
        return [StoredEvent(r["job_id"], r["number"], r["time"], r["kind"], json.loads(r["payload"])) for r in rows]

    def wait_for_event(self, job_id: str, after: int, timeout: float) -> bool:
        """Sleep until the job has an event numbered above `after` (True) or `timeout` passed."""
        deadline = time.monotonic() + timeout
        with self._changed:
            while True:
                job = self._job(job_id)
                if job is None or job.last_event > after:
                    return True
                left = deadline - time.monotonic()
                if left <= 0:
                    return False
                self._changed.wait(left)

    # -- results ---------------------------------------------------------------------------
    def put_result(self, job_id: str, result: Mapping[str, Any]) -> None:
        text = _dumps(result)
        self._write(lambda: self._db.execute(
            "INSERT INTO results (job_id, result_json, updated_at) VALUES (?, ?, ?) "
            "ON CONFLICT (job_id) DO UPDATE SET result_json = excluded.result_json, updated_at = excluded.updated_at",
            (job_id, text, time.time())))

    def result(self, job_id: str) -> dict[str, Any] | None:
        with self._lock:
            row = self._db.execute("SELECT result_json FROM results WHERE job_id = ?", (job_id,)).fetchone()
        return json.loads(row["result_json"]) if row else None


def _write_error(exc: sqlite3.Error) -> StoreError:
    """The StoreError of a change the database refused (the message is a caller's to see)."""
    full = getattr(exc, "sqlite_errorcode", None) == sqlite3.SQLITE_FULL or "full" in str(exc)
    if full:
        return StoreError("disk_full", f"the server's disk is full: its job store cannot record this ({exc}); "
                                       f"try again when the operator has freed space")
    return StoreError("write_failed", f"the server's job store cannot write ({type(exc).__name__}: {exc}); "
                                      f"try again later")


def _dumps(value: Mapping[str, Any]) -> str:
    """Strict JSON (NaN and infinities stored as null)."""
    return json.dumps(json_safe(dict(value)), allow_nan=False)
