"""`rankitect serve`: the gRPC server (BlockRegistry, SearchService, health, reflection).

Binds 127.0.0.1 unless --host says otherwise. Jobs run on the Ray at --address, or on a local
Ray this process starts for the first job (and stops with it); their state is in --db. With --token-file every call but the health
check needs `authorization: Bearer TOKEN`; with --tls-cert/--tls-key the port speaks TLS.
Runs until SIGINT or SIGTERM, then stops gracefully (health NOT_SERVING first). A job store
that is damaged, or does not match its runs folder (job folders it has no record of), is
refused before the port answers: one message naming both, exit 2.
"""

from __future__ import annotations

import argparse
import ipaddress
import signal
import ssl
import sys
import threading
from pathlib import Path

from rankitect.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from launcher.rpc import DEFAULT_HOST, DEFAULT_PORT

    p = sub.add_parser("serve", help="run the gRPC server (block registry; search jobs)")
    p.add_argument("--port", type=int, default=DEFAULT_PORT, help=f"port (default {DEFAULT_PORT}; 0: any free one)")
    p.add_argument("--host", default=DEFAULT_HOST,
                   help=f"address to bind (default {DEFAULT_HOST}; 0.0.0.0 for every interface)")
    p.add_argument("--http-port", type=int, default=None, metavar="N",
                   help="also serve the JSON API (GET /api/jobs ...) over HTTP on this port of --host, with "
                        "the same tokens and TLS (default: no HTTP; 0: any free port)")
    p.add_argument("--address", default=None, help="Ray cluster address for the jobs; a local Ray without it")
    p.add_argument("--dashboard", action="store_true",
                   help="start that local Ray with its dashboard (127.0.0.1) and print its URL when it starts")
    p.add_argument("--db", type=Path, default=None, help="job store file (default: RUNS_DIR/jobs.sqlite3)")
    p.add_argument("--runs-dir", type=Path, default=Path("runs/serve"),
                   help="folder of the jobs' run folders (default runs/serve)")
    p.add_argument("--allow-root", dest="allow_roots", type=Path, action="append", default=[], metavar="DIR",
                   help="a folder whose files callers may name (datasets); repeatable; none: no paths")
    p.add_argument("--token-file", type=Path, default=None,
                   help="lines of 'TOKEN OWNER'; every call then needs 'authorization: Bearer TOKEN'")
    p.add_argument("--tls-cert", type=Path, default=None, help="PEM certificate chain (with --tls-key)")
    p.add_argument("--tls-key", type=Path, default=None, help="PEM private key (with --tls-cert)")
    p.add_argument("--max-jobs", type=int, default=2, help="search jobs running at once (default 2)")
    p.add_argument("--max-queued", type=int, default=16,
                   help="jobs waiting for a slot; more are refused RESOURCE_EXHAUSTED (default 16; 0: none "
                        "wait, a job is taken only when one of the --max-jobs slots is free)")
    p.add_argument("--max-queued-per-owner", type=int, default=None, metavar="N",
                   help="of the waiting jobs, at most N of one owner (token); more are refused "
                        "RESOURCE_EXHAUSTED (default: half of --max-queued, rounded up, with --token-file; "
                        "all of it without, where every caller is one owner)")
    for flag, default, what in _STREAM_FLAGS:
        p.add_argument(flag, type=int, default=default, metavar="N",
                       help=f"{what}; one more is refused RESOURCE_EXHAUSTED (default {default})")
    p.set_defaults(run=run_serve)


# Streams (WatchJob, DownloadArtifact, health Watch) hold a thread each while open: their limits
# (launcher/rpc/streams.py). Imported lazily elsewhere; the defaults are its DEFAULT_* values.
_STREAM_FLAGS = (
    ("--max-streams", 64, "streams open at once on the whole server"),
    ("--max-streams-per-connection", 16, "streams open at once on one client connection"),
    ("--max-streams-per-owner", 16, "streams open at once of one token owner (with --token-file)"),
    ("--max-unauthenticated-streams", 8, "health Watch streams open at once without a token (with --token-file)"),
)


