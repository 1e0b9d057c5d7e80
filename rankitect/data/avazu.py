"""Import the Avazu click data (CSV with a header) into a date-partitioned dataset.

Columns: `id` (dropped), `click` (the label, 0/1), `hour` (YYMMDDHH), then categorical columns
(C1, banner_pos, site_id, ..., C21). Each row goes to the partition of date 20YY-MM-DD; the
hour HH becomes the sparse column `hour_of_day` (id of the two-digit text "00".."23"); every
other column is categorical and hashed (rankitect.data.hashing). There are no dense columns.
"""

from __future__ import annotations

from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc

from rankitect.data.csv_source import (
    LABEL_NOT_01,
    BlockProblems,
    CsvBlock,
    CsvLayout,
    Progress,
    check_import_options,
    finish_summary,
    iter_csv_blocks,
    parse_header,
    read_first_line,
    require_columns,
    to_label,
    write_by_day,
)
from rankitect.data.hashing import hash_arrow_strings
from rankitect.data.summary import ImportSummary
from rankitect.data.writer import ColumnPlan, DatasetWriter
from rankitect.errors import DataError
from rankitect.schema import SparseColumn

SOURCE = "avazu"
LABEL = "click"
HOUR = "hour"
ID = "id"
HOUR_OF_DAY = "hour_of_day"
# The ids of "00".."23" do not collide at this size; a smaller hash_size caps it.
HOUR_OF_DAY_HASH_SIZE = 128
BAD_HOUR = "bad hour"
HOUR_PATTERN = r"\d{6}([01]\d|2[0-3])"  # YYMMDDHH; the date must also exist
HOUR_OF_DAY_SLICE = (6, 8)  # HH of YYMMDDHH


def avazu_plan(categorical: tuple[str, ...], hash_size: int, embedding_dim: int) -> ColumnPlan:
    """Label `click`, no dense columns, the categorical columns then `hour_of_day`."""
    sparse = tuple(SparseColumn(name=n, hash_size=hash_size) for n in categorical)
    sparse += (SparseColumn(name=HOUR_OF_DAY, hash_size=min(hash_size, HOUR_OF_DAY_HASH_SIZE)),)
    return ColumnPlan(
        label=LABEL, dense=(), sparse=sparse, embedding_dim=embedding_dim, source=SOURCE,
        preprocessing={
            "sparse": "fnv1a64 of the text as written mod hash_size-1, +1; missing -> 0",
            "hour_of_day": "fnv1a64 of HH ('00'..'23') from hour=YYMMDDHH",
            "date": "20YY-MM-DD from hour=YYMMDDHH",
            "dropped": [ID, HOUR],
            "hash_size": hash_size,
        },
    )


def import_avazu(input: Path, out: Path, *, hash_size: int = 1_000_000, embedding_dim: int = 16,
                 on_bad_rows: str = "error", force: bool = False,
                 progress: Progress | None = None) -> ImportSummary:
    """Import an Avazu CSV file (optionally gzipped) into the dataset `out`.

    Bad rows (wrong number of fields, a click other than 0/1, an hour that is not a YYMMDDHH
    date) raise BadRowError unless `on_bad_rows="skip"`. Nothing is written unless the whole
    import succeeds.
    """
    check_import_options(hash_size, embedding_dim, on_bad_rows)
    path = Path(input)
    layout = CsvLayout(path, ",", parse_header(read_first_line(path), ",", path), header_lines=1)
    require_columns(layout.names, [LABEL, HOUR], path)
    if HOUR_OF_DAY in layout.names:
        raise DataError(f"{path}, line 1: column {HOUR_OF_DAY!r} clashes with the column the "
                        f"importer derives from {HOUR!r}")
    categorical = tuple(n for n in layout.names if n not in (ID, LABEL, HOUR))
    plan = avazu_plan(categorical, hash_size, embedding_dim)
    summary = ImportSummary(out=str(out))
    with DatasetWriter(Path(out), plan, force=force) as writer:
        for block in iter_csv_blocks(layout):
            table, days, keep = _convert(block, plan, path, on_bad_rows, summary)
            if keep is not None:
                table, days = table.filter(pa.array(keep)), days[keep]
            write_by_day(writer, table, days)
            if progress is not None:
                progress(block.table.num_rows + len(block.bad_rows))
    return finish_summary(summary, writer.schema)


def parse_hours(hour: pa.Array) -> tuple[np.ndarray, pa.Array, np.ndarray]:
    """(day numbers int64 [N], HH text [N], bad bool [N]) of YYMMDDHH values.

    Bad: not exactly 8 digits, not a real date (e.g. Feb 30), or HH over 23.
    """
    text = pc.utf8_trim_whitespace(hour)
    well_formed = pc.fill_null(pc.match_substring_regex(text, f"^{HOUR_PATTERN}$"), False)
    ymd = pc.binary_join_element_wise("20", pc.utf8_slice_codeunits(text, 0, 6), "")
    stamp = pc.strptime(ymd, format="%Y%m%d", unit="s", error_is_null=True)
    # strptime rolls impossible days over (20140231 -> March 3); the round trip catches that
    real_date = pc.fill_null(pc.equal(pc.strftime(stamp, format="%Y%m%d"), ymd), False)
    ok = pc.and_(well_formed, real_date).to_numpy(zero_copy_only=False)
    days = pc.fill_null(pc.cast(pc.cast(stamp, pa.date32()), pa.int32()), 0)
    hh = pc.utf8_slice_codeunits(text, *HOUR_OF_DAY_SLICE)
    return days.to_numpy(zero_copy_only=False).astype(np.int64), hh, ~ok


def _convert(block: CsvBlock, plan: ColumnPlan, path: Path, on_bad_rows: str,
             summary: ImportSummary) -> tuple[pa.Table, np.ndarray, np.ndarray | None]:
    """(output table, day numbers int64 [N], rows to keep or None) of one block."""
    batch = block.table
    problems = BlockProblems(batch.num_rows)
    raw_label = batch.column(LABEL)
    labels, bad = to_label(raw_label, LABEL)
    problems.add_values(bad, raw_label, LABEL, LABEL_NOT_01, "click must be 0 or 1")
    raw_hour = batch.column(HOUR)
    days, hh, bad = parse_hours(raw_hour)
    problems.add_values(bad, raw_hour, HOUR, BAD_HOUR, "hour must be YYMMDDHH (a date and hour)")
    columns: dict[str, pa.Array] = {LABEL: pa.array(labels, pa.int8())}
    for col in plan.sparse:
        raw = hh if col.name == HOUR_OF_DAY else batch.column(col.name)
        columns[col.name] = pa.array(hash_arrow_strings(raw, col.hash_size), pa.int64())
    keep = problems.settle(path=path, lines=block.lines, rejected=block.bad_rows,
                           on_bad_rows=on_bad_rows, summary=summary)
    return pa.table(columns), days, keep
