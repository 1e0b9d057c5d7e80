"""Assemble the gRPC server of `rankitect serve`: services, guard, health, reflection, ports.

A service is plugged in as a `ServiceBinding` (its full name, how to add it to a grpc.Server,
whether it serves yet, what to start before the server answers and what to close at
shutdown). `default_services(options)` holds BlockRegistry and SearchService (with its job
store, its job runner and, without --address, a local Ray). `build_server(options, services)`
also takes bindings that replace the defaults of the same name (or add to them).

Threads: calls run on one pool of `workers + max_streams` threads. A stream holds its thread
while it is open, so streams take slots (launcher/rpc/streams.py: at most `max_streams` in
all, `max_streams_per_connection` per client connection, `max_streams_per_owner` per token
owner, `max_unauthenticated_streams` without a token) and one beyond a limit is
RESOURCE_EXHAUSTED at once: `workers` threads always stay for unary calls and health Check.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path
from typing import TYPE_CHECKING

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

from launcher.rpc import DEFAULT_HOST, DEFAULT_PORT
from launcher.rpc.auth import TokenTable
from launcher.rpc.gen import search_pb2, search_pb2_grpc
from launcher.rpc.guard import Guard
from launcher.rpc.paths import allowed, check_dataset
from launcher.rpc.streams import (
    DEFAULT_MAX_STREAMS,
    DEFAULT_MAX_STREAMS_PER_CONNECTION,
    DEFAULT_MAX_STREAMS_PER_OWNER,
    DEFAULT_MAX_UNAUTHENTICATED_STREAMS,
    StreamLimits,
    StreamSlots,
)
from rankitect.errors import UserError

if TYPE_CHECKING:
    from launcher.web.http_server import HttpPort

log = logging.getLogger(__name__)

MAX_RECEIVE_BYTES = 4 * 1024 * 1024  # a request: an architecture, a config
MAX_SEND_BYTES = 16 * 1024 * 1024  # a reply: a result with its trials; artifacts stream in 1 MiB chunks
SEARCH_SERVICE = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name
STREAM_DRAIN_S = 5.0  # at stop: how long cancelled streams may take to return before services close


@dataclass(frozen=True)
class ServerOptions:
    """What `rankitect serve` was told; checked by launcher/cmd_serve.py before it gets here."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (RankitectServer.port tells which)
    ray_address: str | None = None  # None: a local Ray
    ray_dashboard: bool = False  # that local Ray with its dashboard
    runs_dir: Path = Path("runs/serve")  # one folder per job
    db: Path | None = None  # the job store; None: runs_dir / "jobs.sqlite3"
    allow_roots: tuple[Path, ...] = ()  # server-side paths a caller may name (resolved)
    tokens: TokenTable | None = None  # None: no auth
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_jobs: int = 2  # jobs running at once
    max_queued: int = 16  # jobs waiting for a slot; SubmitSearch is RESOURCE_EXHAUSTED past it
    max_queued_per_owner: int | None = None  # of those, one owner's at most (None: no share of its own)
    workers: int = 32  # threads for unary calls; streams have max_streams threads of their own
    max_receive_bytes: int = MAX_RECEIVE_BYTES
    max_send_bytes: int = MAX_SEND_BYTES
    max_streams: int = DEFAULT_MAX_STREAMS  # streams open at once (each holds a thread); more: RESOURCE_EXHAUSTED
    max_streams_per_connection: int = DEFAULT_MAX_STREAMS_PER_CONNECTION  # per client channel
    max_streams_per_owner: int = DEFAULT_MAX_STREAMS_PER_OWNER  # per token owner (with tokens)
    max_unauthenticated_streams: int = DEFAULT_MAX_UNAUTHENTICATED_STREAMS  # health Watch without a token
    http_port: int | None = None  # the JSON API on host:http_port (0: a free port); None: no HTTP

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else self.runs_dir / "jobs.sqlite3"

    @property
    def listen_address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    @property
    def stream_limits(self) -> StreamLimits:
        """The max_streams* fields; ValueError naming the one below 1."""
        for name in ("max_streams", "max_streams_per_connection", "max_streams_per_owner",
                     "max_unauthenticated_streams"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"{name} must be an integer >= 1, got {value!r}")
        return StreamLimits(total=self.max_streams, per_connection=self.max_streams_per_connection,
                            per_owner=self.max_streams_per_owner, unauthenticated=self.max_unauthenticated_streams)

    def allowed_path(self, path: str, field: str) -> Path:
        """`path` resolved (symlinks followed) if it lies under an allowed root; Refused
        PERMISSION_DENIED naming `field` otherwise (also when no root is allowed). A folder is
        read as a dataset: each file of it a reader opens must resolve under a root too
        (`allowed_dataset`)."""
        resolved = allowed(path, field, self.allow_roots)
        if resolved.is_dir():
            check_dataset(resolved, field, self.allow_roots)
        return resolved

    def allowed_dataset(self, path: str, field: str) -> Path:
        """The dataset folder `path` resolved, if it and every file of it that a reader opens
        (schema.json, date=* folders, their parquet files) resolve under an allowed root;
        Refused PERMISSION_DENIED naming `field` and the file otherwise. A path that is not
        a folder is returned as is (the reader says what is wrong with it)."""
        return self.allowed_path(path, field)


