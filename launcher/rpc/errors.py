"""Statuses on the wire, both ways: servicers raise `Refused`, the CLI maps a refused call to
an exit code (2 for the caller's mistakes, 1 otherwise) and prints the status and its detail.
"""

from __future__ import annotations

import functools
import sys
from collections.abc import Callable
from typing import Any

import grpc

# Refusals the caller can fix by changing the call: the CLI exits 2 for these, 1 for the rest
# (UNAVAILABLE, DEADLINE_EXCEEDED, RESOURCE_EXHAUSTED, INTERNAL, ...: retry or ask the operator).
CALLER_MISTAKES = frozenset({
    grpc.StatusCode.INVALID_ARGUMENT, grpc.StatusCode.NOT_FOUND, grpc.StatusCode.FAILED_PRECONDITION,
    grpc.StatusCode.PERMISSION_DENIED, grpc.StatusCode.UNAUTHENTICATED, grpc.StatusCode.ALREADY_EXISTS,
    grpc.StatusCode.OUT_OF_RANGE,
})
EXIT_CALLER_MISTAKE = 2
EXIT_REFUSED = 1
MAX_DETAIL_CHARS = 2000  # status details travel in a header; keep them well under its limit


class Refused(Exception):
    """Raised in a servicer to end the call with `code` and `details` (the server's guard
    interceptor turns it into the status). `details` starts with the request field it is about."""

    def __init__(self, code: grpc.StatusCode, details: str) -> None:
        self.code, self.details = code, details
        super().__init__(f"{code.name}: {details}")


def invalid_argument(field: str, message: str) -> Refused:
    """INVALID_ARGUMENT naming the field path, e.g. `architecture.nodes[2].params.width`."""
    return Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: {message}")


def clip(text: str, limit: int = MAX_DETAIL_CHARS) -> str:
    """`text` cut to `limit` characters, saying how much was left out."""
    if len(text) <= limit:
        return text
    return f"{text[:limit]}... ({len(text) - limit} more characters)"


def show(value: Any, limit: int = 80) -> str:
    """repr(value), cut to `limit` characters: for echoing a caller's value in a message."""
    return clip(repr(value), limit)


def exit_code(code: grpc.StatusCode | None) -> int:
    """2 when the refusal is the caller's mistake, 1 otherwise."""
    return EXIT_CALLER_MISTAKE if code in CALLER_MISTAKES else EXIT_REFUSED


def describe(error: grpc.RpcError) -> str:
    """'STATUS_NAME: details' of a failed call."""
    code = error.code() if hasattr(error, "code") else None
    details = error.details() if hasattr(error, "details") else str(error)
    return f"{code.name if code is not None else 'UNKNOWN'}: {details or '(no details)'}"


def report(error: grpc.RpcError, target: str = "") -> int:
    """Print the refused call on stderr (`rankitect: TARGET: STATUS: details`); the exit code."""
    where = f"{target}: " if target else ""
    print(f"rankitect: {where}{describe(error)}", file=sys.stderr)
    return exit_code(error.code() if hasattr(error, "code") else None)


def rpc_command(run: Callable[[Any], int]) -> Callable[[Any], int]:
    """Decorator for a CLI command's `run(args)` that calls a server: a refused call prints its
    status and detail and returns the exit code instead of raising (args.server names it)."""

    @functools.wraps(run)
    def wrapper(args: Any) -> int:
        try:
            return run(args)
        except grpc.RpcError as error:
            return report(error, getattr(args, "server", "") or "")

    return wrapper
