"""Write a date-partitioned parquet dataset atomically, with schema.json and column statistics.

Layout: `OUT/date=YYYY-MM-DD/part-NNNNN.parquet` plus `OUT/schema.json`. Everything is written
into a hidden sibling folder first and renamed into place on success, so a failed import
leaves nothing behind, and an existing dataset is replaced only with `force`.
"""

from __future__ import annotations

import datetime as dt
import os
import shutil
from dataclasses import dataclass, replace
from pathlib import Path
from types import TracebackType
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq

from rankitect.data.dense_stats import RowSample, bucket_boundaries, choose_scaling
from rankitect.data.distinct import DistinctCounter
from rankitect.errors import DataError
from rankitect.schema import SCHEMA_FILE, DateStats, DenseColumn, Schema, SparseColumn

LABEL_TYPE = pa.int8()
DENSE_TYPE = pa.float32()
ID_TYPE = pa.int64()
LIST_TYPE = pa.list_(pa.int64())


@dataclass(frozen=True)
class ColumnPlan:
    """What an importer will write; statistics are filled in by the writer. A dense column of
    scale "auto" gets its clip, scale and statistics chosen from a sample of its values
    (rankitect.data.dense_stats); every dense column gets its bucket boundaries from it."""

    label: str
    dense: tuple[DenseColumn, ...]
    sparse: tuple[SparseColumn, ...]
    embedding_dim: int = 16
    source: str = ""
    preprocessing: dict[str, Any] | None = None

    def arrow_schema(self) -> pa.Schema:
        fields = [pa.field(self.label, LABEL_TYPE)]
        fields += [pa.field(c.name, DENSE_TYPE) for c in self.dense]
        fields += [pa.field(c.name, LIST_TYPE if c.multi else ID_TYPE) for c in self.sparse]
        return pa.schema(fields)


def check_date(value: str) -> str:
    """`value` if it is an ISO date YYYY-MM-DD, else ValueError."""
    dt.date.fromisoformat(value)
    if len(value) != 10:
        raise ValueError(f"not a YYYY-MM-DD date: {value!r}")
    return value


def prepare_output(out: Path, force: bool) -> None:
    """Refuse to touch an existing `out` unless `force`, and never replace a non-dataset."""
    if not out.exists():
        return
    if not force:
        raise DataError(f"{out} already exists; pass --force to replace it")
    if out.is_dir() and any(out.iterdir()) and not (out / SCHEMA_FILE).is_file():
        raise DataError(f"{out} exists and is not a Rankitect dataset (no {SCHEMA_FILE}); "
                        f"refusing to replace it even with --force")