@dataclass(frozen=True)
class ServiceBinding:
    """One service: `name` is its full proto name (for health and reflection)."""

    name: str
    add_to_server: Callable[[grpc.Server], None]
    serving: bool = True  # health status SERVING for `name` once the server started
    close: Callable[[], None] | None = field(default=None)  # called at shutdown
    start: Callable[[], None] | None = field(default=None)  # called before the server answers
    servicer: object | None = field(default=None)  # the service object (the HTTP port calls SearchService's)


def registry_binding(options: ServerOptions) -> ServiceBinding:
    from launcher.rpc.gen import registry_pb2_grpc
    from launcher.rpc.registry_service import SERVICE_NAME, BlockRegistryService

    service = BlockRegistryService(options.allowed_dataset)
    return ServiceBinding(SERVICE_NAME, lambda server: registry_pb2_grpc.add_BlockRegistryServicer_to_server(
        service, server))


def search_binding(options: ServerOptions) -> ServiceBinding:
    """The SearchService over the job store at options.db_path. `start` recovers the jobs a
    previous server left and starts the runner (which starts a local Ray, without --address,
    when the first job starts); `close` ends open watches, interrupts running drivers (their
    jobs stay queued), stops that Ray and closes the store."""
    from launcher.jobs.runner import JobRunner
    from launcher.jobs.store import JobStore
    from launcher.rpc.search_service import SearchService

    store = JobStore(options.db_path)
    runner = JobRunner(store, options.runs_dir, options.ray_address, options.max_jobs,
                       ray_dashboard=options.ray_dashboard)
    service = SearchService(store, runner, options.allowed_path, options.max_queued, options.max_queued_per_owner)

    def close() -> None:
        service.closing.set()
        try:
            runner.stop()
        finally:
            store.close()

    return ServiceBinding(SEARCH_SERVICE, lambda server: search_pb2_grpc.add_SearchServiceServicer_to_server(
        service, server), start=runner.start, close=close, servicer=service)


def default_services(options: ServerOptions) -> list[ServiceBinding]:
    return [registry_binding(options), search_binding(options)]


class RankitectServer:
    """A built server: `start()`, then `stop()`; also a context manager doing both."""

    def __init__(self, server: grpc.Server, port: int, options: ServerOptions,
                 bindings: Sequence[ServiceBinding], health_servicer: health.HealthServicer,
                 stream_slots: StreamSlots | None = None) -> None:
        self.server, self.port, self.options = server, port, options
        self.http: HttpPort | None = None  # the JSON API's port (launcher/web), when options.http_port is set
        self.bindings = tuple(bindings)
        self.health = health_servicer
        self.stream_slots = stream_slots  # the open streams (see launcher/rpc/streams.py)

    @property
    def address(self) -> str:
        """HOST:PORT a client dials (the bound port, also when --port 0 was asked)."""
        host = self.options.host
        host = f"[{host}]" if ":" in host and not host.startswith("[") else host
        return f"{host}:{self.port}"

    @property
    def service_names(self) -> list[str]:
        return [b.name for b in self.bindings]

    def start(self) -> None:
        """Start the services, then serve; health turns SERVING (the whole server, "", and each
        serving service)."""
        for binding in self.bindings:
            if binding.start is not None:
                binding.start()
        self.server.start()
        if self.http is not None:
            self.http.start()
        for binding in self.bindings:
            status = health_pb2.HealthCheckResponse.SERVING if binding.serving else \
                health_pb2.HealthCheckResponse.NOT_SERVING
            self.health.set(binding.name, status)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = 5.0) -> None:
        """Health NOT_SERVING, refuse new calls, let running ones finish for `grace` seconds,
        then close every service (once the handlers of the cancelled streams returned, for
        up to STREAM_DRAIN_S more: a stream notices its cancellation at its next poll)."""
        self.health.enter_graceful_shutdown()
        if self.http is not None:
            self.http.stop()
        self.server.stop(grace).wait()
        if self.stream_slots is not None and not self.stream_slots.wait_idle(STREAM_DRAIN_S):
            log.warning("%d streams still open %.0f s after the server stopped; closing the services anyway",
                        self.stream_slots.open, STREAM_DRAIN_S)
        for binding in self.bindings:
            if binding.close is not None:
                try:
                    binding.close()
                except Exception:  # noqa: BLE001 (one failing close must not skip the others)
                    log.exception("closing %s failed", binding.name)

    def wait(self, timeout: float | None = None) -> bool:
        """Block until the server stopped (True) or `timeout` passed (False)."""
        return self.server.wait_for_termination(timeout)

    def __enter__(self) -> "RankitectServer":
        self.start()
        return self

    def __exit__(self, *exc: object) -> None:
        self.stop(grace=1.0)


