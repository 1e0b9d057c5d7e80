"""The SQLite job store of `rankitect serve`, on real files: ids, transitions, events, results."""

from __future__ import annotations

import math
import sqlite3
import threading

import pytest

from launcher.jobs.store import (
    CANCELLED,
    FAILED,
    QUEUED,
    RUNNING,
    SUCCEEDED,
    JobStore,
    StoreError,
    StoreUnusable,
)


@pytest.fixture
def store(tmp_path):
    s = JobStore(tmp_path / "jobs.sqlite3")
    yield s
    s.close()


def new_job(store: JobStore, owner: str = "alice", request_id: str | None = None, digest: str = "d1", **kw):
    return store.create(owner, request_id, "config: 1\n", digest, "random on nasrec", "random", 3, **kw)


def test_ids_only_grow_also_after_a_row_is_gone_and_the_file_reopened(tmp_path) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    first, _ = new_job(store)
    second, _ = new_job(store)
    store.close()
    with sqlite3.connect(path) as db:  # someone deletes the newest job by hand
        db.execute("DELETE FROM jobs WHERE job_id = ?", (second.job_id,))
    store = JobStore(path)
    third, _ = new_job(store)
    store.close()
    assert [first.job_id, second.job_id, third.job_id] == ["job-000001", "job-000002", "job-000003"]
    assert sqlite3.connect(path).execute("PRAGMA journal_mode").fetchone()[0] == "wal"


def test_request_ids_are_per_owner_and_bound_to_the_config(store) -> None:
    job, created = new_job(store, request_id="r1")
    again, created_again = new_job(store, request_id="r1")
    assert created and not created_again and again.job_id == job.job_id
    other_owner, created_other = new_job(store, owner="bob", request_id="r1")
    assert created_other and other_owner.job_id != job.job_id
    with pytest.raises(StoreError) as err:
        new_job(store, request_id="r1", digest="d2")
    assert err.value.reason == "duplicate" and job.job_id in str(err.value)


def test_queue_limit(store) -> None:
    new_job(store, max_queued=2)
    new_job(store, max_queued=2)
    with pytest.raises(StoreError) as err:
        new_job(store, max_queued=2)
    assert err.value.reason == "queue_full"
    assert len(store.list()) == 2


def test_transitions_write_state_events_and_times(store) -> None:
    job, _ = new_job(store)
    assert store.transition(job.job_id, CANCELLED, "no", expect=(RUNNING,)) is None  # not from QUEUED
    running = store.transition(job.job_id, RUNNING, "started", expect=(QUEUED,))
    assert running.state == RUNNING and running.attempts == 1 and running.started_at is not None
    store.append_event(job.job_id, "log", {"text": "hello", "source": "driver"}, trials_done=2)
    failed = store.transition(job.job_id, FAILED, "failed", error="boom")
    assert failed.final and failed.error == "boom" and failed.finished_at >= failed.started_at
    assert failed.trials_done == 2 and failed.state_event == failed.last_event == 4
    again = store.transition(job.job_id, QUEUED, "resumed", expect=(FAILED, CANCELLED))
    assert again.error == "" and again.finished_at is None
    events = store.events(job.job_id)
    assert [(e.number, e.kind) for e in events] == [(1, "state"), (2, "state"), (3, "log"), (4, "state"),
                                                    (5, "state")]
    assert [e.payload.get("state") for e in events if e.kind == "state"] == [QUEUED, RUNNING, FAILED, QUEUED]
    assert store.events(job.job_id, from_number=4, limit=1)[0].payload["state"] == FAILED
    with pytest.raises(StoreError):
        store.transition("job-999999", SUCCEEDED, "x")


def test_concurrent_appends_get_consecutive_numbers_and_wake_waiters(store) -> None:
    job, _ = new_job(store)
    woke: list[bool] = []
    waiter = threading.Thread(target=lambda: woke.append(store.wait_for_event(job.job_id, 1, timeout=30)))
    waiter.start()
    writers_n, per_writer = 4, 50
    total = 1 + writers_n * per_writer  # the creation's state event, then the writers' lines

    def write(k: int) -> None:
        for i in range(per_writer):
            store.append_event(job.job_id, "log", {"text": f"{k}-{i}", "source": "t"})

    writers = [threading.Thread(target=write, args=(k,)) for k in range(writers_n)]
    for w in writers:
        w.start()
    for w in writers + [waiter]:
        w.join()
    assert woke == [True]  # woken before its 30 s timeout
    numbers = [e.number for e in store.events(job.job_id, limit=1000)]
    assert numbers == list(range(1, total + 1))
    assert not store.wait_for_event(job.job_id, total, timeout=0.2)


