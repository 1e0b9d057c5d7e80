"""Import the Criteo display-advertising data into a date-partitioned dataset.

Two input forms, told apart by the first line of each file:
- released: tab-separated, no header, 40 fields `label, I1..I13, C1..C26`, one file per day
  (`day_0`, `day_1`, ... optionally gzipped `day_0.gz`);
- sample: comma-separated with a header naming the same 40 columns (the Kaggle sample).

Output columns are `label` (0/1), dense `I1..I13` = log1p(max(count, 0)) with missing -> 0, and
sparse `C1..C26` = ids of the hex strings (rankitect.data.hashing; missing -> 0).
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from pathlib import Path

import numpy as np
import pyarrow as pa

from rankitect.data.csv_source import (
    LABEL_NOT_01,
    NOT_A_NUMBER,
    BlockProblems,
    CsvBlock,
    CsvLayout,
    Progress,
    check_import_options,
    count_lines,
    day_number,
    finish_summary,
    iter_csv_blocks,
    parse_header,
    read_first_line,
    to_float,
    to_label,
    write_by_day,
)
from rankitect.data.hashing import hash_arrow_strings
from rankitect.data.summary import ImportSummary
from rankitect.data.writer import ColumnPlan, DatasetWriter, check_date
from rankitect.errors import ConfigError, DataError
from rankitect.schema import DenseColumn, SparseColumn

SOURCE = "criteo"
LABEL = "label"
DENSE = tuple(f"I{i}" for i in range(1, 14))
SPARSE = tuple(f"C{i}" for i in range(1, 27))
COLUMNS = (LABEL, *DENSE, *SPARSE)
_DAY_FILE = re.compile(r"day_(\d+)(\.gz)?")


@dataclass(frozen=True)
class _Part:
    """One input file: its rows go to `days` consecutive dates from day number `first_day`."""

    layout: CsvLayout
    first_day: int
    days: int = 1
    data_lines: int = 0  # lines after the header; needed only when days > 1


def criteo_plan(hash_size: int, embedding_dim: int) -> ColumnPlan:
    """The output columns and the preprocessing recorded in schema.json."""
    return ColumnPlan(
        label=LABEL,
        dense=tuple(DenseColumn(name=n, transform="log1p", fill=0.0, scale="auto") for n in DENSE),
        sparse=tuple(SparseColumn(name=n, hash_size=hash_size) for n in SPARSE),
        embedding_dim=embedding_dim,
        source=SOURCE,
        preprocessing={
            "dense": "missing->0, clamp >= 0, log1p",
            "sparse": "fnv1a64 of the hex string mod hash_size-1, +1; missing -> 0",
            "hash_size": hash_size,
        },
    )


def import_criteo(inputs: Path, out: Path, *, hash_size: int = 1_000_000, days: int | None = None,
                  start_date: str = "2014-01-01", embedding_dim: int = 16,
                  on_bad_rows: str = "error", force: bool = False,
                  progress: Progress | None = None) -> ImportSummary:
    """Import a Criteo file or a folder of `day_K[.gz]` files into the dataset `out`.

    A folder: file `day_K` becomes date `start_date + K days`. A file: all rows on
    `start_date`, or with `days=N` split by line position into N consecutive pseudo-days.
    `hash_size` caps the ids of every sparse column. Bad rows (wrong number of fields, text in
    a dense column, a label other than 0/1) raise BadRowError unless `on_bad_rows="skip"`.
    Nothing is written unless the whole import succeeds.
    """
    check_import_options(hash_size, embedding_dim, on_bad_rows)
    parts = _parts(Path(inputs), _start_day(start_date), days)
    summary = ImportSummary(out=str(out))
    with DatasetWriter(Path(out), criteo_plan(hash_size, embedding_dim), force=force) as writer:
        for part in parts:
            _import_part(writer, part, hash_size, on_bad_rows, summary, progress)
    return finish_summary(summary, writer.schema)


def _start_day(start_date: str) -> int:
    try:
        return day_number(check_date(start_date))
    except (TypeError, ValueError):
        raise ConfigError(f"start_date must be a YYYY-MM-DD date, got {start_date!r}") from None


def _parts(inputs: Path, start: int, days: int | None) -> list[_Part]:
    """The input files in date order, with their layouts."""
    if inputs.is_dir():
        if days is not None:
            raise ConfigError(f"days={days} splits a single file; {inputs} is a folder of day files")
        return [_Part(sniff_layout(path), start + k) for k, path in _day_files(inputs)]
    if not inputs.is_file():
        raise DataError(f"input {str(inputs)!r} does not exist")
    layout = sniff_layout(inputs)
    if days is None:
        return [_Part(layout, start)]
    if not isinstance(days, int) or days < 1:
        raise ConfigError(f"days must be an integer >= 1, got {days!r}")
    data_lines = count_lines(inputs) - layout.header_lines
    if days > data_lines:
        raise DataError(f"days={days} but {inputs} has only {data_lines} rows")
    return [_Part(layout, start, days, data_lines)]


def _day_files(folder: Path) -> list[tuple[int, Path]]:
    """(K, path) of the folder's `day_K` / `day_K.gz` files, K ascending."""
    found: dict[int, Path] = {}
    for path in folder.iterdir():
        match = _DAY_FILE.fullmatch(path.name)
        if not match or not path.is_file():
            continue
        k = int(match.group(1))
        if k in found:
            raise DataError(f"{folder}: day {k} is given twice ({found[k].name} and {path.name})")
        found[k] = path
    if not found:
        raise DataError(f"{folder}: no Criteo day files (day_0, day_1, ... or day_0.gz, ...)")
    return sorted(found.items())