def build_server(options: ServerOptions, services: Sequence[ServiceBinding] = ()) -> RankitectServer:
    """A server with the default services (those in `services` replace the defaults of the
    same name, or are added), health and reflection, bound but not started.

    Raises UserError naming --host/--port when the address cannot be bound, and naming
    --tls-cert/--tls-key when they cannot be read; ValueError for a stream limit below 1.
    """
    slots = StreamSlots(options.stream_limits, authenticated=options.tokens is not None)
    bindings = {b.name: b for b in default_services(options)}
    bindings.update({b.name: b for b in services})
    server = grpc.server(  # threads: `workers` for unary calls + one per stream slot
        futures.ThreadPoolExecutor(max_workers=options.workers + options.max_streams,
                                   thread_name_prefix="rankitect-rpc"),
        interceptors=[Guard(options.tokens, slots=slots)],
        options=[("grpc.max_receive_message_length", options.max_receive_bytes),
                 ("grpc.max_send_message_length", options.max_send_bytes),
                 ("grpc.so_reuseport", 0)],  # a port in use is an error, not shared
        maximum_concurrent_rpcs=options.workers * 8 + options.max_streams,  # beyond: RESOURCE_EXHAUSTED
    )
    for binding in bindings.values():
        binding.add_to_server(server)
    health_servicer = health.HealthServicer()
    from grpc_health.v1 import health_pb2_grpc

    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*bindings, HEALTH_SERVICE, reflection.SERVICE_NAME], server)
    port = _bind(server, options)
    built = RankitectServer(server, port, options, list(bindings.values()), health_servicer, slots)
    if options.http_port is not None:
        try:
            built.http = _http_port(options, bindings.get(SEARCH_SERVICE))
        except UserError:
            built.stop(grace=0)  # closes the services (the job store) it opened
            raise
    return built


def _http_port(options: ServerOptions, search: ServiceBinding | None) -> "HttpPort":
    """The JSON API (launcher/web) over the SearchService of `search`, bound to host:http_port."""
    from launcher.web.api import JsonApi
    from launcher.web.http_server import HttpPort

    if search is None or search.servicer is None:
        raise UserError("--http-port: the server has no SearchService to serve over HTTP")
    return HttpPort(JsonApi(search.servicer, options.tokens), options.host, options.http_port or 0,
                    options.tls_cert, options.tls_key)


def _bind(server: grpc.Server, options: ServerOptions) -> int:
    address = options.listen_address
    try:
        if options.tls_cert is not None and options.tls_key is not None:
            try:
                pair = (Path(options.tls_key).read_bytes(), Path(options.tls_cert).read_bytes())
            except OSError as exc:
                raise UserError(f"--tls-cert/--tls-key: cannot read {exc.filename}: {exc.strerror}") from None
            port = server.add_secure_port(address, grpc.ssl_server_credentials([pair]))
        else:
            port = server.add_insecure_port(address)
    except RuntimeError as exc:
        raise UserError(f"--host/--port: cannot listen on {address}: {exc} (in use, or not an address "
                        f"of this machine?)") from None
    if not port:
        raise UserError(f"--host/--port: cannot listen on {address} (in use, or not an address of this "
                        f"machine?)")
    return port
