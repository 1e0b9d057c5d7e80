"""SearchService: search jobs submitted over gRPC, run by launcher.jobs on the server's Ray.

Every job belongs to the owner of the token that submitted it (`anonymous` when the server
runs without --token-file); another owner's job is NOT_FOUND for every call, with the very
message of a job that does not exist (a caller cannot learn which ids exist).
Statuses: INVALID_ARGUMENT for a malformed request or config (naming the field),
NOT_FOUND for an unknown job, FAILED_PRECONDITION for a call the job's state does not allow,
ALREADY_EXISTS for a request id reused with another config, RESOURCE_EXHAUSTED for a full
queue (--max-queued), an owner's full share of it (--max-queued-per-owner) or a full disk
under the job store, UNAVAILABLE for another write the store's disk refused, OUT_OF_RANGE for
a download offset past the end.
"""

from __future__ import annotations

import threading
from collections.abc import Callable, Iterator
from pathlib import Path
from typing import Any

import grpc

from launcher.jobs.events import empty_result
from launcher.jobs.runner import JobRunner
from launcher.jobs.store import FINAL_STATES, QUEUED, SUCCEEDED, JobRecord, JobStore, StoreError
from launcher.jobs.worker import ARTIFACT_FILE
from launcher.rpc import job_convert
from launcher.rpc.auth import current_owner
from launcher.rpc.errors import Refused, invalid_argument, show
from launcher.rpc.gen import search_pb2 as spb
from launcher.rpc.gen import search_pb2_grpc
from launcher.rpc.submission import check_request_id, check_submission
from launcher.rpc.wire import Encoded

SERVICE_NAME = spb.DESCRIPTOR.services_by_name["SearchService"].full_name
ANONYMOUS = "anonymous"
DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE = 50, 1000
CHUNK_BYTES = 1024 * 1024
WATCH_BATCH = 200
WATCH_POLL_S = 1.0  # a watcher re-checks the call and the server at least this often
_STORE_STATUS = {"not_found": grpc.StatusCode.NOT_FOUND, "duplicate": grpc.StatusCode.ALREADY_EXISTS,
                 "queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "owner_queue_full": grpc.StatusCode.RESOURCE_EXHAUSTED, "final": grpc.StatusCode.FAILED_PRECONDITION,
                 "state": grpc.StatusCode.FAILED_PRECONDITION, "disk_full": grpc.StatusCode.RESOURCE_EXHAUSTED,
                 "write_failed": grpc.StatusCode.UNAVAILABLE}


def _final_state(event: Any) -> bool:
    """Whether a stored event is a change to a final state (the job's end, or an end it was resumed from)."""
    return event.kind == "state" and event.payload["state"] in FINAL_STATES


def _refusal(exc: StoreError) -> Refused:
    return Refused(_STORE_STATUS.get(exc.reason, grpc.StatusCode.INTERNAL), str(exc))


