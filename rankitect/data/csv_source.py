"""What every importer shares: streaming CSV/TSV reading with exact line numbers, string ->
number conversion that points at the first bad cell, and the bad-row policy.

Line numbers are 1-based physical lines of the (decompressed) input with the header counted.
Values never contain newlines (`newlines_in_values=False`), so each parsed row is one line;
rows with the wrong number of fields are reported by pyarrow's invalid-row handler (whose
`row.number` is the physical line when parsing is single-threaded) and every other row's line
is recovered from its position in the stream. Blank lines (every field empty) are ignored.

Conversions are vectorized (pyarrow.compute) and only fall back to a slower path to find the
cells that failed. A check records a boolean mask per column; `BlockProblems.settle` then
either raises `BadRowError` for the earliest bad row or skips and counts every bad row.
"""

from __future__ import annotations

import csv
import datetime as dt
from collections.abc import Callable, Iterator, Sequence
from contextlib import contextmanager
from dataclasses import dataclass, field
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.csv as pcsv

from rankitect.data.summary import ON_BAD_ROWS, ImportSummary
from rankitect.data.writer import DatasetWriter
from rankitect.errors import BadRowError, ConfigError, DataError
from rankitect.schema import Schema

Progress = Callable[[int], None]
"""Called with the number of input rows read after each block."""

GZIP_MAGIC = b"\x1f\x8b"
BLOCK_BYTES = 8 << 20  # ~50k Criteo rows per block
_EPOCH = dt.date(1970, 1, 1)
# A prefilter only: a cell it rejects is confirmed bad by Arrow's own parser (see _float_slow).
_NUMBER_RE = r"^[+-]?(\d+\.?\d*|\.\d+)([eE][+-]?\d+)?$|^[+-]?(?i:nan|inf|infinity)$"
WRONG_FIELD_COUNT = "wrong number of fields"
NOT_A_NUMBER = "not a number"
LABEL_NOT_01 = "label not 0/1"


# -- options shared by the importers ---------------------------------------------------------
def check_import_options(hash_size: int, embedding_dim: int, on_bad_rows: str) -> None:
    """ConfigError naming the option when one is out of range."""
    if not isinstance(hash_size, int) or hash_size < 2:
        raise ConfigError(f"hash_size must be an integer >= 2, got {hash_size!r}")
    if not isinstance(embedding_dim, int) or embedding_dim < 1:
        raise ConfigError(f"embedding_dim must be an integer >= 1, got {embedding_dim!r}")
    if on_bad_rows not in ON_BAD_ROWS:
        raise ConfigError(f"on_bad_rows must be one of {ON_BAD_ROWS}, got {on_bad_rows!r}")


# -- files -----------------------------------------------------------------------------------
def is_gzip(path: Path) -> bool:
    """True for a `.gz` name or a file that starts with the gzip magic bytes."""
    if path.suffix == ".gz":
        return True
    with open(path, "rb") as handle:
        return handle.read(2) == GZIP_MAGIC


def open_input(path: Path) -> pa.NativeFile:
    """A binary stream of the file's (decompressed) bytes; DataError if it cannot be opened."""
    path = Path(path)
    if not path.is_file():
        raise DataError(f"input {str(path)!r} does not exist or is not a file")
    raw = pa.OSFile(str(path), "rb")
    return pa.CompressedInputStream(raw, "gzip") if is_gzip(path) else raw


@contextmanager
def _reading(path: Path) -> Iterator[None]:
    """Turn a failure to read `path` (truncated gzip, I/O error) into a DataError naming it."""
    try:
        yield
    except (pa.ArrowInvalid, OSError) as exc:
        raise DataError(f"{path}: cannot be read: {exc}") from None


def read_first_line(path: Path, limit: int = 1 << 20) -> str:
    """The first line of `path` (decompressed, BOM and line ending removed); DataError if empty."""
    buf = b""
    with open_input(path) as stream, _reading(path):
        while b"\n" not in buf and len(buf) < limit:
            chunk = stream.read(64 << 10)
            if not chunk:
                break
            buf += chunk
    if not buf.strip():
        raise DataError(f"input {str(path)!r} is empty")
    line = buf.split(b"\n", 1)[0].rstrip(b"\r")
    try:
        return line.decode("utf-8-sig")
    except UnicodeDecodeError as exc:
        raise DataError(f"{path}, line 1: not UTF-8 text ({exc})") from None


