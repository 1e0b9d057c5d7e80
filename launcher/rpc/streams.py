"""Stream slots: how many streaming calls the server keeps open, in all and per caller.

The server is a grpc sync server: every call runs in a thread of one pool, and a streaming
call (WatchJob, DownloadArtifact, grpc.health.v1.Health/Watch, reflection) holds its thread
for as long as it is open. So streams get slots of their own: the pool has `total` threads
for streams on top of the threads for unary calls, and a stream that would pass a limit is
answered RESOURCE_EXHAUSTED at once (holding its thread for no longer than that answer):

- `total`: open streams on the whole server (and the pool's threads for streams);
- `per_connection`: open streams on one connection (one client channel: grpc's peer);
- `per_owner`: open streams of one token owner (servers with --token-file only);
- `unauthenticated`: open streams without a known token on a server with --token-file
  (only the health service answers those: probes), capped hard.

Thread-safe. A slot is taken when the stream's handler starts and given back when it
returns, so that the slots never undercount the threads that streams hold.
"""

from __future__ import annotations

import threading
from collections import Counter
from collections.abc import Callable
from dataclasses import dataclass

import grpc

from launcher.rpc.errors import Refused

DEFAULT_MAX_STREAMS = 64
DEFAULT_MAX_STREAMS_PER_CONNECTION = 16
DEFAULT_MAX_STREAMS_PER_OWNER = 16
DEFAULT_MAX_UNAUTHENTICATED_STREAMS = 8


@dataclass(frozen=True)
class StreamLimits:
    """The stream limits of a server (see the module doc); each at least 1."""

    total: int = DEFAULT_MAX_STREAMS
    per_connection: int = DEFAULT_MAX_STREAMS_PER_CONNECTION
    per_owner: int = DEFAULT_MAX_STREAMS_PER_OWNER
    unauthenticated: int = DEFAULT_MAX_UNAUTHENTICATED_STREAMS

    def __post_init__(self) -> None:
        for name in ("total", "per_connection", "per_owner", "unauthenticated"):
            value = getattr(self, name)
            if not isinstance(value, int) or isinstance(value, bool) or value < 1:
                raise ValueError(f"stream limit {name} must be an integer >= 1, got {value!r}")


class StreamSlots:
    """Open streams counted against `limits`; `authenticated` says whether the server has a
    token table (without one, every caller is the same anonymous owner: only the total and
    per-connection limits apply)."""

    def __init__(self, limits: StreamLimits, authenticated: bool) -> None:
        self.limits, self.authenticated = limits, authenticated
        self._lock = threading.Lock()
        self._idle = threading.Condition(self._lock)
        self._total = 0
        self._by_connection: Counter[str] = Counter()
        self._by_owner: Counter[str] = Counter()
        self._unauthenticated = 0

    @property
    def open(self) -> int:
        """Streams open now (their handlers running)."""
        with self._lock:
            return self._total

    def acquire(self, connection: str, owner: str | None) -> Callable[[], None]:
        """Take a slot for a stream of `owner` (None: no known token) on `connection`; the
        function that gives it back (call it once). Refused RESOURCE_EXHAUSTED naming the limit
        when one is reached."""
        anonymous = self.authenticated and owner is None
        with self._lock:
            limits = self.limits
            if anonymous and self._unauthenticated >= limits.unauthenticated:
                raise _full(f"{self._unauthenticated} streams without a token are open (the server's limit "
                            f"for streams without a token: {limits.unauthenticated})")
            if self._by_connection[connection] >= limits.per_connection:
                raise _full(f"this connection has {self._by_connection[connection]} open streams (the "
                            f"server's limit per connection: {limits.per_connection})")
            if self.authenticated and owner is not None and self._by_owner[owner] >= limits.per_owner:
                raise _full(f"owner {owner!r} has {self._by_owner[owner]} open streams (the server's limit "
                            f"per owner: {limits.per_owner})")
            if self._total >= limits.total:
                raise _full(f"the server has {self._total} open streams (its limit: {limits.total})")
            self._total += 1
            self._by_connection[connection] += 1
            if anonymous:
                self._unauthenticated += 1
            elif self.authenticated and owner is not None:
                self._by_owner[owner] += 1
        released = [False]

        def release() -> None:
            with self._lock:
                if released[0]:
                    return
                released[0] = True
                self._total -= 1
                _decrement(self._by_connection, connection)
                if anonymous:
                    self._unauthenticated -= 1
                elif self.authenticated and owner is not None:
                    _decrement(self._by_owner, owner)
                if self._total == 0:
                    self._idle.notify_all()

        return release

    def wait_idle(self, timeout: float) -> bool:
        """Until no stream is open (True) or `timeout` seconds passed (False): at shutdown,
        so that what the streams read is closed only after their handlers returned."""
        with self._idle:
            return self._idle.wait_for(lambda: self._total == 0, timeout)


def _decrement(counter: Counter[str], key: str) -> None:
    counter[key] -= 1
    if counter[key] <= 0:
        del counter[key]  # no entry left behind per closed connection


def _full(why: str) -> Refused:
    return Refused(grpc.StatusCode.RESOURCE_EXHAUSTED, f"streams: {why}; close a stream or try again later "
                                                       f"(unary calls are not limited by this)")
