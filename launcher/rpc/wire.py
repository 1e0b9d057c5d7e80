"""Replies already in protobuf wire form, for the calls clients poll (GetJob, ListJobs).

A servicer may return `Encoded(bytes)` instead of a message: the guard's response serializer
sends it as it is (launcher/rpc/guard.py). Building a ListJobsResponse copies every Job
message into it and serializes the copy again, per call; joining the stored bytes of
unchanged jobs does neither. The bytes are what the message's SerializeToString gives: a
repeated or singular message or string field is its tag, its length and its payload, and a
message is the concatenation of its fields.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Any


class Encoded(bytes):
    """A whole reply message, serialized."""


def _varint(value: int) -> bytes:
    out = bytearray()
    while value > 0x7F:
        out.append(value & 0x7F | 0x80)
        value >>= 7
    out.append(value)
    return bytes(out)


def length_delimited(field_number: int, payload: bytes) -> bytes:
    """Field `field_number` of a message holding `payload` (a serialized message, or UTF-8 text)."""
    return _varint(field_number << 3 | 2) + _varint(len(payload)) + payload


def passing_encoded(serializer: Callable[[Any], bytes] | None) -> Callable[[Any], bytes] | None:
    """`serializer`, except that an Encoded reply goes out as it is."""
    if serializer is None:
        return None

    def serialize(reply: Any) -> bytes:
        return bytes(reply) if isinstance(reply, Encoded) else serializer(reply)  # grpc takes exact bytes

    return serialize