def parse_header(line: str, delimiter: str, path: Path) -> tuple[str, ...]:
    """Column names of a header line (quotes removed); DataError on empty or repeated names."""
    names = tuple(n.strip() for n in next(csv.reader([line], delimiter=delimiter)))
    for i, name in enumerate(names):
        if not name:
            raise DataError(f"{path}, line 1: header field {i + 1} is empty")
        if name in names[:i]:
            raise DataError(f"{path}, line 1: column {name!r} appears twice in the header")
    return names


def count_lines(path: Path) -> int:
    """Number of lines of the (decompressed) file; a last line without a newline counts."""
    count, last = 0, b"\n"
    with open_input(path) as stream, _reading(path):
        while chunk := stream.read(8 << 20):
            count += chunk.count(b"\n")
            last = chunk[-1:]
    return count + (last != b"\n")


def require_columns(available: Sequence[str], wanted: Sequence[str], path: Path, role: str = "") -> None:
    """DataError naming the first of `wanted` that the input lacks."""
    have = set(available)
    for name in wanted:
        if name not in have:
            what = f"{role} column" if role else "column"
            raise DataError(f"{path}: {what} {name!r} is not in the input (it has: "
                            f"{', '.join(available[:50])}{', ...' if len(available) > 50 else ''})")


# -- streaming CSV -----------------------------------------------------------------------------
@dataclass(frozen=True)
class CsvLayout:
    """How to read one CSV/TSV file: field separator, column names, and header lines to skip."""

    path: Path
    delimiter: str
    names: tuple[str, ...]
    header_lines: int = 1
    quoting: bool = True


@dataclass(frozen=True)
class BadRow:
    """A row rejected before conversion (e.g. wrong number of fields)."""

    line: int
    column: str
    kind: str
    reason: str


@dataclass
class CsvBlock:
    """Rows of one block: `table` (every column a string, N rows) and `lines` (int64 [N]).

    `bad_rows` holds the rows with the wrong number of fields whose lines come before the end
    of this block (and, in the final block of a file, all the rest); they are not in `table`.
    """

    table: pa.RecordBatch
    lines: np.ndarray
    bad_rows: list[BadRow] = field(default_factory=list)


class _LineTracker:
    """Recovers the physical line of each parsed row from the lines the parser rejected."""

    def __init__(self, layout: CsvLayout) -> None:
        self.names = layout.names
        self.next_line = layout.header_lines + 1
        self.rejected: list[BadRow] = []

    def on_invalid(self, row: pcsv.InvalidRow) -> str:
        expected, actual = row.expected_columns, row.actual_columns
        column = self.names[actual] if actual < expected else f"(field {expected + 1})"
        self.rejected.append(BadRow(row.number, column, WRONG_FIELD_COUNT,
                                    f"expected {expected} fields, found {actual}"))
        return "skip"

    def lines_of(self, n: int) -> np.ndarray:
        """Lines (int64 [n]) of the next `n` parsed rows: the next lines not rejected."""
        rejected = np.array(sorted(r.line for r in self.rejected if r.line >= self.next_line), np.int64)
        # rejected[j] - next_line - j = how many good rows come before the j-th rejected line
        good_before = rejected - self.next_line - np.arange(len(rejected))
        index = np.arange(n)
        lines = self.next_line + index + np.searchsorted(good_before, index, side="right")
        if n:
            self.next_line = int(lines[-1]) + 1
        return lines

    def take_rejected(self, before: int | None) -> list[BadRow]:
        """Rejected rows with line < `before` (all with None), removed from the tracker."""
        taken = [r for r in self.rejected if before is None or r.line < before]
        self.rejected = [r for r in self.rejected if before is not None and r.line >= before]
        return sorted(taken, key=lambda r: r.line)


def iter_csv_blocks(layout: CsvLayout, block_bytes: int = BLOCK_BYTES) -> Iterator[CsvBlock]:
    """Stream `layout.path` in blocks of about `block_bytes`; every column is read as a string."""
    tracker = _LineTracker(layout)
    read_opts = pcsv.ReadOptions(use_threads=False, block_size=block_bytes,
                                 column_names=list(layout.names), skip_rows=layout.header_lines)
    parse_opts = pcsv.ParseOptions(delimiter=layout.delimiter,
                                   quote_char='"' if layout.quoting else False,
                                   newlines_in_values=False, ignore_empty_lines=False,
                                   invalid_row_handler=tracker.on_invalid)
    convert_opts = pcsv.ConvertOptions(column_types={n: pa.string() for n in layout.names},
                                       strings_can_be_null=False, quoted_strings_can_be_null=False)
    with open_input(layout.path) as stream:
        try:
            reader = pcsv.open_csv(stream, read_options=read_opts, parse_options=parse_opts,
                                   convert_options=convert_opts)
            for batch in reader:
                lines = tracker.lines_of(batch.num_rows)
                bad = tracker.take_rejected(tracker.next_line)
                batch, lines = _drop_blank(batch, lines)
                yield CsvBlock(batch, lines, bad)
        except (pa.ArrowInvalid, OSError) as exc:
            raise DataError(f"{layout.path}: cannot be read as "
                            f"{'TSV' if layout.delimiter == chr(9) else 'CSV'}: {exc}") from None
    rest = tracker.take_rejected(None)
    if rest:
        empty = pa.RecordBatch.from_pydict({n: pa.array([], pa.string()) for n in layout.names})
        yield CsvBlock(empty, np.zeros(0, np.int64), rest)