def test_results_are_strict_json_and_pages_go_newest_first(store) -> None:
    jobs = [new_job(store)[0] for _ in range(5)]
    store.put_result(jobs[0].job_id, {"trials": [{"metrics": {"ne": math.nan, "auc": 0.7}}]})
    assert store.result(jobs[0].job_id) == {"trials": [{"metrics": {"ne": None, "auc": 0.7}}]}
    assert store.result(jobs[1].job_id) is None
    page = store.list(owner="alice", limit=2)
    rest = store.list(owner="alice", limit=10, before_seq=page[-1].seq)
    assert [j.job_id for j in page + rest] == [j.job_id for j in reversed(jobs)]
    store.transition(jobs[2].job_id, CANCELLED, "cancelled")
    assert [j.job_id for j in store.list(states=[CANCELLED])] == [jobs[2].job_id]
    assert store.oldest_queued().job_id == jobs[0].job_id


# -- a store that does not match its runs folder, a damaged store (issue 18, item 6) -------------
def _store_with_job_folders(tmp_path, jobs: int = 3):
    """A store with `jobs` jobs and their run folders (as a server leaves them); (db, runs)."""
    runs = tmp_path / "runs"
    store = JobStore(runs / "jobs.sqlite3")
    store.attach_runs_dir(runs)
    for _ in range(jobs):
        job, _ = new_job(store)
        (runs / job.job_id).mkdir(parents=True)
        (runs / job.job_id / "config.yaml").write_text(job.config_yaml)
    store.close()
    return runs / "jobs.sqlite3", runs


def test_an_emptied_store_with_job_folders_is_refused_naming_both(tmp_path) -> None:
    db, runs = _store_with_job_folders(tmp_path)
    before = {p.name for p in runs.iterdir()}
    with open(db, "r+b") as handle:  # truncate -s 0 jobs.sqlite3
        handle.truncate(0)
    for leftover in (runs / "jobs.sqlite3-wal", runs / "jobs.sqlite3-shm"):
        leftover.unlink(missing_ok=True)
    store = JobStore(db)
    try:
        with pytest.raises(StoreUnusable) as err:
            store.attach_runs_dir(runs)
        assert store.runs_dir is None
    finally:
        store.close()
    message = str(err.value)
    assert str(db) in message and str(runs) in message and "\n" not in message
    assert "job-000001 .. job-000003" in message and "issued no ids" in message
    assert {p.name for p in runs.iterdir()} >= before  # the job folders are untouched


def test_a_store_of_other_run_folders_is_refused(tmp_path) -> None:
    db, runs = _store_with_job_folders(tmp_path, jobs=2)
    (runs / "job-000002" / "config.yaml").write_text("another: job\n")
    store = JobStore(db)
    try:
        with pytest.raises(StoreUnusable) as err:
            store.attach_runs_dir(runs)
    finally:
        store.close()
    assert str(db) in str(err.value) and "job-000002" in str(err.value)


