"""The server interceptor every call passes: bearer-token auth, malformed requests, errors.

- Auth (when the server has a token table): a call to any method but the exempt ones (health,
  so that load balancers and probes work without a secret) needs `authorization: Bearer
  TOKEN`; UNAUTHENTICATED otherwise. The token's owner is what `auth.current_owner()` returns
  inside the servicer.
- A request that does not parse as its message type is INVALID_ARGUMENT naming the type
  (grpc's own answer would be INTERNAL).
- In a servicer: `Refused` becomes its status; a rankitect UserError INVALID_ARGUMENT;
  NotImplementedError UNIMPLEMENTED; anything else INTERNAL, logged with its traceback. A
  status the servicer set itself (context.abort, context.set_code) is kept.
- Streams (every method that is not unary-unary; health Watch too) take a slot of the
  server's `StreamSlots` while their handler runs, or are RESOURCE_EXHAUSTED at once (see
  launcher/rpc/streams.py): a stream holds a pool thread for its life, and the slots keep
  those threads apart from the ones unary calls (health Check too) are answered on. On a
  server with tokens, a health call that carries a known token counts as its owner's.
"""

from __future__ import annotations

import logging
from collections.abc import Callable, Iterator
from typing import Any

import grpc

from launcher.rpc.auth import _CALLER_OWNER, TokenTable
from launcher.rpc.errors import Refused, clip
from launcher.rpc.streams import StreamSlots
from launcher.rpc.wire import passing_encoded

log = logging.getLogger(__name__)
HEALTH_PREFIX = "/grpc.health.v1.Health/"


class _Malformed:
    """What the tolerant deserializer returns for bytes that do not parse."""

    def __init__(self, type_name: str, error: Exception) -> None:
        self.type_name, self.error = type_name, error

    def refusal(self) -> Refused:
        reason = clip(str(self.error) or type(self.error).__name__, 200)
        return Refused(grpc.StatusCode.INVALID_ARGUMENT,
                       f"request: not a valid {self.type_name} message: {reason}")


def _tolerant(deserializer: Callable[[bytes], Any] | None) -> Callable[[bytes], Any] | None:
    if deserializer is None:
        return None
    owner = getattr(deserializer, "__self__", None)
    type_name = getattr(getattr(owner, "DESCRIPTOR", None), "full_name", "request")

    def parse(data: bytes) -> Any:
        try:
            return deserializer(data)
        except Exception as exc:  # noqa: BLE001 (any parse failure is the caller's)
            return _Malformed(type_name, exc)

    return parse


def _checked(request: Any) -> Any:
    if isinstance(request, _Malformed):
        raise request.refusal()
    return request


def _checked_stream(requests: Iterator[Any]) -> Iterator[Any]:
    for request in requests:
        yield _checked(request)


def _fail(exc: BaseException, context: grpc.ServicerContext, method: str) -> None:
    """End the call with the status `exc` stands for (context.abort raises)."""
    from rankitect.errors import UserError

    if isinstance(exc, Refused):
        context.abort(exc.code, clip(exc.details))
    if isinstance(exc, NotImplementedError):  # also the generated base of a service not written yet
        context.abort(grpc.StatusCode.UNIMPLEMENTED, f"{method} is not implemented on this server yet")
    code = context.code() if hasattr(context, "code") else None
    if code is not None and code != grpc.StatusCode.OK:
        raise exc  # the servicer chose the status (abort, or set_code before raising)
    if isinstance(exc, UserError):
        context.abort(grpc.StatusCode.INVALID_ARGUMENT, clip(str(exc)))
    log.exception("internal error in %s", method)
    context.abort(grpc.StatusCode.INTERNAL, f"internal error in {method}; the server log has the details")


_KINDS = ("unary_unary", "unary_stream", "stream_unary", "stream_stream")


def _wrap(handler: grpc.RpcMethodHandler, method: str, owner: str | None,
          slots: StreamSlots | None = None) -> grpc.RpcMethodHandler:
    """`handler` with the tolerant deserializer, the owner set and errors mapped; a stream
    (any kind but unary-unary) holds a slot of `slots` while its handler runs; a reply the
    servicer already serialized (launcher.rpc.wire.Encoded) is sent as it is."""
    kind = next(k for k in _KINDS if getattr(handler, k) is not None)
    inner = getattr(handler, kind)
    check = _checked if kind.startswith("unary_") else _checked_stream
    counted = slots if kind != "unary_unary" else None

    if kind.endswith("_unary"):
        def call(request: Any, context: grpc.ServicerContext) -> Any:
            token = _CALLER_OWNER.set(owner)
            release = None
            try:
                if counted is not None:
                    release = counted.acquire(context.peer(), owner)
                return inner(check(request), context)
            except Exception as exc:  # noqa: BLE001
                _fail(exc, context, method)
            finally:
                if release is not None:
                    release()
                _CALLER_OWNER.reset(token)
    else:
        def call(request: Any, context: grpc.ServicerContext) -> Iterator[Any]:  # type: ignore[misc]
            token = _CALLER_OWNER.set(owner)
            release = None
            try:
                if counted is not None:
                    release = counted.acquire(context.peer(), owner)
                yield from inner(check(request), context)
            except Exception as exc:  # noqa: BLE001
                _fail(exc, context, method)
            finally:  # also when grpc closes the generator (the call ended or was cancelled)
                if release is not None:
                    release()
                _CALLER_OWNER.reset(token)

    return handler._replace(request_deserializer=_tolerant(handler.request_deserializer),
                            response_serializer=passing_encoded(handler.response_serializer), **{kind: call})


def _refusing(handler: grpc.RpcMethodHandler, code: grpc.StatusCode, details: str) -> grpc.RpcMethodHandler:
    """A handler of the same shape that reads nothing and ends the call with `code`."""
    def refuse(_request: Any, context: grpc.ServicerContext) -> Any:
        context.abort(code, details)

    def refuse_stream(_request: Any, context: grpc.ServicerContext) -> Iterator[Any]:
        context.abort(code, details)
        yield  # pragma: no cover (makes this a generator)

    raw = handler.request_deserializer and (lambda data: data)
    kind = next(k for k in _KINDS if getattr(handler, k) is not None)
    return handler._replace(request_deserializer=raw, **{kind: refuse if kind.endswith("_unary") else refuse_stream})


class Guard(grpc.ServerInterceptor):
    """Auth, malformed requests, error mapping and stream slots for every method (see the
    module doc).

    `tokens` None turns auth off; `exempt` are method-name prefixes that need no token;
    `slots` None leaves streams uncounted.
    """

    def __init__(self, tokens: TokenTable | None = None, exempt: tuple[str, ...] = (HEALTH_PREFIX,),
                 slots: StreamSlots | None = None) -> None:
        self.tokens, self.exempt, self.slots = tokens, exempt, slots

    def intercept_service(self, continuation: Callable[[grpc.HandlerCallDetails], Any],
                          details: grpc.HandlerCallDetails) -> grpc.RpcMethodHandler | None:
        handler = continuation(details)
        if handler is None:
            return None  # grpc answers UNIMPLEMENTED
        method = details.method
        owner = None
        if self.tokens is not None:
            owner, why = self.tokens.owner_of(details.invocation_metadata)
            if owner is None and not method.startswith(self.exempt):
                return _refusing(handler, grpc.StatusCode.UNAUTHENTICATED, f"{method}: {why}")
        return _wrap(handler, method, owner, self.slots)
