"""Jobs, events and results of the job store as rankitect.v1 messages (SearchService replies).

The store's forms are the reference: a trial is its result.json dict, an event its JSON
payload (launcher.jobs.events). Fields a message has no place for are left out of it, and
GetResult carries result.json whole beside the messages.

A stored value that does not fit its field (an int32 count of 2**31, a huge float, a number
stored as text) is clamped into the field's range, never raised: one bad row must not make
GetJob, ListJobs or WatchJob fail for its owner.
"""

from __future__ import annotations

import json
import math
import threading
from collections import OrderedDict
from collections.abc import Mapping
from typing import Any

from google.protobuf import struct_pb2, timestamp_pb2

from launcher.jobs.store import JobRecord, StoredEvent
from launcher.rpc import convert
from launcher.rpc.convert import clamp_int, clamp_int32
from launcher.rpc.gen import search_pb2 as spb
from launcher.rpc.wire import Encoded, length_delimited

_STATE_PREFIX = "JOB_STATE_"
_TRIAL_STATUS = {"complete": spb.TRIAL_STATUS_COMPLETE, "pruned": spb.TRIAL_STATUS_PRUNED,
                 "failed": spb.TRIAL_STATUS_FAILED}
_METRIC_FLOATS = ("ne", "logloss", "auc", "calibration")
_METRIC_INTS = ("rows", "positives", "flops_per_example", "params", "embedding_params")
_METRIC_KNOWN = frozenset(_METRIC_FLOATS + _METRIC_INTS + ("latency", "eval_dates", "by_date"))
# google.protobuf.Timestamp's range: 0001-01-01T00:00:00Z .. 9999-12-31T23:59:59Z
_TIMESTAMP_MIN_S, _TIMESTAMP_MAX_S = -62_135_596_800, 253_402_300_799


def state_to_proto(state: str) -> int:
    return spb.JobState.Value(_STATE_PREFIX + state)


def state_from_proto(value: int) -> str:
    """The store's name of a JobState value; ValueError for one that is not defined."""
    name = spb.JobState.Name(value)  # ValueError for an undefined number
    if value == spb.JOB_STATE_UNSPECIFIED:
        raise ValueError("JOB_STATE_UNSPECIFIED is not a state")
    return name.removeprefix(_STATE_PREFIX)


def _timestamp(seconds: float | None) -> timestamp_pb2.Timestamp | None:
    if seconds is None or not _finite(seconds):
        return None
    stamp = timestamp_pb2.Timestamp()
    stamp.FromNanoseconds(int(min(max(float(seconds), _TIMESTAMP_MIN_S), _TIMESTAMP_MAX_S) * 1e9))
    return stamp


def _float(value: Any) -> float:
    """`value` as a float for a message field: 0.0 when it is no finite number."""
    return float(value) if _finite(value) else 0.0


def metrics_to_proto(metrics: Mapping[str, Any] | None) -> spb.Metrics:
    metrics = metrics or {}
    msg = spb.Metrics()
    for key in _METRIC_FLOATS:
        if _finite(metrics.get(key)):
            setattr(msg, key, float(metrics[key]))
    for key in _METRIC_INTS:
        if _finite(metrics.get(key)):
            setattr(msg, key, clamp_int(metrics[key]))
    if _finite(metrics.get("latency")):
        msg.latency_us = float(metrics["latency"])
    eval_dates = metrics.get("eval_dates") or []
    msg.eval_dates.extend(str(d) for d in (eval_dates if isinstance(eval_dates, list) else [eval_dates]))
    by_dates = metrics.get("by_date") or {}
    for date, by_date in (by_dates.items() if isinstance(by_dates, Mapping) else ()):
        if isinstance(by_date, Mapping):
            msg.by_date[str(date)].CopyFrom(metrics_to_proto(by_date))
    for key, value in metrics.items():
        if key not in _METRIC_KNOWN and _finite(value) and not isinstance(value, bool):
            msg.other[key] = float(value)
    return msg


def _finite(value: Any) -> bool:
    """A number (not a bool) that a double holds: finite, and an int no larger than a double's range."""
    if not isinstance(value, (int, float)) or isinstance(value, bool):
        return False
    try:
        return math.isfinite(value)
    except OverflowError:  # an int past a double's range
        return False


def trial_to_proto(trial: Mapping[str, Any] | None, name: str | None = None) -> spb.Trial | None:
    """The result.json form of a trial (or a baseline: `name` given, no number) as a Trial."""
    if trial is None:
        return None
    number = trial.get("number")
    msg = spb.Trial(number=clamp_int32(number, -1) if number is not None else -1,
                    status=_TRIAL_STATUS.get(trial.get("status", ""), spb.TRIAL_STATUS_UNSPECIFIED),
                    metrics=metrics_to_proto(trial.get("metrics")),
                    test_metrics=metrics_to_proto(trial.get("test_metrics")),
                    seconds=_float(trial.get("seconds")), wall_seconds=_float(trial.get("wall_seconds")),
                    attempts=clamp_int32(trial.get("attempts")), error=str(trial.get("error") or ""),
                    name=name or (f"trial {number}" if number is not None else ""))
    if trial.get("arch"):
        msg.architecture.CopyFrom(convert.architecture_to_proto(trial["arch"]))
    if trial.get("choices"):
        msg.choices.CopyFrom(_struct(trial["choices"]))
    return msg