def _cut_in_half(path) -> None:
    with open(path, "r+b") as handle:
        handle.truncate(path.stat().st_size // 2)


def _overwrite_header(path) -> None:
    with open(path, "r+b") as handle:
        handle.write(b"not a database, just bytes" * 4)


def _damage_a_page(path) -> None:
    with open(path, "r+b") as handle:
        handle.seek(4096 * 3)
        handle.write(b"\xa5" * 4096)


@pytest.mark.parametrize("damage", [_cut_in_half, _overwrite_header, _damage_a_page],
                         ids=["half-cut", "header-overwritten", "page-damaged"])
def test_a_damaged_store_is_refused_not_a_traceback(tmp_path, damage) -> None:
    path = tmp_path / "jobs.sqlite3"
    store = JobStore(path)
    for i in range(200):  # a few dozen pages
        job, _ = new_job(store, request_id=f"r{i}")
        store.append_event(job.job_id, "log", {"text": "x" * 300, "source": "t"})
    store.close()  # checkpointed: everything is in the main file
    damage(path)
    with pytest.raises(StoreUnusable) as err:
        JobStore(path)
    assert str(path) in str(err.value) and "damaged" in str(err.value) and "\n" not in str(err.value)


def test_ids_never_name_an_existing_job_folder(tmp_path) -> None:
    runs = tmp_path / "runs"
    store = JobStore(runs / "jobs.sqlite3")
    store.attach_runs_dir(runs)
    first, _ = new_job(store)
    (runs / "job-000002").mkdir()  # folders the store did not make (another process, a restore)
    (runs / "job-000003").mkdir()
    second, _ = new_job(store)
    third, _ = new_job(store)
    store.close()
    assert [first.job_id, second.job_id, third.job_id] == ["job-000001", "job-000004", "job-000005"]


# -- a write the disk refuses (issue 18, item 7) --------------------------------------------------
def test_a_full_disk_refuses_the_write_whole_and_the_store_goes_on(store) -> None:
    """SQLite's own limit on the file's pages is a disk that is full (SQLITE_FULL) for every
    write that needs a page more: the write is refused whole, naming the full disk, and the
    store writes again once there is room."""
    job, _ = new_job(store)
    pages = store._db.execute("PRAGMA page_count").fetchone()[0]
    store._db.execute(f"PRAGMA max_page_count = {pages}")
    with pytest.raises(StoreError) as err:
        for i in range(10_000):
            store.append_event(job.job_id, "log", {"text": f"{i} " + "x" * 1000, "source": "t"}, trials_done=i)
    assert err.value.reason == "disk_full" and "disk is full" in str(err.value)
    kept = store.get(job.job_id)
    assert kept.last_event == len(store.events(job.job_id, limit=100_000))  # the refused one left nothing
    with pytest.raises(StoreError) as err:  # still full: refused again, nothing half-written
        store.append_event(job.job_id, "log", {"text": "y" * 1000, "source": "t"})
    assert err.value.reason == "disk_full" and store.get(job.job_id) == kept
    store._db.execute("PRAGMA max_page_count = 1073741823")
    failed = store.transition(job.job_id, FAILED, "failed", error="No space left on device")
    assert failed.state == FAILED and failed.last_event == kept.last_event + 1
    assert new_job(store)[0].job_id == "job-000002"


# -- the queue: no waiting room, and an owner's share (issue 18, items 8 and 10) ------------------
def test_max_queued_0_takes_a_job_when_a_slot_is_free(store) -> None:
    first, _ = new_job(store, max_queued=0, slots=1)  # an idle server takes it
    with pytest.raises(StoreError) as err:
        new_job(store, max_queued=0, slots=1)
    assert err.value.reason == "queue_full" and "--max-queued is 0" in str(err.value)
    store.transition(first.job_id, RUNNING, "started")
    with pytest.raises(StoreError):
        new_job(store, max_queued=0, slots=1)  # its slot is taken
    store.transition(first.job_id, SUCCEEDED, "done")
    assert new_job(store, max_queued=0, slots=1)[1]


def test_one_owner_cannot_fill_the_queue(store) -> None:
    limits = {"max_queued": 3, "slots": 1, "max_queued_per_owner": 1}
    running, _ = new_job(store, **limits)  # takes the free slot: it does not wait
    store.transition(running.job_id, RUNNING, "started")
    new_job(store, **limits)  # alice's one waiting job
    with pytest.raises(StoreError) as err:
        new_job(store, **limits)
    assert err.value.reason == "owner_queue_full"
    assert "'alice'" in str(err.value) and "--max-queued-per-owner is 1" in str(err.value)
    new_job(store, owner="bob", **limits)
    new_job(store, owner="carol", **limits)
    with pytest.raises(StoreError) as err:
        new_job(store, owner="dave", **limits)
    assert err.value.reason == "queue_full" and "--max-queued is 3" in str(err.value)