def _drop_blank(batch: pa.RecordBatch, lines: np.ndarray) -> tuple[pa.RecordBatch, np.ndarray]:
    """Without the rows whose every field is empty (blank lines)."""
    if batch.num_rows == 0:
        return batch, lines
    blank = pc.equal(pc.binary_length(batch.column(0)), 0)
    if not pc.any(blank).as_py():
        return batch, lines
    for col in batch.columns[1:]:
        blank = pc.and_(blank, pc.equal(pc.binary_length(col), 0))
    keep = pc.invert(blank)
    return batch.filter(keep), lines[keep.to_numpy(zero_copy_only=False)]


# -- conversions -------------------------------------------------------------------------------
def value_at(arr: pa.Array, i: int) -> object:
    """The raw value of row `i` (for error messages)."""
    return arr[int(i)].as_py()


def plain_array(arr: pa.Array | pa.ChunkedArray) -> pa.Array:
    """One contiguous array, dictionary-encoded values decoded."""
    if isinstance(arr, pa.ChunkedArray):
        arr = arr.combine_chunks()
    if pa.types.is_dictionary(arr.type):
        arr = arr.dictionary_decode()
    return arr


def is_text(arr: pa.Array) -> bool:
    """True for (large / view) string arrays."""
    t = arr.type
    return pa.types.is_string(t) or pa.types.is_large_string(t) or pa.types.is_string_view(t)


