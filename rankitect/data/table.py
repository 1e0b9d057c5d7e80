"""Import any CSV/TSV or parquet table whose columns the user names.

- label: 0/1 (text, integer, float or boolean).
- dense: floats; missing (null, empty, NaN) -> 0.0, stored as they are; the clip and scale the
  model applies are chosen from the column's statistics (rankitect.data.dense_stats).
- sparse: one id per row from a string or integer value (rankitect.data.hashing; missing -> 0).
- multi_sparse: a list of ids per row, from a parquet list column or, in CSV, text joined with
  `list_sep`; each element is hashed and empty elements are dropped.
- date_column: a timestamp (its date in its own time zone), a date, an ISO date or datetime
  string (the date as written), or epoch seconds (integer or float, UTC). With
  `date_unit="week"` rows go to the partition of their ISO week, named by its Monday.

The format is chosen by suffix: .csv / .txt (comma) and .tsv (tab), optionally .gz; .parquet
/ .pq. In errors about a parquet file, "line" is the 1-based row number.
"""

from __future__ import annotations

from collections.abc import Iterator, Sequence
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rankitect.data.csv_source import (
    LABEL_NOT_01,
    NOT_A_NUMBER,
    BlockProblems,
    CsvBlock,
    CsvLayout,
    Progress,
    check_import_options,
    day_number,
    finish_summary,
    is_text,
    iter_csv_blocks,
    parse_header,
    plain_array,
    read_first_line,
    require_columns,
    to_float,
    to_label,
    write_by_day,
)
from rankitect.data.hashing import hash_arrow_strings
from rankitect.data.summary import ImportSummary
from rankitect.data.writer import ColumnPlan, DatasetWriter
from rankitect.errors import ConfigError, DataError
from rankitect.schema import DenseColumn, SparseColumn

DATE_UNITS = ("day", "week")
DATE_MISSING = "date missing"
BAD_DATE = "bad date"
PARQUET_BATCH_ROWS = 65_536
CSV_SUFFIXES = {".csv": ",", ".txt": ",", ".tsv": "\t"}
PARQUET_SUFFIXES = (".parquet", ".pq")
_FIRST_DAY, _LAST_DAY = day_number("1000-01-01"), day_number("9999-12-31")
_ISO_RE = r"^\d{4}-\d{2}-\d{2}([T ]\d{2}:\d{2}(:\d{2}(\.\d+)?)?(Z|[+-]\d{2}(:?\d{2})?)?)?$"
_EPOCH_RE = r"^[+-]?\d+(\.\d*)?$"
_DATE_RULE = "date must be a date, an ISO date/datetime or epoch seconds (years 1000..9999)"


@dataclass(frozen=True)
class TableColumns:
    """Which input columns play which role."""

    label: str
    dense: tuple[str, ...]
    sparse: tuple[str, ...]
    multi_sparse: tuple[str, ...]
    date: str

    def roles(self) -> list[tuple[str, str]]:
        """(role, column) of every named column, label first."""
        return ([("label", self.label)] + [("dense", n) for n in self.dense]
                + [("sparse", n) for n in self.sparse]
                + [("multi_sparse", n) for n in self.multi_sparse] + [("date", self.date)])

    def check(self) -> None:
        """ConfigError for a column named twice or no feature column at all."""
        seen: dict[str, str] = {}
        for role, name in self.roles():
            if not isinstance(name, str) or not name:
                raise ConfigError(f"{role} column name must be a non-empty string, got {name!r}")
            if name in seen:
                raise ConfigError(f"column {name!r} is named both as {seen[name]} and as {role}")
            seen[name] = role
        if not (self.dense or self.sparse or self.multi_sparse):
            raise ConfigError("name at least one dense, sparse or multi_sparse column")


