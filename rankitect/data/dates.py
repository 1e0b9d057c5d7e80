"""Date selections: `2024-01-03`, `2024-01-01..2024-01-03`, `first:K`, `last:K`, comma lists."""

from __future__ import annotations

import datetime as dt
from collections.abc import Sequence

from rankitect.errors import DataError


def resolve_dates(spec: str, available: Sequence[str], field: str = "dates") -> list[str]:
    """The sorted dates of `available` that `spec` selects; DataError naming `field` otherwise."""
    avail = sorted(available)
    if not avail:
        raise DataError(f"{field}: the dataset has no dates")
    chosen: set[str] = set()
    for part in (p.strip() for p in spec.split(",")):
        if not part:
            raise DataError(f"{field}: empty item in {spec!r}")
        chosen.update(_resolve_one(part, avail, field))
    return sorted(chosen)


def _resolve_one(part: str, avail: list[str], field: str) -> list[str]:
    if part.startswith(("first:", "last:")):
        head, _, count = part.partition(":")
        if not count.isdigit() or int(count) < 1:
            raise DataError(f"{field}: {part!r}: K must be a positive integer")
        k = int(count)
        if k > len(avail):
            raise DataError(f"{field}: {part!r} asks for {k} dates; the dataset has "
                            f"{len(avail)} ({avail[0]}..{avail[-1]})")
        return avail[:k] if head == "first" else avail[-k:]
    if ".." in part:
        lo, _, hi = part.partition("..")
        _check_date(lo, part, field)
        _check_date(hi, part, field)
        if lo > hi:
            raise DataError(f"{field}: range {part!r} ends before it starts")
        picked = [d for d in avail if lo <= d <= hi]
        if not picked:
            raise DataError(f"{field}: range {part!r} holds none of the dataset's dates "
                            f"({avail[0]}..{avail[-1]})")
        return picked
    _check_date(part, part, field)
    if part not in avail:
        raise DataError(f"{field}: date {part!r} is not in the dataset "
                        f"({len(avail)} dates: {avail[0]}..{avail[-1]})")
    return [part]


def _check_date(value: str, part: str, field: str) -> None:
    """DataError naming `field` unless `value` is a calendar date YYYY-MM-DD (a dataset's dates are)."""
    try:
        dt.date.fromisoformat(value)
    except ValueError:
        where = f"date {value!r}" if value == part else f"{value!r} in {part!r}"
        raise DataError(f"{field}: {where} is not a date (YYYY-MM-DD; D1..D2; first:K; last:K)") from None