def to_float(arr: pa.Array, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(values float64 [N], bad bool [N]) of a text or numeric column.

    Missing (null, empty, "nan") -> NaN, for the caller to fill. Bad: text Arrow cannot parse
    as a number, or an infinite value. Surrounding whitespace is ignored.
    """
    arr = plain_array(arr)
    if pa.types.is_integer(arr.type) or pa.types.is_floating(arr.type) or pa.types.is_boolean(arr.type):
        values = _float_numpy(pc.cast(arr, pa.float64()))
        return values, np.isinf(values)
    if not is_text(arr):
        raise DataError(f"column {column!r} has type {arr.type}; expected numbers or text")
    text = pc.utf8_trim_whitespace(arr)
    text = pc.if_else(pc.equal(text, ""), pa.scalar(None, text.type), text)
    try:
        values = _float_numpy(pc.cast(text, pa.float64()))
        bad = np.zeros(len(values), bool)
    except pa.ArrowInvalid:
        values, bad = _float_slow(text)
    return values, bad | np.isinf(values)


def _float_numpy(arr: pa.Array) -> np.ndarray:
    return pc.fill_null(arr, float("nan")).to_numpy(zero_copy_only=False).astype(np.float64, copy=False)


def _float_slow(text: pa.Array) -> tuple[np.ndarray, np.ndarray]:
    """Per-cell result when the vectorized cast failed: Arrow's parser decides every cell."""
    looks = pc.fill_null(pc.match_substring_regex(text, _NUMBER_RE), True).to_numpy(zero_copy_only=False)
    bad = np.zeros(len(text), bool)
    for i in np.nonzero(~looks)[0]:
        bad[i] = not _parses(text[int(i)])
    try:
        values = pc.cast(pc.if_else(pa.array(bad), pa.scalar(None, text.type), text), pa.float64())
    except pa.ArrowInvalid:  # the prefilter let through something Arrow rejects: check each cell
        for i in np.nonzero(~bad)[0]:
            bad[i] = not _parses(text[int(i)])
        values = pc.cast(pc.if_else(pa.array(bad), pa.scalar(None, text.type), text), pa.float64())
    return _float_numpy(values), bad


def _parses(cell: pa.Scalar) -> bool:
    if not cell.is_valid:
        return True
    try:
        pc.cast(cell, pa.float64())
    except pa.ArrowInvalid:
        return False
    return True


def to_label(arr: pa.Array, column: str) -> tuple[np.ndarray, np.ndarray]:
    """(labels int8 [N], bad bool [N]): a label must be 0 or 1 ("0", "1", "1.0", true, ...)."""
    arr = plain_array(arr)
    if is_text(arr):
        ones = pc.fill_null(pc.equal(arr, "1"), False)
        zeros = pc.fill_null(pc.equal(arr, "0"), False)
        if pc.all(pc.or_(ones, zeros)).as_py() is not False:
            return ones.to_numpy(zero_copy_only=False).astype(np.int8), np.zeros(len(arr), bool)
    values, _ = to_float(arr, column)
    bad = ~((values == 0) | (values == 1))
    return (values == 1).astype(np.int8), bad


# -- bad rows ----------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Check:
    bad: np.ndarray
    column: str
    kind: str
    describe: Callable[[int], str]


class BlockProblems:
    """Bad cells of one block of N rows, in the order the importer checked them."""

    def __init__(self, num_rows: int) -> None:
        self.num_rows = num_rows
        self._checks: list[_Check] = []

    def add(self, bad: np.ndarray, column: str, kind: str, describe: Callable[[int], str]) -> None:
        """Record `bad` (bool [N]) for `column`; `describe(i)` says what is wrong with row i."""
        if bad.any():
            self._checks.append(_Check(bad, column, kind, describe))

    def add_values(self, bad: np.ndarray, arr: pa.Array, column: str, kind: str, what: str) -> None:
        """`add` with the message "<what>: got <value>"."""
        self.add(bad, column, kind, lambda i: f"{what}, got {value_at(arr, i)!r}")

    def settle(self, *, path: Path, lines: np.ndarray, rejected: Sequence[BadRow],
               on_bad_rows: str, summary: ImportSummary, note: str = "") -> np.ndarray | None:
        """Apply the bad-row policy; returns the rows to keep (bool [N]) or None for all.

        "error": raise BadRowError for the earliest bad row (by line), its reason followed by
        `note`. "skip": count every bad row (its first failed check) in `summary`.
        """
        bad_any = np.zeros(self.num_rows, bool)
        for check in self._checks:
            bad_any |= check.bad
        if on_bad_rows == "error":
            self._raise_first(path, lines, bad_any, rejected, note)
            return None
        events = [(r.line, r.column, r.kind) for r in rejected]
        for i in np.nonzero(bad_any)[0]:
            check = self._first_check(i)
            events.append((int(lines[i]), check.column, check.kind))
        for line, column, kind in sorted(events):
            summary.skip(f"{path}, line {line}, column {column!r}", kind)
        return ~bad_any if bad_any.any() else None

    def _first_check(self, i: int) -> _Check:
        return next(c for c in self._checks if c.bad[i])

    def _raise_first(self, path: Path, lines: np.ndarray, bad_any: np.ndarray,
                     rejected: Sequence[BadRow], note: str) -> None:
        first_rejected = min(rejected, key=lambda r: r.line, default=None)
        if bad_any.any():
            i = int(np.argmax(bad_any))
            if first_rejected is None or int(lines[i]) < first_rejected.line:
                check = self._first_check(i)
                raise BadRowError(str(path), int(lines[i]), check.column, check.describe(i) + note)
        if first_rejected is not None:
            r = first_rejected
            raise BadRowError(str(path), r.line, r.column, r.reason + note)


# -- writing -----------------------------------------------------------------------------------
def iso_day(day: int) -> str:
    """YYYY-MM-DD of a day number (days since 1970-01-01)."""
    return (_EPOCH + dt.timedelta(days=int(day))).isoformat()


def day_number(date: str) -> int:
    """Days since 1970-01-01 of a YYYY-MM-DD date."""
    return (dt.date.fromisoformat(date) - _EPOCH).days


def write_by_day(writer: DatasetWriter, table: pa.Table, days: np.ndarray) -> None:
    """Write each row of `table` to the partition of its day number (int64 [N])."""
    if table.num_rows == 0:
        return
    unique, inverse = np.unique(days, return_inverse=True)
    if len(unique) == 1:
        writer.write(iso_day(unique[0]), table)
        return
    for k, day in enumerate(unique):
        writer.write(iso_day(day), table.take(pa.array(np.nonzero(inverse == k)[0])))


def finish_summary(summary: ImportSummary, schema: Schema | None) -> ImportSummary:
    """Fill rows and per-date counts from the committed schema."""
    if schema is not None:
        summary.dates = {d: s.rows for d, s in sorted(schema.dates.items())}
        summary.rows = sum(summary.dates.values())
    return summary