def table_plan(cols: TableColumns, hash_size: int, embedding_dim: int, list_sep: str,
               date_unit: str, source: str) -> ColumnPlan:
    """Output columns in the order label, dense, sparse, multi_sparse."""
    sparse = tuple(SparseColumn(name=n, hash_size=hash_size) for n in cols.sparse)
    sparse += tuple(SparseColumn(name=n, hash_size=hash_size, multi=True) for n in cols.multi_sparse)
    return ColumnPlan(
        label=cols.label,
        dense=tuple(DenseColumn(name=n, transform="none", fill=0.0, scale="auto") for n in cols.dense),
        sparse=sparse, embedding_dim=embedding_dim, source=source,
        preprocessing={
            "dense": "float; missing -> 0.0; stored as is; the model clips and scales each column as "
                     "its statistics say (schema.json: clip_min, clip_max, scale)",
            "sparse": "fnv1a64 of the value's text mod hash_size-1, +1; missing -> 0",
            "multi_sparse": f"list elements (CSV: split on {list_sep!r}) hashed like sparse; "
                            f"empty elements dropped",
            "date": f"{cols.date} -> {'ISO week, named by its Monday' if date_unit == 'week' else 'day'}",
            "hash_size": hash_size,
            "list_sep": list_sep,
        },
    )


def import_table(input: Path, out: Path, *, label: str, dense: list[str], sparse: list[str],
                 multi_sparse: list[str], list_sep: str = "|", date_column: str,
                 date_unit: str = "day", hash_size: int = 1_000_000, embedding_dim: int = 16,
                 on_bad_rows: str = "error", force: bool = False,
                 progress: Progress | None = None) -> ImportSummary:
    """Import a CSV/TSV or parquet file into the dataset `out` (see the module docstring).

    A named column missing from the input is a DataError naming it. Bad rows (wrong number of
    fields, text in a dense column, a label other than 0/1, an empty or invalid date) raise
    BadRowError unless `on_bad_rows="skip"`. Nothing is written unless the import succeeds.
    """
    check_import_options(hash_size, embedding_dim, on_bad_rows)
    if date_unit not in DATE_UNITS:
        raise ConfigError(f"date_unit must be one of {DATE_UNITS}, got {date_unit!r}")
    if not isinstance(list_sep, str) or not list_sep:
        raise ConfigError(f"list_sep must be a non-empty string, got {list_sep!r}")
    cols = TableColumns(label, tuple(dense), tuple(sparse), tuple(multi_sparse), date_column)
    cols.check()
    path = Path(input)
    source = _Source.open(path)
    for role, name in cols.roles():
        require_columns(source.names, [name], path, role)
    plan = table_plan(cols, hash_size, embedding_dim, list_sep, date_unit, f"table:{path.name}")
    summary = ImportSummary(out=str(out))
    with DatasetWriter(Path(out), plan, force=force) as writer:
        for block in source.blocks([name for _, name in cols.roles()]):
            table, days, keep = _convert(block, cols, source, hash_size, list_sep, on_bad_rows, summary)
            if date_unit == "week":
                days = iso_week_monday(days)
            if keep is not None:
                table, days = table.filter(pa.array(keep)), days[keep]
            write_by_day(writer, table, days)
            if progress is not None:
                progress(block.table.num_rows + len(block.bad_rows))
    return finish_summary(summary, writer.schema)


# -- input -------------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Source:
    """An input file: its column names and how to stream it in blocks."""

    path: Path
    names: tuple[str, ...]
    layout: CsvLayout | None  # None: parquet

    @staticmethod
    def open(path: Path) -> "_Source":
        if not path.is_file():
            raise DataError(f"input {str(path)!r} does not exist or is not a file")
        suffixes = [s.lower() for s in path.suffixes]
        if suffixes and suffixes[-1] == ".gz":
            suffixes = suffixes[:-1]
        suffix = suffixes[-1] if suffixes else ""
        if suffix in PARQUET_SUFFIXES:
            return _Source(path, tuple(_parquet_file(path).schema_arrow.names), None)
        if suffix in CSV_SUFFIXES:
            delimiter = CSV_SUFFIXES[suffix]
            names = parse_header(read_first_line(path), delimiter, path)
            return _Source(path, names, CsvLayout(path, delimiter, names, header_lines=1))
        raise DataError(f"{path}: cannot tell the format from the suffix {path.suffix!r}; use one "
                        f"of {', '.join([*CSV_SUFFIXES, *PARQUET_SUFFIXES])} (CSV/TSV may add .gz)")

    @property
    def note(self) -> str:
        return "" if self.layout is not None else " (line = 1-based row of the parquet file)"

    def blocks(self, columns: Sequence[str]) -> Iterator[CsvBlock]:
        """Blocks of rows with their 1-based lines (parquet: row numbers)."""
        if self.layout is not None:
            yield from iter_csv_blocks(self.layout)
            return
        first = 1
        try:
            for batch in _parquet_file(self.path).iter_batches(batch_size=PARQUET_BATCH_ROWS,
                                                                columns=list(columns)):
                yield CsvBlock(batch, np.arange(first, first + batch.num_rows, dtype=np.int64))
                first += batch.num_rows
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{self.path}: cannot read parquet near row {first}: {exc}") from None


