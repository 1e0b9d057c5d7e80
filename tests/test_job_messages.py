"""GetJob and ListJobs replies in wire form, reused while a job's stored record is unchanged."""

from __future__ import annotations

import json

from launcher.jobs.store import RUNNING, JobStore
from launcher.rpc import job_convert
from launcher.rpc.gen import search_pb2 as spb
from launcher.rpc.wire import Encoded, passing_encoded


def _store(tmp_path, jobs: int, config_bytes: int = 20) -> JobStore:
    store = JobStore(tmp_path / "jobs.sqlite3")
    for i in range(jobs):
        store.create("alice", None, f"name: job {i}\n# {'x' * config_bytes}\n", f"digest {i}", f"job {i}", "random", 4)
    return store


def test_a_page_is_the_bytes_of_the_message_built_from_the_jobs(tmp_path) -> None:
    store = _store(tmp_path, 3, config_bytes=20_000)  # lengths of 3-byte varints
    store.update(store.list()[0].job_id, best_json=json.dumps({"number": 1, "status": "complete",
                                                                "metrics": {"ne": 0.75}, "choices": {"a": 1}}))
    jobs = store.list(owner="alice")
    messages = job_convert.JobMessages()
    for token in ("", "12"):
        page = messages.page(jobs, token)
        reference = spb.ListJobsResponse(jobs=[job_convert.job_to_proto(j) for j in jobs], next_page_token=token)
        assert isinstance(page, Encoded) and page == reference.SerializeToString()
        assert spb.ListJobsResponse.FromString(page) == reference
    assert messages.job(jobs[0]) == job_convert.job_to_proto(jobs[0]).SerializeToString()
    assert messages.page([], "") == b"" == spb.ListJobsResponse().SerializeToString()


def test_an_unchanged_job_is_converted_once(tmp_path) -> None:
    store = _store(tmp_path, 3)
    messages = job_convert.JobMessages()
    first = [messages.encoded(j) for j in store.list(owner="alice")]
    again = [messages.encoded(j) for j in store.list(owner="alice")]
    assert all(a is b for a, b in zip(first, again))


def test_every_stored_change_gives_a_new_message(tmp_path) -> None:
    store = _store(tmp_path, 1)
    messages = job_convert.JobMessages()
    job_id = store.list()[0].job_id
    before = messages.encoded(store.get(job_id))
    store.update(job_id, trials_done=2, best_json=json.dumps({"number": 1, "status": "complete",
                                                              "metrics": {"ne": 0.75}}))
    updated = spb.Job.FromString(messages.encoded(store.get(job_id)))
    assert updated.SerializeToString() != before
    assert (updated.progress.trials_done, updated.best.number, updated.best.metrics.ne) == (2, 1, 0.75)
    store.transition(job_id, RUNNING, "started")  # an event and a state: last_event moves too
    started = spb.Job.FromString(messages.encoded(store.get(job_id)))
    assert started.state == spb.JOB_STATE_RUNNING and started.last_event == updated.last_event + 1


def test_at_most_max_jobs_are_kept_the_least_recently_asked_dropped(tmp_path) -> None:
    store = _store(tmp_path, 3)
    oldest, middle, newest = sorted(store.list(), key=lambda j: j.seq)
    messages = job_convert.JobMessages(max_jobs=2)
    kept_oldest = messages.encoded(oldest)
    messages.encoded(middle)
    assert messages.encoded(oldest) is kept_oldest  # asked again: now the most recent
    messages.encoded(newest)  # drops `middle`, the least recently asked for
    assert messages.encoded(oldest) is kept_oldest
    assert len(messages._kept) == 2 and middle.job_id not in messages._kept


def test_the_serializer_sends_encoded_replies_as_they_are_and_serializes_messages() -> None:
    serialize = passing_encoded(spb.Job.SerializeToString)
    job = spb.Job(job_id="job-000001", name="n")
    sent = serialize(Encoded(b"\x0a\x01x"))
    assert sent == b"\x0a\x01x" and type(sent) is bytes  # grpc's core refuses a subclass
    assert serialize(job) == job.SerializeToString()
    assert passing_encoded(None) is None