class DatasetWriter:
    """Collects rows per date and writes them; `commit` (or leaving the `with`) publishes.

    Rows are buffered per date up to `row_group_rows` and written as row groups; a date's
    file rolls over after `rows_per_file` rows. Not thread-safe.
    """

    def __init__(self, out: Path, plan: ColumnPlan, force: bool = False,
                 rows_per_file: int = 1_000_000, row_group_rows: int = 65_536) -> None:
        self.out = Path(out)
        prepare_output(self.out, force)
        self.plan = plan
        self.arrow_schema = plan.arrow_schema()
        self.rows_per_file = rows_per_file
        self.row_group_rows = row_group_rows
        self.tmp = self.out.parent / f".{self.out.name}.tmp-{os.getpid()}-{id(self):x}"
        self._made_parents = [p for p in reversed(self.out.parents) if not p.exists()]
        self.tmp.mkdir(parents=True)
        self._pending: dict[str, list[pa.Table]] = {}
        self._pending_rows: dict[str, int] = {}
        self._writers: dict[str, tuple[pq.ParquetWriter, int, int]] = {}  # date -> (w, file#, rows)
        self._date_rows: dict[str, int] = {}
        self._date_pos: dict[str, int] = {}
        n_dense = len(plan.dense)
        self._dense_sum = np.zeros(n_dense, np.float64)
        self._dense_sumsq = np.zeros(n_dense, np.float64)
        self._dense_sample = RowSample(n_dense)
        self._list_ids = {c.name: 0 for c in plan.sparse if c.multi}
        self._distinct = {c.name: DistinctCounter() for c in plan.sparse}
        self.schema: Schema | None = None

    # -- writing -------------------------------------------------------------------------
    def write(self, date: str, table: pa.Table) -> None:
        """Append rows of one date; `table` must have exactly the plan's columns and types."""
        if table.num_rows == 0:
            return
        try:
            check_date(date)
        except ValueError:
            raise DataError(f"date {date!r} is not a YYYY-MM-DD date") from None
        table = table.select(self.arrow_schema.names).cast(self.arrow_schema)
        self._accumulate_stats(date, table)
        self._pending.setdefault(date, []).append(table)
        self._pending_rows[date] = self._pending_rows.get(date, 0) + table.num_rows
        if self._pending_rows[date] >= self.row_group_rows:
            self._flush(date)

    def _accumulate_stats(self, date: str, table: pa.Table) -> None:
        labels = table.column(self.plan.label)
        self._date_rows[date] = self._date_rows.get(date, 0) + table.num_rows
        self._date_pos[date] = self._date_pos.get(date, 0) + int(pc.sum(labels).as_py() or 0)
        if self.plan.dense:
            block = np.stack([table.column(c.name).to_numpy().astype(np.float64) for c in self.plan.dense], 1)
            self._dense_sum += block.sum(0)
            self._dense_sumsq += np.square(block).sum(0)
            self._dense_sample.add(block)
        for name in self._list_ids:
            self._list_ids[name] += int(pc.sum(pc.list_value_length(table.column(name))).as_py() or 0)
        for col in self.plan.sparse:
            ids = table.column(col.name)
            if col.multi:
                ids = pc.list_flatten(ids)
            ids = ids.to_numpy()
            self._distinct[col.name].update(ids[ids > 0])  # 0 is "missing", not an id

    def _flush(self, date: str) -> None:
        parts = self._pending.pop(date, [])
        self._pending_rows.pop(date, None)
        if not parts:
            return
        table = pa.concat_tables(parts)
        while table.num_rows:
            writer, file_no, rows = self._writer_for(date)
            take = min(table.num_rows, self.rows_per_file - rows)
            writer.write_table(table.slice(0, take), row_group_size=self.row_group_rows)
            table = table.slice(take)
            self._writers[date] = (writer, file_no, rows + take)

    def _writer_for(self, date: str) -> tuple[pq.ParquetWriter, int, int]:
        entry = self._writers.get(date)
        if entry is not None and entry[2] < self.rows_per_file:
            return entry
        file_no = 0
        if entry is not None:
            entry[0].close()
            file_no = entry[1] + 1
        folder = self.tmp / f"date={date}"
        folder.mkdir(exist_ok=True)
        writer = pq.ParquetWriter(folder / f"part-{file_no:05d}.parquet", self.arrow_schema)
        return writer, file_no, 0

    # -- finishing -----------------------------------------------------------------------
    def commit(self) -> Schema:
        """Flush, write schema.json with statistics, and move the dataset into place."""
        for date in list(self._pending):
            self._flush(date)
        for writer, _, _ in self._writers.values():
            writer.close()
        self._writers.clear()
        total = sum(self._date_rows.values())
        if total == 0:
            self.abort()
            raise DataError("no rows were imported; nothing was written")
        self.schema = self._final_schema(total)
        self.schema.save(self.tmp)
        if self.out.exists():
            old = self.out.parent / f".{self.out.name}.old-{os.getpid()}"
            os.replace(self.out, old)
            os.replace(self.tmp, self.out)
            shutil.rmtree(old, ignore_errors=True)
        else:
            self.out.parent.mkdir(parents=True, exist_ok=True)
            os.replace(self.tmp, self.out)
        return self.schema

    def _final_schema(self, total: int) -> Schema:
        mean = self._dense_sum / total
        var = np.maximum(self._dense_sumsq / total - mean ** 2, 0.0)
        # A constant column keeps std 1 so normalization stays finite.
        std = np.where(var > 1e-12, np.sqrt(var), 1.0)
        dense = tuple(_dense_statistics(c, float(m), float(s), self._dense_sample.rows[:, j])
                      for j, (c, m, s) in enumerate(zip(self.plan.dense, mean, std)))
        sparse = tuple(replace(c, avg_len=(self._list_ids[c.name] / total) if c.multi else 1.0,
                               distinct=self._distinct[c.name].count())
                       for c in self.plan.sparse)
        dates = {d: DateStats(rows=self._date_rows[d], positives=self._date_pos[d])
                 for d in sorted(self._date_rows)}
        return Schema(label=self.plan.label, dense=dense, sparse=sparse,
                      embedding_dim=self.plan.embedding_dim, source=self.plan.source,
                      preprocessing=dict(self.plan.preprocessing or {}), dates=dates)

    def abort(self) -> None:
        for writer, _, _ in self._writers.values():
            try:
                writer.close()
            except Exception:  # noqa: BLE001 - best effort while cleaning up after a failure
                pass
        self._writers.clear()
        shutil.rmtree(self.tmp, ignore_errors=True)
        for parent in reversed(self._made_parents):  # folders this writer created, deepest first
            try:
                parent.rmdir()
            except OSError:
                break

    def __enter__(self) -> "DatasetWriter":
        return self

    def __exit__(self, exc_type: type[BaseException] | None, exc: BaseException | None,
                 tb: TracebackType | None) -> None:
        if exc_type is None:
            self.commit()
        else:
            self.abort()


def _dense_statistics(col: DenseColumn, mean: float, std: float, sample: np.ndarray) -> DenseColumn:
    """`col` with its statistics: the exact `mean` / `std` of its stored values and buckets from
    `sample`; with scale "auto", clip, scale, mean and std chosen from `sample` instead."""
    if col.scale != "auto":
        return replace(col, mean=mean, std=std, buckets=bucket_boundaries(sample))
    scaling = choose_scaling(sample)
    if scaling.scale == "linear" and scaling.clip_min is None:  # nothing changes the values: exact
        return replace(col, scale="linear", mean=mean, std=std, buckets=scaling.buckets)
    return replace(col, scale=scaling.scale, clip_min=scaling.clip_min, clip_max=scaling.clip_max,
                   mean=scaling.mean, std=scaling.std, buckets=scaling.buckets)
