"""How many rows each sparse column's embedding table gets.

A column's ids are in `[0, hash_size)` (0: missing), `hash_size` being the import's cap. A
table of `rows` < hash_size rows takes id `i` to row `0 if i == 0 else 1 + (i - 1) % (rows - 1)`
(rankitect.blocks.embedding.IdRemap): hashing's rule applied once more, so the serving loader
keeps its one rule (rankitect.data.hashing) and the model holds the rest.

By default (`rows: auto`) a column the import counted gets ROWS_PER_ID x (distinct + 1) rows,
and a small column up to MAX_ROWS_PER_ID x (distinct + 1) as long as that stays within
SMALL_TABLE_ROWS, always capped at its hash_size. With n ids hashed into R rows about n^2 / 2R
pairs of ids share a row: in a large column these are mostly rare ids, which costs nothing
measurable at 4x (benchmarks/bench_tables.py (f): NE against the multiplier on the Criteo
profile and adult); in a small column any pair may be two of its few frequent values, so it gets
up to 64x (2 ids: a 0.5% chance of sharing a row, against 9% at 4x), which costs at most
SMALL_TABLE_ROWS rows. A column not counted (a dataset written before counting) keeps
hash_size rows, as it had.

An architecture's `embedding.rows` is "auto", one number for every column, or a mapping
{column: rows} (columns left out: auto); a number above a column's hash_size gives hash_size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rankitect.schema import Schema, SparseColumn

ROWS_PER_ID = 4
MAX_ROWS_PER_ID = 64
SMALL_TABLE_ROWS = 1 << 16  # 4 MB a table at E=16
MIN_ROWS = 2  # row 0 for "missing" and at least one for ids
AUTO = "auto"


def default_rows(col: SparseColumn) -> int:
    """Rows of `col`'s table when nothing else is asked for."""
    if col.distinct is None:
        return col.hash_size
    ids = col.distinct + 1
    rows = max(ROWS_PER_ID * ids, min(MAX_ROWS_PER_ID * ids, SMALL_TABLE_ROWS))
    return max(MIN_ROWS, min(col.hash_size, rows))


def table_rows(schema: Schema, rows: Any = AUTO) -> tuple[int, ...]:
    """Rows of every sparse column's table, in schema order, for an `embedding.rows` value
    already checked by `check_rows` (so column names are known and numbers >= MIN_ROWS)."""
    out = []
    for col in schema.sparse:
        asked = rows.get(col.name, AUTO) if isinstance(rows, Mapping) else rows
        out.append(default_rows(col) if asked == AUTO else min(int(asked), col.hash_size))
    return tuple(out)


def check_rows(rows: Any, schema: Schema) -> list[str]:
    """Problems of an `embedding.rows` value against `schema` (column names), as messages."""
    if not isinstance(rows, Mapping):
        return []
    known = schema.sparse_names
    return [f"names no sparse column: {name!r} (columns: {known})" for name in rows if name not in known]
