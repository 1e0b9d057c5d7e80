"""The serving loader turns raw rows into exactly what each importer stored: Criteo and Avazu sample
rows, a CSV and a parquet table with every kind of value (missing, whitespace, lists, numbers)."""

from __future__ import annotations

import csv
from pathlib import Path
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankitect.data import hashing
from rankitect.data.avazu import import_avazu
from rankitect.data.criteo import import_criteo
from rankitect.data.dataset import Dataset
from rankitect.data.table import import_table
from rankitect.export import serving
from rankitect.export.preprocessing import preprocessing_spec
from tests.helpers import read_dates, write_csv

HASH = 1000


def csv_records(path: Path) -> list[dict[str, str]]:
    with open(path, newline="") as handle:
        return list(csv.DictReader(handle))


def assert_featurize_matches(records: list[dict[str, Any]], dataset_dir: Path) -> None:
    """featurize(records) equals the dataset's one partition, column by column."""
    schema = Dataset.open(str(dataset_dir)).schema
    (table,) = read_dates(dataset_dir).values()
    dense, values, lengths = serving.featurize(records, preprocessing_spec(schema))
    n = len(records)
    assert table.num_rows == n
    for j, col in enumerate(schema.dense):
        got = np.array([row[j] for row in dense], np.float32)
        np.testing.assert_array_equal(got, table.column(col.name).to_numpy(), err_msg=col.name)
    start = 0
    for f, col in enumerate(schema.sparse):
        got = []
        for length in lengths[f * n:(f + 1) * n]:
            got.append(values[start:start + length])
            start += length
        stored = table.column(col.name).to_pylist()
        assert got == (stored if col.multi else [[v] for v in stored]), col.name
    assert start == len(values)


def test_hashing_reference_is_the_loaders() -> None:
    assert hashing.id_of_text is serving.id_of_text and hashing.fnv1a64_text is serving.fnv1a64_text
    texts = ["", "a", "68fd1e64", "é ü", " 7 ", "-1"]
    ids = hashing.hash_arrow_strings(pa.array(texts), HASH)
    assert list(ids) == [serving.id_of_text(t, HASH) for t in texts]


def test_criteo_sample_rows(shared_data: Path, tmp_path: Path) -> None:
    import_criteo(shared_data / "criteo_sample.txt", tmp_path / "ds", hash_size=HASH)
    assert_featurize_matches(csv_records(shared_data / "criteo_sample.txt"), tmp_path / "ds")


def test_avazu_sample_rows(shared_data: Path, tmp_path: Path) -> None:
    import_avazu(shared_data / "avazu_sample.txt", tmp_path / "ds", hash_size=HASH)
    assert_featurize_matches(csv_records(shared_data / "avazu_sample.txt"), tmp_path / "ds")


TABLE_ROWS = [  # y, price (dense), user, n (sparse), tags (multi, '|'), when
    ["1", "3", "alice", "12", "a|b||c", "2024-01-01"],
    ["0", "", "", "-3", "", "2024-01-01"],
    ["0", " 7 ", "é ü", "0", "x|", "2024-01-01"],
    ["1", "1e3", "  spaced ", "", "|", "2024-01-01"],
    ["0", "-2.5", "bob", "7", "a", "2024-01-01"],
    ["1", "nan", "alice", "12", "b|a|b", "2024-01-01"],
]


def test_csv_table_with_missing_values_whitespace_and_lists(tmp_path: Path) -> None:
    src = write_csv(tmp_path / "in.csv", ["y", "price", "user", "n", "tags", "when"], TABLE_ROWS)
    import_table(src, tmp_path / "ds", label="y", dense=["price"], sparse=["user", "n"],
                 multi_sparse=["tags"], list_sep="|", date_column="when", hash_size=HASH)
    assert_featurize_matches(csv_records(src), tmp_path / "ds")


def test_parquet_table_with_numbers_booleans_and_list_columns(tmp_path: Path) -> None:
    src = tmp_path / "in.parquet"
    pq.write_table(pa.table({
        "y": pa.array([1, 0, 0, 1], pa.int8()),
        "price": pa.array([1.5, None, float("nan"), -4.0]),
        "user": pa.array([12, None, -3, 0], pa.int64()),
        "whole": pa.array([5.0, float("nan"), None, -2.0]),
        "flag": pa.array([True, False, None, True]),
        "tags": pa.array([["a", None, "b"], None, [], ["", "c"]], pa.list_(pa.string())),
        "itags": pa.array([[1, 2], [3], None, [4, 4]], pa.list_(pa.int64())),
        "when": pa.array(["2024-01-01"] * 4),
    }), src)
    import_table(src, tmp_path / "ds", label="y", dense=["price"], sparse=["user", "whole", "flag"],
                 multi_sparse=["tags", "itags"], date_column="when", hash_size=HASH)
    assert_featurize_matches(pq.read_table(src).to_pylist(), tmp_path / "ds")


@pytest.mark.parametrize("row, message", [
    ({"price": "12abc"}, "column 'price': expected a number, got '12abc'"),
    ({"price": "inf"}, "column 'price': expected a finite number"),
    ({"user": 1.5}, "column 'user': a categorical value must be text or a whole number"),
    ({"tags": 7}, "column 'tags': expected a list of values"),
])
def test_bad_raw_values_name_the_column(row: dict[str, Any], message: str) -> None:
    spec = {"dense": [{"name": "price", "column": "price", "fill": 0.0, "transform": "none"}],
            "sparse": [{"name": n, "column": n, "hash_size": HASH, "hashing": "fnv1a64", "multi": n == "tags",
                        "list_sep": "|"} for n in ("user", "tags")]}
    good = {"price": 1.0, "user": "u", "tags": "a|b"}
    with pytest.raises(ValueError, match=message.replace("(", r"\(").replace(")", r"\)")):
        serving.featurize([{**good, **row}], spec)
    with pytest.raises(ValueError, match="row 1: no column 'user'"):
        serving.featurize([good, {"price": 1.0, "tags": None}], spec)
