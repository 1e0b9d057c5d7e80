"""Assemble the gRPC server of `rankitect serve`: services, guard, health, reflection, ports.

A service is plugged in as a `ServiceBinding` (its full name, how to add it to a grpc.Server,
whether it serves yet, what to start before the server answers and what to close at
shutdown). `default_services(options)` holds BlockRegistry and SearchService (with its job
store, its job runner and, without --address, a local Ray). `build_server(options, services)`
also takes bindings that replace the defaults of the same name (or add to them).
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Sequence
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
from grpc_health.v1 import health, health_pb2
from grpc_reflection.v1alpha import reflection

from launcher.rpc import DEFAULT_HOST, DEFAULT_PORT
from launcher.rpc.auth import TokenTable
from launcher.rpc.errors import Refused, show
from launcher.rpc.gen import search_pb2, search_pb2_grpc
from launcher.rpc.guard import Guard
from rankitect.errors import UserError

log = logging.getLogger(__name__)

MAX_RECEIVE_BYTES = 4 * 1024 * 1024  # a request: an architecture, a config
MAX_SEND_BYTES = 16 * 1024 * 1024  # a reply: a result with its trials; artifacts stream in 1 MiB chunks
SEARCH_SERVICE = search_pb2.DESCRIPTOR.services_by_name["SearchService"].full_name
HEALTH_SERVICE = health_pb2.DESCRIPTOR.services_by_name["Health"].full_name


@dataclass(frozen=True)
class ServerOptions:
    """What `rankitect serve` was told; checked by launcher/cmd_serve.py before it gets here."""

    host: str = DEFAULT_HOST
    port: int = DEFAULT_PORT  # 0: any free port (RankitectServer.port tells which)
    ray_address: str | None = None  # None: a local Ray
    runs_dir: Path = Path("runs/serve")  # one folder per job
    db: Path | None = None  # the job store; None: runs_dir / "jobs.sqlite3"
    allow_roots: tuple[Path, ...] = ()  # server-side paths a caller may name (resolved)
    tokens: TokenTable | None = None  # None: no auth
    tls_cert: Path | None = None
    tls_key: Path | None = None
    max_jobs: int = 2  # jobs running at once
    max_queued: int = 16  # jobs waiting for a slot; SubmitSearch is RESOURCE_EXHAUSTED past it
    workers: int = 32  # threads serving calls (a WatchJob stream holds one)
    max_receive_bytes: int = MAX_RECEIVE_BYTES
    max_send_bytes: int = MAX_SEND_BYTES

    @property
    def db_path(self) -> Path:
        return self.db if self.db is not None else self.runs_dir / "jobs.sqlite3"

    @property
    def listen_address(self) -> str:
        host = f"[{self.host}]" if ":" in self.host and not self.host.startswith("[") else self.host
        return f"{host}:{self.port}"

    def allowed_path(self, path: str, field: str) -> Path:
        """`path` resolved (symlinks followed) if it lies under an allowed root; Refused
        PERMISSION_DENIED naming `field` otherwise (also when no root is allowed)."""
        try:
            resolved = Path(path).expanduser().resolve()
        except (OSError, RuntimeError, ValueError) as exc:
            raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: not a usable path: {exc}") from None
        if not any(resolved == root or resolved.is_relative_to(root) for root in self.allow_roots):
            roots = [str(r) for r in self.allow_roots]
            raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                          f"{field}: {show(path, 200)} is outside the server's allowed folders {roots} "
                          f"(the server's --allow-root)")
        return resolved


@dataclass(frozen=True)
class ServiceBinding:
    """One service: `name` is its full proto name (for health and reflection)."""

    name: str
    add_to_server: Callable[[grpc.Server], None]
    serving: bool = True  # health status SERVING for `name` once the server started
    close: Callable[[], None] | None = field(default=None)  # called at shutdown
    start: Callable[[], None] | None = field(default=None)  # called before the server answers


def registry_binding(options: ServerOptions) -> ServiceBinding:
    from launcher.rpc.gen import registry_pb2_grpc
    from launcher.rpc.registry_service import SERVICE_NAME, BlockRegistryService

    service = BlockRegistryService(options.allowed_path)
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
    runner = JobRunner(store, options.runs_dir, options.ray_address, options.max_jobs)
    service = SearchService(store, runner, options.allowed_path, options.max_queued)

    def close() -> None:
        service.closing.set()
        try:
            runner.stop()
        finally:
            store.close()

    return ServiceBinding(SEARCH_SERVICE, lambda server: search_pb2_grpc.add_SearchServiceServicer_to_server(
        service, server), start=runner.start, close=close)


def default_services(options: ServerOptions) -> list[ServiceBinding]:
    return [registry_binding(options), search_binding(options)]


class RankitectServer:
    """A built server: `start()`, then `stop()`; also a context manager doing both."""

    def __init__(self, server: grpc.Server, port: int, options: ServerOptions,
                 bindings: Sequence[ServiceBinding], health_servicer: health.HealthServicer) -> None:
        self.server, self.port, self.options = server, port, options
        self.bindings = tuple(bindings)
        self.health = health_servicer

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
        for binding in self.bindings:
            status = health_pb2.HealthCheckResponse.SERVING if binding.serving else \
                health_pb2.HealthCheckResponse.NOT_SERVING
            self.health.set(binding.name, status)
        self.health.set("", health_pb2.HealthCheckResponse.SERVING)

    def stop(self, grace: float | None = 5.0) -> None:
        """Health NOT_SERVING, refuse new calls, let running ones finish for `grace` seconds,
        then close every service."""
        self.health.enter_graceful_shutdown()
        self.server.stop(grace).wait()
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
    --tls-cert/--tls-key when they cannot be read.
    """
    bindings = {b.name: b for b in default_services(options)}
    bindings.update({b.name: b for b in services})
    server = grpc.server(
        futures.ThreadPoolExecutor(max_workers=options.workers, thread_name_prefix="rankitect-rpc"),
        interceptors=[Guard(options.tokens)],
        options=[("grpc.max_receive_message_length", options.max_receive_bytes),
                 ("grpc.max_send_message_length", options.max_send_bytes),
                 ("grpc.so_reuseport", 0)],  # a port in use is an error, not shared
        maximum_concurrent_rpcs=options.workers * 8,
    )
    for binding in bindings.values():
        binding.add_to_server(server)
    health_servicer = health.HealthServicer()
    from grpc_health.v1 import health_pb2_grpc

    health_pb2_grpc.add_HealthServicer_to_server(health_servicer, server)
    reflection.enable_server_reflection([*bindings, HEALTH_SERVICE, reflection.SERVICE_NAME], server)
    port = _bind(server, options)
    return RankitectServer(server, port, options, list(bindings.values()), health_servicer)


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
