"""The SQLite job store of `rankitect serve`, on real files: ids, transitions, events, results."""

from __future__ import annotations

import math
import sqlite3
import threading

import pytest

from launcher.jobs.store import CANCELLED, FAILED, QUEUED, RUNNING, SUCCEEDED, JobStore, StoreError


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
