"""The JSON API of `rankitect serve --http-port`: the SearchService's messages as JSON over HTTP.

Every route calls the very SearchService the gRPC port serves (same store, same owner checks,
same refusals), and a message goes out as protobuf's canonical JSON (`json_format`, field names
as in search.proto: `job_id`, `last_event`, ...; 64-bit integers such as event numbers are
strings there, as that mapping says):

    GET  /api/jobs                      ListJobs   ?state=RUNNING&state=QUEUED&page_size=N&page_token=T
    GET  /api/jobs/{id}                 GetJob
    GET  /api/jobs/{id}/events          the stored events ?from_event=N (default 1) &limit=M (<= 200):
                                        {"events": [...], "next_event": K, "done": bool}; "done" once
                                        the job's end is among the events given so far
    GET  /api/jobs/{id}/result          GetResult
    GET  /api/jobs/{id}/artifact        the exported model (application/gzip; X-Sha256 header)
    POST /api/jobs/{id}/cancel          CancelJob
    POST /api/jobs/{id}/resume          ResumeJob

Authentication as on the wire: with a token file every route needs `Authorization: Bearer
TOKEN` (401 otherwise, one message for a missing and an unknown token); an owner sees their
own jobs only, another owner's is 404 like a missing one. A POST is refused (403) unless it
says `Content-Type: application/json` and any Origin it carries is this server's: a page of
another site cannot send that without the browser asking first, so it cannot cancel a job in
a logged-in browser's name. Refusals are {"error": {"code": "NOT_FOUND", "message": ...}}
with the gRPC status mapped to HTTP (`HTTP_STATUS`).
"""

from __future__ import annotations

import json
import logging
import re
from collections.abc import Generator, Mapping
from dataclasses import dataclass, field
from typing import Any
from urllib.parse import parse_qs

import grpc
from google.protobuf import json_format
from google.protobuf.message import Message

from launcher.rpc.auth import _CALLER_OWNER, TokenTable
from launcher.rpc.errors import Refused, clip, invalid_argument
from launcher.rpc.gen import search_pb2 as spb
from launcher.rpc.search_service import WATCH_BATCH, SearchService

log = logging.getLogger(__name__)

HTTP_STATUS = {
    grpc.StatusCode.INVALID_ARGUMENT: 400, grpc.StatusCode.OUT_OF_RANGE: 400,
    grpc.StatusCode.UNAUTHENTICATED: 401, grpc.StatusCode.PERMISSION_DENIED: 403,
    grpc.StatusCode.NOT_FOUND: 404, grpc.StatusCode.ALREADY_EXISTS: 409,
    grpc.StatusCode.FAILED_PRECONDITION: 409, grpc.StatusCode.RESOURCE_EXHAUSTED: 429,
    grpc.StatusCode.UNAVAILABLE: 503,
}
_JOB_ROUTE = re.compile(r"^/api/jobs/(?P<id>[^/]{1,64})(?:/(?P<what>events|result|artifact|cancel|resume))?$")
_POST_PARTS = {"cancel", "resume"}


@dataclass
class Reply:
    """One HTTP answer: `body` is bytes, or a generator of chunks (an artifact)."""

    status: int
    body: bytes | Generator[bytes, None, None] = b""
    content_type: str = "application/json"
    headers: dict[str, str] = field(default_factory=dict)


def _json(message: Message | Mapping[str, Any], status: int = 200) -> Reply:
    value = message if isinstance(message, Mapping) else _as_dict(message)
    return Reply(status, json.dumps(value, separators=(",", ":")).encode())


def _as_dict(message: Message) -> dict[str, Any]:
    return json_format.MessageToDict(message, preserving_proto_field_name=True)


def _error(status: int, code: str, message: str, headers: dict[str, str] | None = None) -> Reply:
    reply = _json({"error": {"code": code, "message": clip(message)}}, status)
    reply.headers.update(headers or {})
    return reply