def _parquet_file(path: Path) -> pq.ParquetFile:
    try:
        return pq.ParquetFile(path)
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: not a readable parquet file: {exc}") from None


# -- conversion ----------------------------------------------------------------------------------
def _convert(block: CsvBlock, cols: TableColumns, source: _Source, hash_size: int,
             list_sep: str, on_bad_rows: str,
             summary: ImportSummary) -> tuple[pa.Table, np.ndarray, np.ndarray | None]:
    """(output table, day numbers int64 [N], rows to keep or None) of one block."""
    batch = block.table
    problems = BlockProblems(batch.num_rows)
    raw = batch.column(cols.label)
    labels, bad = to_label(raw, cols.label)
    problems.add_values(bad, raw, cols.label, LABEL_NOT_01, "label must be 0 or 1")
    out: dict[str, pa.Array] = {cols.label: pa.array(labels, pa.int8())}
    for name in cols.dense:
        raw = batch.column(name)
        values, bad = to_float(raw, name)
        problems.add_values(bad, raw, name, NOT_A_NUMBER, "expected a number")
        out[name] = pa.array(np.where(np.isnan(values), 0.0, values), pa.float32())
    raw = batch.column(cols.date)
    days, missing, invalid = day_numbers(raw, cols.date)
    problems.add(missing, cols.date, DATE_MISSING, lambda i: "date is empty")
    problems.add_values(invalid, raw, cols.date, BAD_DATE, _DATE_RULE)
    for name in cols.sparse:
        out[name] = pa.array(sparse_ids(batch.column(name), name, hash_size), pa.int64())
    for name in cols.multi_sparse:
        out[name] = multi_sparse_ids(batch.column(name), name, list_sep, hash_size)
    keep = problems.settle(path=source.path, lines=block.lines, rejected=block.bad_rows,
                           on_bad_rows=on_bad_rows, summary=summary, note=source.note)
    return pa.table(out), days, keep


def sparse_ids(arr: pa.Array, column: str, hash_size: int) -> np.ndarray:
    """Ids (int64 [N]) of a text, integer, boolean or whole-number float column."""
    arr = plain_array(arr)
    if pa.types.is_floating(arr.type):
        arr = pc.if_else(pc.is_nan(arr), pa.scalar(None, arr.type), arr)
        try:
            arr = pc.cast(arr, pa.int64())
        except pa.ArrowInvalid:
            raise DataError(f"column {column!r} holds fractional numbers; a sparse column needs "
                            f"text or whole numbers") from None
    elif pa.types.is_boolean(arr.type):
        arr = pc.cast(arr, pa.string())
    if not (is_text(arr) or pa.types.is_integer(arr.type) or pa.types.is_binary(arr.type)):
        raise DataError(f"column {column!r} has type {arr.type}; a sparse column needs text or "
                        f"integers")
    if pa.types.is_string_view(arr.type):
        arr = pc.cast(arr, pa.large_string())
    return hash_arrow_strings(arr, hash_size)


def multi_sparse_ids(arr: pa.Array, column: str, list_sep: str, hash_size: int) -> pa.ListArray:
    """list<int64> [N]: each element's id, empty / null elements dropped; a null list -> []."""
    arr = plain_array(arr)
    if is_text(arr):
        lists = pc.split_pattern(arr, list_sep)
    elif (pa.types.is_list(arr.type) or pa.types.is_large_list(arr.type)
          or pa.types.is_fixed_size_list(arr.type)):
        lists = arr
    else:
        raise DataError(f"column {column!r} has type {arr.type}; a multi_sparse column needs a "
                        f"list or text joined with {list_sep!r}")
    ids = sparse_ids(pc.list_flatten(lists), column, hash_size)
    parents = pc.list_parent_indices(lists).to_numpy(zero_copy_only=False)
    kept = ids != 0
    counts = np.bincount(parents[kept], minlength=len(arr))
    offsets = np.concatenate([[0], np.cumsum(counts)]).astype(np.int32)
    return pa.ListArray.from_arrays(pa.array(offsets, pa.int32()), pa.array(ids[kept], pa.int64()))


