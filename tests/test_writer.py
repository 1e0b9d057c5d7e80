"""The dataset writer: atomic publish, statistics, and never losing what was there."""

from __future__ import annotations

import numpy as np
import pyarrow as pa
import pytest

from rankitect.data.dataset import Dataset
from rankitect.data.writer import ColumnPlan, DatasetWriter
from rankitect.errors import DataError
from rankitect.schema import DenseColumn, SparseColumn

PLAN = ColumnPlan(label="y", dense=(DenseColumn("x"),),
                  sparse=(SparseColumn("c", hash_size=10), SparseColumn("l", hash_size=5, multi=True)))


def _table(n: int, seed: int = 0) -> pa.Table:
    rng = np.random.default_rng(seed)
    lists = [list(rng.integers(0, 5, size=rng.integers(0, 4))) for _ in range(n)]
    return pa.table({"y": rng.integers(0, 2, n).astype(np.int8), "x": rng.normal(3, 2, n).astype(np.float32),
                     "c": rng.integers(0, 10, n), "l": pa.array(lists, pa.list_(pa.int64()))})


def test_commit_writes_partitions_schema_and_statistics(tmp_path) -> None:
    a, b = _table(300, 1), _table(200, 2)
    with DatasetWriter(tmp_path / "ds", PLAN, row_group_rows=64) as w:
        w.write("2024-02-01", a)
        w.write("2024-02-02", b)
    ds = Dataset.open(str(tmp_path / "ds"))
    assert ds.dates == ["2024-02-01", "2024-02-02"]
    x = np.concatenate([a.column("x").to_numpy(), b.column("x").to_numpy()]).astype(np.float64)
    col = ds.schema.dense[0]
    assert col.mean == pytest.approx(x.mean(), rel=1e-6) and col.std == pytest.approx(x.std(), rel=1e-5)
    lengths = [len(v) for v in a.column("l").to_pylist() + b.column("l").to_pylist()]
    assert ds.schema.sparse[1].avg_len == pytest.approx(np.mean(lengths))
    assert ds.schema.dates["2024-02-01"].positives == int(a.column("y").to_numpy().sum())
    assert [p.name for p in tmp_path.iterdir()] == ["ds"]


def test_failure_leaves_nothing_not_even_new_parent_folders(tmp_path) -> None:
    target = tmp_path / "new" / "deeper" / "ds"
    with pytest.raises(RuntimeError):
        with DatasetWriter(target, PLAN) as w:
            w.write("2024-02-01", _table(10))
            raise RuntimeError("importer failed")
    assert list(tmp_path.iterdir()) == []


def test_existing_dataset_needs_force_and_a_non_dataset_is_never_replaced(tmp_path) -> None:
    with DatasetWriter(tmp_path / "ds", PLAN) as w:
        w.write("2024-02-01", _table(10))
    before = (tmp_path / "ds" / "schema.json").read_text()
    with pytest.raises(DataError, match="already exists; pass --force"):
        DatasetWriter(tmp_path / "ds", PLAN)
    assert (tmp_path / "ds" / "schema.json").read_text() == before
    with DatasetWriter(tmp_path / "ds", PLAN, force=True) as w:
        w.write("2024-03-01", _table(10))
    assert Dataset.open(str(tmp_path / "ds")).dates == ["2024-03-01"]
    (tmp_path / "home").mkdir()
    (tmp_path / "home" / "thesis.tex").write_text("years of work")
    with pytest.raises(DataError, match="not a Rankitect dataset"):
        DatasetWriter(tmp_path / "home", PLAN, force=True)
    assert (tmp_path / "home" / "thesis.tex").read_text() == "years of work"


def test_no_rows_and_bad_dates_are_errors(tmp_path) -> None:
    with pytest.raises(DataError, match="no rows"):
        with DatasetWriter(tmp_path / "ds", PLAN):
            pass
    with pytest.raises(DataError, match="not a YYYY-MM-DD"):
        with DatasetWriter(tmp_path / "ds", PLAN) as w:
            w.write("24-1-1", _table(3))
    assert list(tmp_path.iterdir()) == []