def options_from_args(args: argparse.Namespace):  # noqa: ANN201 (ServerOptions; imported lazily)
    """The checked ServerOptions; UserError naming the flag and the value otherwise."""
    from launcher.rpc.auth import TokenTable
    from launcher.rpc.server import ServerOptions

    if not 0 <= args.port <= 65535:
        raise UserError(f"--port {args.port}: must be in 0..65535 (0: any free port)")
    if args.http_port is not None and not 0 <= args.http_port <= 65535:
        raise UserError(f"--http-port {args.http_port}: must be in 0..65535 (0: any free port)")
    if args.http_port is not None and args.http_port != 0 and args.http_port == args.port:
        raise UserError(f"--http-port {args.http_port}: is --port too; the HTTP API needs a port of its own")
    host = args.host.strip()
    if not host or any(c.isspace() for c in host) or "/" in host:
        raise UserError(f"--host {args.host!r}: must be a host name or an IP address, e.g. 127.0.0.1")
    if args.address is not None and not args.address.strip():
        raise UserError("--address '': must be a Ray address, e.g. 127.0.0.1:6379 or ray://HOST:10001")
    if args.max_jobs < 1:
        raise UserError(f"--max-jobs {args.max_jobs}: must be >= 1")
    if args.max_queued < 0:
        raise UserError(f"--max-queued {args.max_queued}: must be >= 0 (0: no job waits for a slot)")
    per_owner = args.max_queued_per_owner
    if per_owner is not None and per_owner < 0:
        raise UserError(f"--max-queued-per-owner {per_owner}: must be >= 0 (0: an owner's job is taken only "
                        f"when a slot is free)")
    runs_dir = args.runs_dir
    if runs_dir.exists() and not runs_dir.is_dir():
        raise UserError(f"--runs-dir {runs_dir}: exists and is not a folder")
    if args.db is not None:
        if args.db.exists() and not args.db.is_file():
            raise UserError(f"--db {args.db}: exists and is not a file")
        if not args.db.parent.is_dir():
            raise UserError(f"--db {args.db}: its folder {args.db.parent} does not exist")
    roots = []
    for root in args.allow_roots:
        if not root.is_dir():
            raise UserError(f"--allow-root {root}: not an existing folder")
        roots.append(root.resolve())
    tokens = None
    if args.token_file is not None:
        if not args.token_file.is_file():
            raise UserError(f"--token-file {args.token_file}: no such file")
        tokens = TokenTable.load(args.token_file)
    _check_tls(args.tls_cert, args.tls_key)
    if per_owner is None:
        per_owner = (args.max_queued + 1) // 2 if tokens is not None else args.max_queued
    streams = {}
    for flag, _, _ in _STREAM_FLAGS:
        value = getattr(args, flag[2:].replace("-", "_"))
        if value < 1:
            raise UserError(f"{flag} {value}: must be >= 1")
        streams[flag[2:].replace("-", "_")] = value
    return ServerOptions(**streams, host=host, port=args.port, ray_address=args.address, ray_dashboard=args.dashboard,
                         runs_dir=runs_dir, db=args.db,
                         allow_roots=tuple(roots), tokens=tokens, tls_cert=args.tls_cert, tls_key=args.tls_key,
                         max_jobs=args.max_jobs, max_queued=args.max_queued, max_queued_per_owner=per_owner,
                         http_port=args.http_port)


def _check_tls(cert: Path | None, key: Path | None) -> None:
    if (cert is None) != (key is None):
        given, missing = ("--tls-cert", "--tls-key") if key is None else ("--tls-key", "--tls-cert")
        raise UserError(f"{given}: needs {missing} too (TLS takes both the certificate and its key)")
    if cert is None or key is None:
        return
    for flag, path in (("--tls-cert", cert), ("--tls-key", key)):
        if not path.is_file():
            raise UserError(f"{flag} {path}: no such file")
    try:
        ssl.create_default_context(ssl.Purpose.CLIENT_AUTH).load_cert_chain(str(cert), str(key))
    except (ssl.SSLError, OSError) as exc:
        raise UserError(f"--tls-cert {cert} / --tls-key {key}: not a PEM certificate and its matching "
                        f"private key: {exc}") from None


def _is_loopback(host: str) -> bool:
    if host == "localhost":
        return True
    try:
        return ipaddress.ip_address(host.strip("[]")).is_loopback
    except ValueError:
        return False


def run_serve(args: argparse.Namespace) -> int:
    from launcher.jobs.store import StoreUnusable
    from launcher.rpc.server import build_server

    options = options_from_args(args)
    if not _is_loopback(options.host) and (options.tokens is None or options.tls_cert is None):
        missing = " and ".join(x for x, off in (("--token-file", options.tokens is None),
                                                ("--tls-cert/--tls-key", options.tls_cert is None)) if off)
        print(f"rankitect serve: warning: listening on {options.host} without {missing}: anyone who reaches "
              f"this port can call it" + (" and read the tokens on the wire" if options.tls_cert is None
                                          and options.tokens is not None else ""), file=sys.stderr)
    try:
        server = build_server(options)
    except StoreUnusable as exc:  # damaged: name the runs folder that goes with it too
        raise UserError(f"{exc} (--db {options.db_path}, --runs-dir {options.runs_dir})") from None
    stop = threading.Event()
    try:
        server.start()  # the job store is checked against the runs folder first (StoreUnusable)
    except BaseException:
        server.stop(grace=0)
        raise
    previous = {sig: signal.signal(sig, lambda *_: stop.set()) for sig in (signal.SIGINT, signal.SIGTERM)}
    try:
        auth = f"{len(options.tokens)} tokens" if options.tokens is not None else "off"
        print(f"rankitect serve: listening on {server.address} (TLS {'on' if options.tls_cert else 'off'}, "
              f"auth {auth}); services: {', '.join(server.service_names)}, health, reflection", flush=True)
        if server.http is not None:
            print(f"rankitect serve: JSON API on {server.http.url}/api/jobs", flush=True)
        ray = options.ray_address or "a local Ray (started with the first job)"
        print(f"rankitect serve: jobs in {options.db_path}, run folders in {options.runs_dir}, on {ray}; "
              f"at most {options.max_jobs} at once", flush=True)
        while not stop.wait(0.5):
            pass
        print("rankitect serve: stopping (running jobs are interrupted and continue at the next start)",
              flush=True)
    finally:
        server.stop(grace=5.0)
        for sig, handler in previous.items():
            signal.signal(sig, handler)
    return 0