# -- dates ---------------------------------------------------------------------------------------
def day_numbers(arr: pa.Array, column: str) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """(day numbers int64 [N] since 1970-01-01, missing bool [N], invalid bool [N])."""
    arr = plain_array(arr)
    t = arr.type
    if is_text(arr):
        days, missing, invalid = _text_days(arr)
    elif pa.types.is_timestamp(t):
        local = pc.local_timestamp(arr) if t.tz else arr
        days, missing, invalid = _date32_days(pc.cast(local, pa.date32()))
    elif pa.types.is_date(t):
        days, missing, invalid = _date32_days(pc.cast(arr, pa.date32()))
    elif pa.types.is_integer(t) or pa.types.is_floating(t):
        seconds = pc.fill_null(pc.cast(arr, pa.float64()), float("nan")).to_numpy(zero_copy_only=False)
        days, missing, invalid = _epoch_days(seconds)
    else:
        raise DataError(f"date column {column!r} has type {t}; expected a timestamp, a date, "
                        f"an ISO date string or epoch seconds")
    invalid |= ~missing & ~invalid & ((days < _FIRST_DAY) | (days > _LAST_DAY))
    return np.where(missing | invalid, 0, days).astype(np.int64), missing, invalid


def _date32_days(dates: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    missing = dates.is_null().to_numpy(zero_copy_only=False)
    days = pc.fill_null(pc.cast(dates, pa.int32()), 0).to_numpy(zero_copy_only=False)
    return days.astype(np.int64), missing, np.zeros(len(dates), bool)


def _epoch_days(seconds: np.ndarray) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Day numbers (UTC) of epoch seconds (float64 [N], NaN = missing)."""
    missing = np.isnan(seconds)
    day = np.floor(np.where(missing, 0.0, seconds) / 86_400.0)
    invalid = ~np.isfinite(day) | (day < _FIRST_DAY) | (day > _LAST_DAY)
    return np.where(invalid, 0, day).astype(np.int64), missing, invalid


def _text_days(text: pa.Array) -> tuple[np.ndarray, np.ndarray, np.ndarray]:
    """Day numbers of ISO date/datetime strings (the date as written) or epoch seconds."""
    text = pc.utf8_trim_whitespace(text)
    missing = pc.fill_null(pc.equal(pc.binary_length(text), 0), True).to_numpy(zero_copy_only=False)
    head = pc.utf8_slice_codeunits(text, 0, 10)
    stamp = pc.strptime(head, format="%Y-%m-%d", unit="s", error_is_null=True)
    iso = pc.and_(pc.fill_null(pc.match_substring_regex(text, _ISO_RE), False),
                  # strptime rolls impossible days over (Feb 30 -> Mar 1); the round trip catches it
                  pc.fill_null(pc.equal(pc.strftime(stamp, format="%Y-%m-%d"), head), False))
    iso = iso.to_numpy(zero_copy_only=False)
    iso_days = pc.fill_null(pc.cast(pc.cast(stamp, pa.date32()), pa.int32()), 0)
    epoch = pc.fill_null(pc.match_substring_regex(text, _EPOCH_RE), False)
    seconds = pc.cast(pc.if_else(epoch, text, pa.scalar(None, text.type)), pa.float64())
    epoch_days, _, epoch_invalid = _epoch_days(
        pc.fill_null(seconds, float("nan")).to_numpy(zero_copy_only=False))
    epoch = epoch.to_numpy(zero_copy_only=False)
    days = np.where(iso, iso_days.to_numpy(zero_copy_only=False), np.where(epoch, epoch_days, 0))
    invalid = ~missing & ~iso & ~(epoch & ~epoch_invalid)
    return days.astype(np.int64), missing, invalid


def iso_week_monday(days: np.ndarray) -> np.ndarray:
    """The Monday (day number) of each day's ISO week; 1970-01-01 was a Thursday."""
    return days - (days + 3) % 7