class JsonApi:
    """Routes of the module docstring over `service`; `tokens` None: no authentication (every
    caller is the anonymous owner, as on the gRPC port then)."""

    def __init__(self, service: SearchService, tokens: TokenTable | None) -> None:
        self.service, self.tokens = service, tokens

    def handle(self, method: str, path: str, query: str, headers: Mapping[str, str]) -> Reply:
        """One request; never raises (an unexpected error is a 500 with the error's type, logged)."""
        owner = None
        if self.tokens is not None:
            owner, why = self.tokens.owner_of([("authorization", headers.get("authorization", ""))]
                                              if headers.get("authorization") else [])
            if owner is None:
                return _error(401, "UNAUTHENTICATED", f"a token is needed: 'Authorization: Bearer TOKEN' ({why})",
                              {"WWW-Authenticate": 'Bearer realm="rankitect"'})
        token = _CALLER_OWNER.set(owner)
        try:
            return self._route(method, path, parse_qs(query, keep_blank_values=True), headers)
        except Refused as exc:
            return _error(HTTP_STATUS.get(exc.code, 500), exc.code.name, exc.details)
        except Exception as exc:  # noqa: BLE001 (a server bug: logged, the caller gets its type only)
            log.exception("%s %s failed", method, path)
            return _error(500, "INTERNAL", f"the server failed on this call ({type(exc).__name__}); see its log")
        finally:
            _CALLER_OWNER.reset(token)

    # -- routing -------------------------------------------------------------------------------
    def _route(self, method: str, path: str, query: dict[str, list[str]], headers: Mapping[str, str]) -> Reply:
        if path in ("/api/jobs", "/api/jobs/"):
            if method != "GET":
                return _error(405, "METHOD_NOT_ALLOWED", f"{path}: only GET", {"Allow": "GET"})
            return self._list(query)
        match = _JOB_ROUTE.match(path)
        if match is None:
            return _error(404, "NOT_FOUND", f"no route {path}; see GET /api/jobs")
        job_id, what = match["id"], match["what"]
        allowed = "POST" if what in _POST_PARTS else "GET"
        if method != allowed:
            return _error(405, "METHOD_NOT_ALLOWED", f"{path}: only {allowed}", {"Allow": allowed})
        if method == "POST":
            refused = _cross_site(headers)
            if refused:
                return _error(403, "PERMISSION_DENIED", refused)
            if what == "cancel":
                return _json(self.service.CancelJob(spb.CancelJobRequest(job_id=job_id), None))
            return _json(self.service.ResumeJob(spb.ResumeJobRequest(job_id=job_id), None))
        if what is None:
            return _json(spb.Job.FromString(bytes(self.service.GetJob(spb.GetJobRequest(job_id=job_id), None))))
        if what == "result":
            return _json(self.service.GetResult(spb.GetResultRequest(job_id=job_id), None))
        if what == "events":
            return self._events(job_id, query)
        return self._artifact(job_id)

    def _list(self, query: dict[str, list[str]]) -> Reply:
        states = []
        for i, name in enumerate(query.get("state", [])):
            full = name if name.startswith("JOB_STATE_") else f"JOB_STATE_{name.upper()}"
            if full not in spb.JobState.keys():
                raise invalid_argument(f"state[{i}]", f"not a job state: {name!r}; use QUEUED, RUNNING, "
                                                      f"CANCELLING, SUCCEEDED, FAILED or CANCELLED")
            states.append(spb.JobState.Value(full))
        request = spb.ListJobsRequest(states=states, page_size=_int(query, "page_size", 0, 0),
                                      page_token=_one(query, "page_token", ""))
        return _json(spb.ListJobsResponse.FromString(bytes(self.service.ListJobs(request, None))))

    def _events(self, job_id: str, query: dict[str, list[str]]) -> Reply:
        start = _int(query, "from_event", 1, 1)
        events, done = self.service.events_page(job_id, start, min(_int(query, "limit", WATCH_BATCH, 1), WATCH_BATCH))
        return _json({"events": [_as_dict(e) for e in events],
                      "next_event": int(events[-1].number) + 1 if events else start, "done": done})

    def _artifact(self, job_id: str) -> Reply:
        chunks = self.service.DownloadArtifact(spb.DownloadArtifactRequest(job_id=job_id), None)
        first = next(chunks)  # the refusals (not SUCCEEDED, no artifact) come here, before any byte
        info = first.info

        def body() -> Generator[bytes, None, None]:
            try:
                yield first.data
                for chunk in chunks:
                    yield chunk.data
            finally:
                chunks.close()  # the file, also when the client went away mid-transfer

        return Reply(200, body(), "application/gzip",
                     {"Content-Length": str(info.size), "X-Sha256": info.sha256,
                      "Content-Disposition": f'attachment; filename="{info.name}"'})


def _cross_site(headers: Mapping[str, str]) -> str:
    """Why a POST is refused as possibly cross-site, or ""."""
    kind = headers.get("content-type", "").split(";")[0].strip().lower()
    if kind != "application/json":
        return f"a POST must say 'Content-Type: application/json' (got {kind or 'none'!r})"
    origin = headers.get("origin")
    if origin is not None:
        host = re.sub(r"^[a-z]+://", "", origin.strip().lower()).rstrip("/")
        if host != headers.get("host", "").strip().lower():
            return f"Origin {origin!r} is not this server ({headers.get('host', '')!r})"
    return ""


def _one(query: dict[str, list[str]], name: str, default: str) -> str:
    values = query.get(name)
    return values[-1] if values else default


def _int(query: dict[str, list[str]], name: str, default: int, least: int) -> int:
    text = _one(query, name, "")
    if text == "":
        return default
    if not text.isdigit() or len(text) > 9 or int(text) < least:
        raise invalid_argument(name, f"must be an integer >= {least}, got {text[:40]!r}")
    return int(text)
