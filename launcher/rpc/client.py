"""The Python client of `rankitect serve`: `RankitectClient(target, token, tls_ca)`.

It holds only the target, the token and the CA path; the channel is opened on first use and
left out when pickled, so a client can be handed to a Ray task or a subprocess. A refused
call raises grpc.RpcError (launcher.rpc.errors.describe / exit_code read it).
"""

from __future__ import annotations

import time
from collections.abc import Iterator, Mapping, Sequence
from pathlib import Path
from typing import TYPE_CHECKING, Any

import grpc
import yaml

from launcher.rpc import convert
from launcher.rpc.gen import registry_pb2 as rpb
from launcher.rpc.gen import registry_pb2_grpc, search_pb2_grpc
from launcher.rpc.gen import search_pb2 as spb
from launcher.rpc.server import MAX_SEND_BYTES
from rankitect.export.serving import sha256_file

if TYPE_CHECKING:
    from rankitect.arch.graph import Architecture
    from rankitect.cost import Cost
    from rankitect.schema import Schema


class RankitectClient:
    """A connection to one server. `token`: sent as `authorization: Bearer TOKEN`; `tls_ca`:
    the PEM file of the CA (or the self-signed server certificate) to trust, which turns TLS on;
    `timeout`: seconds per unary call."""

    def __init__(self, target: str, token: str | None = None, tls_ca: str | Path | None = None,
                 timeout: float = 30.0, tls_server_name: str | None = None) -> None:
        if not target:
            raise ValueError("target must be HOST:PORT, got ''")
        self.target, self.token, self.timeout = target, token, timeout
        self.tls_ca = str(tls_ca) if tls_ca is not None else None
        self.tls_server_name = tls_server_name
        self._channel: grpc.Channel | None = None
        self._stubs: dict[str, Any] = {}

    # -- pickling: the channel is re-opened lazily on the other side ------------------------
    def __getstate__(self) -> dict[str, Any]:
        state = dict(self.__dict__)
        state["_channel"], state["_stubs"] = None, {}
        return state

    def __setstate__(self, state: dict[str, Any]) -> None:
        self.__dict__.update(state)

    def __repr__(self) -> str:
        return (f"RankitectClient({self.target!r}, token={'***' if self.token else None}, "
                f"tls_ca={self.tls_ca!r})")

    @property
    def channel(self) -> grpc.Channel:
        if self._channel is None:
            options = [("grpc.max_receive_message_length", MAX_SEND_BYTES)]
            if self.tls_server_name:
                options.append(("grpc.ssl_target_name_override", self.tls_server_name))
            if self.tls_ca is not None:
                credentials = grpc.ssl_channel_credentials(root_certificates=Path(self.tls_ca).read_bytes())
                self._channel = grpc.secure_channel(self.target, credentials, options=options)
            else:
                self._channel = grpc.insecure_channel(self.target, options=options)
        return self._channel

    def _stub(self, name: str, factory: Any) -> Any:
        if name not in self._stubs:
            self._stubs[name] = factory(self.channel)
        return self._stubs[name]

    @property
    def registry(self) -> registry_pb2_grpc.BlockRegistryStub:
        """The raw BlockRegistry stub (pass `metadata=client.metadata`)."""
        return self._stub("registry", registry_pb2_grpc.BlockRegistryStub)

    @property
    def search(self) -> search_pb2_grpc.SearchServiceStub:
        """The raw SearchService stub (pass `metadata=client.metadata`)."""
        return self._stub("search", search_pb2_grpc.SearchServiceStub)

    @property
    def metadata(self) -> tuple[tuple[str, str], ...]:
        return (("authorization", f"Bearer {self.token}"),) if self.token else ()

    def call(self, method: Any, request: Any, timeout: float | None = None) -> Any:
        """`method(request)` with the token and the timeout: for a unary method of a stub."""
        return method(request, metadata=self.metadata, timeout=timeout or self.timeout)

    def close(self) -> None:
        if self._channel is not None:
            self._channel.close()
        self._channel, self._stubs = None, {}

    def __enter__(self) -> "RankitectClient":
        return self

    def __exit__(self, *exc: object) -> None:
        self.close()

    # -- BlockRegistry ---------------------------------------------------------------------
    def list_blocks(self, tag: str = "") -> list[dict[str, Any]]:
        """Every block as BlockSpec.to_dict() gives it (only those with `tag` if given)."""
        reply = self.call(self.registry.ListBlocks, rpb.ListBlocksRequest(tag=tag))
        return [convert.block_to_dict(b) for b in reply.blocks]

    def get_block(self, name: str) -> dict[str, Any]:
        return convert.block_to_dict(self.call(self.registry.GetBlock, rpb.GetBlockRequest(name=name)))

    def validate_architecture(self, arch: Architecture | dict[str, Any], schema: Schema | None = None,
                              dataset: str | None = None) -> list[tuple[str, str, str]]:
        """The architecture's problems as (node, field, message); empty when it is valid.
        Against `schema`, or the schema of the server-side `dataset` folder."""
        request = rpb.ValidateArchitectureRequest(architecture=convert.architecture_to_proto(arch))
        _set_schema(request, schema, dataset)
        reply = self.call(self.registry.ValidateArchitecture, request)
        return [(e.node, e.field, e.message) for e in reply.errors]

    def estimate_cost(self, arch: Architecture | dict[str, Any], schema: Schema | None = None,
                      dataset: str | None = None) -> Cost:
        """FLOPs per example and parameters, as rankitect.cost.cost_of gives them."""
        request = rpb.EstimateCostRequest(architecture=convert.architecture_to_proto(arch))
        _set_schema(request, schema, dataset)
        return convert.cost_from_proto(self.call(self.registry.EstimateCost, request))

    # -- SearchService ---------------------------------------------------------------------
    def submit_search(self, config: str | Mapping[str, Any], overrides: Sequence[str] = (),
                      request_id: str | None = None, validate_only: bool = False) -> tuple[spb.Job, bool]:
        """Submit a search config (YAML text, or a mapping); (the job, whether it was created:
        False for a request id used before with the same config)."""
        text = config if isinstance(config, str) else yaml.safe_dump(dict(config), sort_keys=False)
        reply = self.call(self.search.SubmitSearch, spb.SubmitSearchRequest(
            request_id=request_id or "", config_yaml=text, overrides=list(overrides), validate_only=validate_only))
        return reply.job, reply.created

    def get_job(self, job_id: str) -> spb.Job:
        return self.call(self.search.GetJob, spb.GetJobRequest(job_id=job_id))

    def list_jobs(self, states: Sequence[int] = (), page_size: int = 0) -> Iterator[spb.Job]:
        """The caller's jobs, newest first, in `states` (JobState values) if given: every page."""
        token = ""
        while True:
            reply = self.call(self.search.ListJobs, spb.ListJobsRequest(states=list(states), page_size=page_size,
                                                                        page_token=token))
            yield from reply.jobs
            token = reply.next_page_token
            if not token:
                return

    def cancel_job(self, job_id: str) -> spb.Job:
        return self.call(self.search.CancelJob, spb.CancelJobRequest(job_id=job_id))

    def resume_job(self, job_id: str) -> spb.Job:
        return self.call(self.search.ResumeJob, spb.ResumeJobRequest(job_id=job_id))

    def get_result(self, job_id: str) -> spb.SearchResult:
        return self.call(self.search.GetResult, spb.GetResultRequest(job_id=job_id))

    def watch_job(self, job_id: str, from_event: int = 0, reconnect_s: float = 60.0) -> Iterator[spb.JobEvent]:
        """The job's events from `from_event` until it ends. A stream the server drops
        (UNAVAILABLE: restarting, network) is re-attached after the last event seen, for up to
        `reconnect_s` seconds without an event; other refusals raise grpc.RpcError."""
        following, quiet_since = max(1, from_event), time.monotonic()
        while True:
            try:
                for event in self.search.WatchJob(spb.WatchJobRequest(job_id=job_id, from_event=following),
                                                  metadata=self.metadata):
                    following, quiet_since = event.number + 1, time.monotonic()
                    yield event
                return
            except grpc.RpcError as error:
                if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() - quiet_since > reconnect_s:
                    raise
                time.sleep(1.0)

    def download_artifact(self, job_id: str, path: str | Path, reconnect_s: float = 60.0) -> spb.ArtifactInfo:
        """Write the job's exported model (tar.gz) to `path`, continuing a broken transfer from
        where it stopped; checks the SHA-256 (ValueError if the file does not match it). A
        refused call raises grpc.RpcError and writes nothing."""
        path = Path(path)
        part = path.with_name(path.name + ".part")
        info, offset, quiet_since, handle = None, 0, time.monotonic(), None
        try:
            while True:
                try:
                    for chunk in self.search.DownloadArtifact(
                            spb.DownloadArtifactRequest(job_id=job_id, offset=offset), metadata=self.metadata):
                        if chunk.HasField("info"):
                            info = chunk.info
                        if handle is None:
                            handle = open(part, "wb")
                        handle.write(chunk.data)
                        offset, quiet_since = chunk.offset + len(chunk.data), time.monotonic()
                    break
                except grpc.RpcError as error:
                    if error.code() != grpc.StatusCode.UNAVAILABLE or time.monotonic() - quiet_since > reconnect_s:
                        raise
                    time.sleep(1.0)
        except BaseException:
            if handle is not None:
                handle.close()
                part.unlink(missing_ok=True)
            raise
        handle.close()
        if info is None or offset != info.size or sha256_file(part) != info.sha256:
            part.unlink(missing_ok=True)
            raise ValueError(f"download of {job_id}: the file does not match its size or SHA-256")
        part.replace(path)
        return info

    # -- health ----------------------------------------------------------------------------
    def health(self, service: str = "") -> str:
        """The health status name of `service` ("" = the whole server), e.g. "SERVING"."""
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        reply = self.call(health_pb2_grpc.HealthStub(self.channel).Check,
                          health_pb2.HealthCheckRequest(service=service))
        return health_pb2.HealthCheckResponse.ServingStatus.Name(reply.status)




def _set_schema(request: Any, schema: Schema | None, dataset: str | None) -> None:
    if (schema is None) == (dataset is None):
        raise ValueError("give exactly one of schema= and dataset=")
    if schema is not None:
        request.schema.CopyFrom(convert.schema_to_proto(schema))
    else:
        request.dataset = str(dataset)