def sniff_layout(path: Path) -> CsvLayout:
    """Released form (tabs, no header) or a delimited file whose header starts with 'label'."""
    first = read_first_line(path)
    delimiter = "\t" if "\t" in first else ","
    if first.split(delimiter, 1)[0].strip().strip('"') != LABEL:
        if delimiter == "\t":
            return CsvLayout(path, "\t", COLUMNS, header_lines=0, quoting=False)
        raise DataError(f"{path}, line 1: neither Criteo's released form (40 tab-separated fields) "
                        f"nor a header starting with 'label': {first[:80]!r}")
    names = parse_header(first, delimiter, path)
    missing = [n for n in COLUMNS if n not in names]
    if missing:
        raise DataError(f"{path}, line 1: the header lacks column {missing[0]!r}")
    extra = [n for n in names if n not in COLUMNS]
    if extra:
        raise DataError(f"{path}, line 1: column {extra[0]!r} is not a Criteo column "
                        f"(expected label, I1..I13, C1..C26)")
    return CsvLayout(path, delimiter, names, header_lines=1, quoting=delimiter != "\t")


def _import_part(writer: DatasetWriter, part: _Part, hash_size: int, on_bad_rows: str,
                 summary: ImportSummary, progress: Progress | None) -> None:
    for block in iter_csv_blocks(part.layout):
        table, keep = _convert(block, part.layout.path, hash_size, on_bad_rows, summary)
        days = _days_of(block.lines, part)
        if keep is not None:
            table, days = table.filter(pa.array(keep)), days[keep]
        write_by_day(writer, table, days)
        if progress is not None:
            progress(block.table.num_rows + len(block.bad_rows))


def _convert(block: CsvBlock, path: Path, hash_size: int, on_bad_rows: str,
             summary: ImportSummary) -> tuple[pa.Table, np.ndarray | None]:
    """The block's output table (all rows) and the rows to keep (None: all)."""
    batch = block.table
    problems = BlockProblems(batch.num_rows)
    raw_label = batch.column(LABEL)
    labels, bad = to_label(raw_label, LABEL)
    problems.add_values(bad, raw_label, LABEL, LABEL_NOT_01, "label must be 0 or 1")
    columns: dict[str, pa.Array] = {LABEL: pa.array(labels, pa.int8())}
    for name in DENSE:
        raw = batch.column(name)
        values, bad = to_float(raw, name)
        problems.add_values(bad, raw, name, NOT_A_NUMBER, "expected a count (a number)")
        columns[name] = pa.array(_log1p_counts(values), pa.float32())
    for name in SPARSE:
        columns[name] = pa.array(hash_arrow_strings(batch.column(name), hash_size), pa.int64())
    keep = problems.settle(path=path, lines=block.lines, rejected=block.bad_rows,
                           on_bad_rows=on_bad_rows, summary=summary)
    return pa.table(columns), keep


def _log1p_counts(values: np.ndarray) -> np.ndarray:
    """log1p(max(v, 0)) with NaN (missing) -> 0: float64 [N]."""
    filled = np.where(np.isnan(values), 0.0, values)
    return np.log1p(np.clip(filled, 0.0, None))


def _days_of(lines: np.ndarray, part: _Part) -> np.ndarray:
    """Day number (int64 [N]) of each row: its file's day, or its pseudo-day by line position."""
    if part.days == 1:
        return np.full(len(lines), part.first_day, np.int64)
    position = lines - part.layout.header_lines - 1
    k = np.clip(position * part.days // part.data_lines, 0, part.days - 1)
    return part.first_day + k.astype(np.int64)