def front_point(entry: Mapping[str, Any]) -> spb.Trial | None:
    """A point of the front: a trial, or a baseline (named "baseline NAME", number -1)."""
    return trial_to_proto(entry, name=None if "number" in entry else f"baseline {entry['baseline']}")


def _struct(values: Mapping[str, Any]) -> struct_pb2.Struct:
    out = struct_pb2.Struct()
    out.update(json.loads(json.dumps(dict(values))))
    return out


def job_to_proto(job: JobRecord) -> spb.Job:
    msg = spb.Job(job_id=job.job_id, request_id=job.request_id or "", owner=job.owner,
                  state=state_to_proto(job.state), name=job.name, config_yaml=job.config_yaml,
                  progress=spb.JobProgress(trials_done=clamp_int32(job.trials_done),
                                           trials_total=clamp_int32(job.trials_total), phase=job.phase),
                  error=job.error, last_event=clamp_int(job.last_event), searcher=job.searcher,
                  attempts=clamp_int32(job.attempts),
                  artifact_error=job.artifact_error if job.artifact_json is None else "")
    for field, seconds in (("created_at", job.created_at), ("started_at", job.started_at),
                           ("finished_at", job.finished_at)):
        stamp = _timestamp(seconds)
        if stamp is not None:
            getattr(msg, field).CopyFrom(stamp)
    best = trial_to_proto(job.best)
    if best is not None:
        msg.best.CopyFrom(best)
    return msg


class JobMessages:
    """`job_to_proto` of a job record, serialized, kept while the record is unchanged (it is
    compared whole: any stored change of the job is a new message). A page of ListJobs then
    converts only the jobs that changed since it was last asked for and joins the stored bytes
    of the others (launcher.rpc.wire): converting one job costs about 70 us here, building and
    serializing a page of 50 a few ms, which 32 polling clients turned into a queue. At most
    `max_jobs` are kept, the least recently asked for dropped first."""

    def __init__(self, max_jobs: int = 4096) -> None:
        self.max_jobs = max_jobs
        self._kept: OrderedDict[str, tuple[JobRecord, bytes]] = OrderedDict()
        self._lock = threading.Lock()

    def encoded(self, job: JobRecord) -> bytes:
        """job_to_proto(job).SerializeToString()."""
        with self._lock:
            kept = self._kept.get(job.job_id)
            if kept is not None and kept[0] == job:
                self._kept.move_to_end(job.job_id)
                return kept[1]
        data = job_to_proto(job).SerializeToString()
        with self._lock:
            self._kept[job.job_id] = (job, data)
            self._kept.move_to_end(job.job_id)
            while len(self._kept) > self.max_jobs:
                self._kept.popitem(last=False)
        return data

    def job(self, job: JobRecord) -> Encoded:
        """A GetJob reply."""
        return Encoded(self.encoded(job))

    def page(self, jobs: list[JobRecord], next_page_token: str) -> Encoded:
        """A ListJobsResponse of `jobs` (field 1) and `next_page_token` (field 2)."""
        parts = [length_delimited(_JOBS_FIELD, self.encoded(j)) for j in jobs]
        if next_page_token:
            parts.append(length_delimited(_TOKEN_FIELD, next_page_token.encode()))
        return Encoded(b"".join(parts))


_JOBS_FIELD = spb.ListJobsResponse.DESCRIPTOR.fields_by_name["jobs"].number
_TOKEN_FIELD = spb.ListJobsResponse.DESCRIPTOR.fields_by_name["next_page_token"].number


def event_to_proto(event: StoredEvent) -> spb.JobEvent:
    msg = spb.JobEvent(number=clamp_int(event.number), time=_timestamp(event.time))
    p = event.payload
    if event.kind == "state":
        msg.state.CopyFrom(spb.StateChanged(state=state_to_proto(p["state"]), message=p.get("message", "")))
    elif event.kind == "trial":
        msg.trial.CopyFrom(spb.TrialFinished(trial=trial_to_proto(p["trial"]), progress=spb.JobProgress(
            trials_done=clamp_int32(p.get("done")), trials_total=clamp_int32(p.get("total")), phase="trials")))
    elif event.kind == "best":
        msg.best.CopyFrom(spb.NewBest(trial=trial_to_proto(p["trial"])))
    elif event.kind == "pareto":
        msg.pareto.CopyFrom(spb.ParetoFront(points=[front_point(t) for t in p.get("points", [])]))
    elif event.kind == "progress":
        msg.progress.CopyFrom(spb.Progress(phase=p.get("phase", ""), done=clamp_int(p.get("done")),
                                           total=clamp_int(p.get("total")), unit=p.get("unit", "")))
    elif event.kind == "log":
        msg.log.CopyFrom(spb.LogLine(text=p.get("text", ""), source=p.get("source", "")))
    return msg


def result_to_proto(job: JobRecord, result: Mapping[str, Any]) -> spb.SearchResult:
    msg = spb.SearchResult(job_id=job.job_id, state=state_to_proto(job.state),
                           trials=[trial_to_proto(t) for t in result.get("trials", [])],
                           pareto=[front_point(t) for t in result.get("pareto", [])],
                           result_json=json.dumps(result, indent=2))
    best = trial_to_proto(result.get("best"))
    if best is not None:
        msg.best.CopyFrom(best)
    for name, record in (result.get("baselines") or {}).items():
        msg.baselines[name].CopyFrom(trial_to_proto(record, name=f"baseline {name}"))
    return msg
