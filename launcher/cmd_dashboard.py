"""`rankitect dashboard RUN`: optuna-dashboard on a search run's study, served from this process.

The study holds every trial with its objective values under their names (ne, flops, ...),
per-epoch validation NE as intermediate values in a single-objective search (a user attribute
`intermediate` in a multi-objective one: Optuna keeps intermediate values for one objective
only), and the baselines marked by the user attribute `baseline`: those the space expresses
as trials of the search, the others added once its trials are done (`beside_search`).
"""

from __future__ import annotations

import argparse
from pathlib import Path
from typing import Any


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("dashboard", help="serve optuna-dashboard on a search run's study and print its URL")
    p.add_argument("run_dir", type=Path, help="a search's run folder (its --out, e.g. runs/search): RUN/study.db")
    p.add_argument("--host", default="127.0.0.1",
                   help="address to listen on; 0.0.0.0 shows the study to the whole network (default: %(default)s)")
    p.add_argument("--port", type=int, default=8080, help="port to listen on; 0: a free one (default: %(default)s)")
    p.set_defaults(run=run_dashboard)


def run_dashboard(args: argparse.Namespace) -> int:
    from socketserver import ThreadingMixIn
    from wsgiref.simple_server import WSGIRequestHandler, WSGIServer, make_server

    from rankitect.errors import UserError
    from rankitect.experiment.plan import STUDY_FILE

    study_file = args.run_dir / STUDY_FILE
    if not study_file.is_file():
        raise UserError(f"run_dir: no {STUDY_FILE} in {str(args.run_dir)!r} (a search's run folder, e.g. "
                        f"runs/search; a search with searcher.storage set keeps its study there instead: "
                        f"optuna-dashboard URL)")
    if not 0 <= args.port <= 65535:
        raise UserError(f"--port: must be in 0..65535, got {args.port}")
    import optuna
    import optuna_dashboard

    class Server(ThreadingMixIn, WSGIServer):
        daemon_threads = True  # a browser's open connections do not hold Ctrl-C up

    class QuietHandler(WSGIRequestHandler):
        def log_message(self, format: str, *values: Any) -> None:  # noqa: A002 (the base's name)
            return None

    storage = optuna.storages.RDBStorage(f"sqlite:///{study_file.resolve()}")
    try:
        server = make_server(args.host, args.port, optuna_dashboard.wsgi(storage), server_class=Server,
                             handler_class=QuietHandler)
    except OSError as exc:
        raise UserError(f"--port: cannot listen on {args.host}:{args.port}: {exc.strerror or exc}") from None
    host = f"[{args.host}]" if ":" in args.host else args.host
    print(f"optuna-dashboard for {args.run_dir}: http://{host}:{server.server_port}/dashboard/ (Ctrl-C stops it)",
          flush=True)
    try:
        server.serve_forever()
    except KeyboardInterrupt:
        pass
    finally:
        server.server_close()
    return 0