class SearchService(search_pb2_grpc.SearchServiceServicer):
    """`allowed_path(path, field)` resolves a server-side path a config names (Refused
    PERMISSION_DENIED outside --allow-root); `max_queued` bounds the jobs waiting for one of the
    runner's `max_jobs` slots (0: none wait, a job is taken only when a slot is free), and
    `max_queued_per_owner` those of one owner (None: no share of its own)."""

    def __init__(self, store: JobStore, runner: JobRunner, allowed_path: Callable[[str, str], Path],
                 max_queued: int, max_queued_per_owner: int | None = None) -> None:
        self.store, self.runner, self.allowed_path, self.max_queued = store, runner, allowed_path, max_queued
        self.max_queued_per_owner = max_queued_per_owner
        self.job_messages = job_convert.JobMessages()  # GetJob and ListJobs, the calls clients poll
        self.closing = threading.Event()  # set at shutdown: open WatchJob streams end UNAVAILABLE

    # -- helpers ---------------------------------------------------------------------------
    @staticmethod
    def _owner() -> str:
        return current_owner() or ANONYMOUS

    def _job(self, job_id: str) -> JobRecord:
        """The caller's job `job_id`, or Refused INVALID_ARGUMENT / NOT_FOUND (also for a job of
        another owner: the same status and message as for no job at all)."""
        if not job_id:
            raise invalid_argument("job_id", "required, e.g. 'job-000001'")
        job = self.store.get(job_id)
        if job is None or job.owner != self._owner():
            raise Refused(grpc.StatusCode.NOT_FOUND, f"job_id: no job {show(job_id)}")
        return job

    # -- unary calls -----------------------------------------------------------------------
    def SubmitSearch(self, request: spb.SubmitSearchRequest, context: Any) -> spb.SubmitSearchResponse:
        request_id = check_request_id(request.request_id)
        submission = check_submission(request.config_yaml, list(request.overrides), self.allowed_path)
        owner = self._owner()
        if request.validate_only:
            return spb.SubmitSearchResponse(job=spb.Job(
                request_id=request_id or "", owner=owner, state=job_convert.state_to_proto(QUEUED),
                name=submission.name, config_yaml=submission.config_yaml, searcher=submission.searcher,
                progress=spb.JobProgress(trials_total=submission.trials_total)), created=False)
        try:
            job, created = self.store.create(owner, request_id, submission.config_yaml, submission.digest,
                                             submission.name, submission.searcher, submission.trials_total,
                                             max_queued=self.max_queued, slots=self.runner.max_jobs,
                                             max_queued_per_owner=self.max_queued_per_owner)
        except StoreError as exc:
            raise _refusal(exc) from None
        if created:
            self.runner.wake()
        return spb.SubmitSearchResponse(job=job_convert.job_to_proto(job), created=created)

    def GetJob(self, request: spb.GetJobRequest, context: Any) -> Encoded:  # an spb.Job
        return self.job_messages.job(self._job(request.job_id))

    def ListJobs(self, request: spb.ListJobsRequest, context: Any) -> Encoded:  # an spb.ListJobsResponse
        states = []
        for i, value in enumerate(request.states):
            try:
                states.append(job_convert.state_from_proto(value))
            except ValueError:
                raise invalid_argument(f"states[{i}]", f"not a job state: {value}; use JOB_STATE_QUEUED .. "
                                                       f"JOB_STATE_CANCELLED") from None
        if request.page_size < 0:
            raise invalid_argument("page_size", f"must be >= 0 (0: {DEFAULT_PAGE_SIZE}), got {request.page_size}")
        size = min(request.page_size or DEFAULT_PAGE_SIZE, MAX_PAGE_SIZE)
        before = None
        if request.page_token:
            if not request.page_token.isdigit() or len(request.page_token) > 18:
                raise invalid_argument("page_token", f"not a token this server gave: {show(request.page_token)}")
            before = int(request.page_token)
        jobs = self.store.list(owner=self._owner(), states=states, limit=size + 1, before_seq=before)
        more = len(jobs) > size
        jobs = jobs[:size]
        return self.job_messages.page(jobs, str(jobs[-1].seq) if more else "")

    def CancelJob(self, request: spb.CancelJobRequest, context: Any) -> spb.Job:
        return self._changed(request.job_id, self.runner.cancel)

    def ResumeJob(self, request: spb.ResumeJobRequest, context: Any) -> spb.Job:
        return self._changed(request.job_id, self.runner.resume)

    def _changed(self, job_id: str, change: Callable[[str], JobRecord]) -> spb.Job:
        """The caller's job after `change` (the runner's cancel or resume); a refused change is
        the gRPC status of its StoreError."""
        job = self._job(job_id)
        try:
            return job_convert.job_to_proto(change(job.job_id))
        except StoreError as exc:
            raise _refusal(exc) from None

    def GetResult(self, request: spb.GetResultRequest, context: Any) -> spb.SearchResult:
        job = self._job(request.job_id)
        if job.attempts == 0:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"job_id: job {job.job_id} has not started yet ({job.state}); no result so far")
        return job_convert.result_to_proto(job, self.store.result(job.job_id) or empty_result())

    def events_page(self, job_id: str, from_event: int, limit: int) -> tuple[list[spb.JobEvent], bool]:
        """The caller's job's stored events from `from_event` (>= 1), at most `limit`, without
        waiting; and whether the job's end is among them or before `from_event` (WatchJob's end)."""
        job = self._job(job_id)
        events = self.store.events(job.job_id, from_event, limit)
        current = self.store.get(job.job_id)
        done = any(_final_state(e) and e.number == current.state_event for e in events) or \
            (current.final and current.state_event < from_event)
        return [job_convert.event_to_proto(e) for e in events], done

    # -- streams ---------------------------------------------------------------------------
    def WatchJob(self, request: spb.WatchJobRequest, context: Any) -> Iterator[spb.JobEvent]:
        job = self._job(request.job_id)
        if request.from_event < 0:
            raise invalid_argument("from_event", f"must be >= 0 (0: from the first), got {request.from_event}")
        following = max(1, request.from_event)
        while True:
            batch = self.store.events(job.job_id, following, WATCH_BATCH)
            for event in batch:
                yield job_convert.event_to_proto(event)
                following = event.number + 1
                if _final_state(event) and self.store.get(job.job_id).state_event == event.number:
                    return  # the job's end, not an earlier one it was resumed from
            if batch:
                continue
            current = self.store.get(job.job_id)
            if current.final and current.state_event < following:
                return  # asked from beyond the job's end
            if self.closing.is_set():
                raise Refused(grpc.StatusCode.UNAVAILABLE, f"the server is stopping; watch again with "
                                                           f"from_event={following}")
            if not context.is_active():
                return
            self.store.wait_for_event(job.job_id, following - 1, WATCH_POLL_S)

    def DownloadArtifact(self, request: spb.DownloadArtifactRequest, context: Any) -> Iterator[spb.ArtifactChunk]:
        job = self._job(request.job_id)
        if request.artifact not in ("", "model"):
            raise invalid_argument("artifact", f"unknown artifact {show(request.artifact)}; the one there is: 'model'")
        if job.state != SUCCEEDED:
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION,
                          f"job_id: job {job.job_id} is {job.state}; only a SUCCEEDED job has an artifact")
        info = job.artifact
        path = self.runner.job_dir(job.job_id) / ARTIFACT_FILE
        if info is None or not path.is_file():
            why = job.artifact_error or "its artifact file is missing on the server"
            raise Refused(grpc.StatusCode.FAILED_PRECONDITION, f"job_id: job {job.job_id} has no artifact: {why}")
        size = int(info["size"])
        if not 0 <= request.offset <= size:
            raise Refused(grpc.StatusCode.OUT_OF_RANGE, f"offset: must be in 0..{size} (the file's size), "
                                                        f"got {request.offset}")
        meta = spb.ArtifactInfo(name=f"{job.job_id}-model.tar.gz", format="tar.gz", size=size, sha256=info["sha256"])
        offset = request.offset
        with open(path, "rb") as handle:
            handle.seek(offset)
            first = True
            while True:
                data = handle.read(CHUNK_BYTES)
                if not data and not first:
                    return
                chunk = spb.ArtifactChunk(offset=offset, data=data)
                if first:
                    chunk.info.CopyFrom(meta)
                    first = False
                yield chunk
                offset += len(data)
                if not data:
                    return
