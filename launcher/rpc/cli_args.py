"""Flags shared by the CLI commands that call a `rankitect serve` (light: no grpc import)."""

from __future__ import annotations

import argparse
import os
from pathlib import Path
from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from launcher.rpc.client import RankitectClient

TOKEN_ENV = "RANKITECT_TOKEN"


def add_client_args(parser: argparse.ArgumentParser, required: bool = False) -> None:
    """--server, --token-file, --tls-ca (the token may also come from $RANKITECT_TOKEN)."""
    parser.add_argument("--server", required=required, metavar="HOST:PORT",
                        help="a `rankitect serve` to ask" + ("" if required else " (default: this process)"))
    parser.add_argument("--token-file", type=Path, default=None, metavar="FILE",
                        help=f"file holding the bearer token (first word of its first line; default: "
                             f"${TOKEN_ENV})")
    parser.add_argument("--tls-ca", type=Path, default=None, metavar="PEM",
                        help="CA or self-signed server certificate to trust; turns TLS on")


def client_from_args(args: argparse.Namespace) -> RankitectClient:
    """The client the flags of add_client_args describe; UserError naming a bad flag."""
    from launcher.rpc.auth import read_client_token
    from launcher.rpc.client import RankitectClient
    from rankitect.errors import UserError

    target = (args.server or "").strip()
    host, sep, port = target.rpartition(":")
    if not sep or not host or not port.isdigit() or not 0 < int(port) < 65536:
        raise UserError(f"--server {args.server!r}: must be HOST:PORT, e.g. 127.0.0.1:50051")
    token = read_client_token(args.token_file) if args.token_file else os.environ.get(TOKEN_ENV) or None
    if args.tls_ca is not None and not Path(args.tls_ca).is_file():
        raise UserError(f"--tls-ca {args.tls_ca}: no such file")
    return RankitectClient(target, token=token, tls_ca=args.tls_ca)
