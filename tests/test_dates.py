"""Date selections."""

from __future__ import annotations

import pytest

from rankitect.data.dates import resolve_dates
from rankitect.errors import DataError

DATES = ["2024-01-01", "2024-01-02", "2024-01-03", "2024-01-05"]


@pytest.mark.parametrize(
    "spec, expected",
    [
        ("2024-01-02", ["2024-01-02"]),
        ("2024-01-02..2024-01-05", ["2024-01-02", "2024-01-03", "2024-01-05"]),
        ("first:2", ["2024-01-01", "2024-01-02"]),
        ("last:1", ["2024-01-05"]),
        ("first:1,last:1", ["2024-01-01", "2024-01-05"]),
        ("2024-01-01..2024-01-02, 2024-01-05", ["2024-01-01", "2024-01-02", "2024-01-05"]),
    ],
)
def test_forms(spec: str, expected: list[str]) -> None:
    assert resolve_dates(spec, DATES) == expected


@pytest.mark.parametrize(
    "spec, message",
    [
        ("2024-01-04", "not in the dataset"),
        ("first:9", "asks for 9 dates"),
        ("last:0", "positive integer"),
        ("first:x", "positive integer"),
        ("2024-01-03..2024-01-01", "ends before it starts"),
        ("2025-01-01..2025-02-01", "holds none"),
        ("first:1,", "empty item"),
    ],
)
def test_errors_name_the_field_and_value(spec: str, message: str) -> None:
    with pytest.raises(DataError, match=message) as err:
        resolve_dates(spec, DATES, field="--train-dates")
    assert str(err.value).startswith("--train-dates")
