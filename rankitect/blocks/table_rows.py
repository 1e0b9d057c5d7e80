"""How many rows each sparse column's embedding table gets.

A column's ids are in `[0, hash_size)` (0: missing), `hash_size` being the import's cap. A
table of `rows` < hash_size rows takes id `i` to row `0 if i == 0 else 1 + (i - 1) % (rows - 1)`
(rankitect.blocks.embedding.IdRemap): hashing's rule applied once more, so the serving loader
keeps its one rule (rankitect.data.hashing) and the model holds the rest.

By default (`rows: auto`) a column the import counted gets ROWS_PER_ID x (distinct + 1) rows,
capped at its hash_size: with n ids hashed into k(n + 1) rows, about 1 - exp(-1/k) of the ids
share a row with another id (k = 4: 22%, mostly rare ids sharing with rare ids).
benchmarks/bench_tables.py measures NE against k on real tables. A column not counted (a dataset
written before counting) keeps hash_size rows, as it had.

An architecture's `embedding.rows` is "auto", one number for every column, or a mapping
{column: rows} (columns left out: auto); a number above a column's hash_size gives hash_size.
"""

from __future__ import annotations

from collections.abc import Mapping
from typing import Any

from rankitect.schema import Schema, SparseColumn

ROWS_PER_ID = 4
MIN_ROWS = 2  # row 0 for "missing" and at least one for ids
AUTO = "auto"


def default_rows(col: SparseColumn) -> int:
    """Rows of `col`'s table when nothing else is asked for."""
    if col.distinct is None:
        return col.hash_size
    return max(MIN_ROWS, min(col.hash_size, ROWS_PER_ID * (col.distinct + 1)))


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
