"""The streaming loader returns exactly the stored rows, shuffled reproducibly, as torch batches."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader, to_device
from rankitect.errors import DataError, SchemaMismatchError
from tests.helpers import tiny_synth


@pytest.fixture(scope="module")
def synth(tmp_path_factory):
    return tiny_synth(tmp_path_factory.mktemp("synth") / "ds", days=2, rows_per_day=1500)


def _stored(ds: Dataset) -> pa.Table:
    return pa.concat_tables(pq.read_table(f) for f in ds.files_of(ds.dates))


def _rows(batches, keys):
    """Per row: (label, dense tuple, tuple of id tuples) from loader batches."""
    rows = []
    for b in batches:
        per_key = {k: b.sparse[k] for k in keys}
        for i in range(len(b)):
            ids = tuple(tuple(per_key[k].values()[per_key[k].offsets()[i]:per_key[k].offsets()[i + 1]].tolist())
                        for k in keys)
            rows.append((float(b.labels[i]), tuple(b.dense[i].tolist()), ids))
    return rows


def _expected_rows(table: pa.Table, ds: Dataset):
    s = ds.schema
    cols = {n: table.column(n).to_pylist() for n in [s.label, *s.dense_names, *s.sparse_names]}
    rows = []
    for i in range(table.num_rows):
        ids = tuple(tuple(cols[c.name][i]) if c.multi else (cols[c.name][i],) for c in s.sparse)
        dense = tuple(float(np.float32(cols[n][i])) for n in s.dense_names)
        rows.append((float(cols[s.label][i]), dense, ids))
    return rows


def test_unshuffled_batches_are_the_stored_rows_in_order(synth) -> None:
    ds = Dataset.open(str(synth))
    loader = BatchLoader(ds, ds.dates, batch_size=256, shuffle=False, buffer_rows=700)
    batches = list(loader)
    assert len(batches) == len(loader) == -(-3000 // 256)
    assert _rows(batches, ds.schema.sparse_names) == _expected_rows(_stored(ds), ds)
    b = batches[0]
    assert b.dense.shape == (256, ds.schema.num_dense) and b.labels.shape == (256,)
    assert b.sparse.keys() == ds.schema.sparse_names


def test_shuffle_keeps_every_row_once_and_is_reproducible(synth) -> None:
    ds = Dataset.open(str(synth))
    loader = BatchLoader(ds, ds.dates, batch_size=100, shuffle=True, seed=7, buffer_rows=500)
    first = _rows(loader.epoch(0), ds.schema.sparse_names)
    again = _rows(BatchLoader(ds, ds.dates, 100, shuffle=True, seed=7, buffer_rows=500).epoch(0),
                  ds.schema.sparse_names)
    other_epoch = _rows(loader.epoch(1), ds.schema.sparse_names)
    expected = _expected_rows(_stored(ds), ds)
    assert first == again
    assert first != expected and first != other_epoch
    assert sorted(first) == sorted(expected) == sorted(other_epoch)


def test_batches_carry_their_ids_per_key(synth) -> None:
    """Each KJT comes with its ids per key (torchrec's lookup then reads no lengths back: on CUDA
    that read is a device sync per step), equal to what torchrec computes from the lengths."""
    ds = Dataset.open(str(synth))
    keys = ds.schema.sparse_names
    assert any(c.multi for c in ds.schema.sparse)
    for b in BatchLoader(ds, ds.dates, batch_size=300, shuffle=True, seed=3, buffer_rows=700):
        cached = b.sparse.length_per_key_or_none()
        fresh = KeyedJaggedTensor(keys=keys, values=b.sparse.values(), lengths=b.sparse.lengths(),
                                  stride=len(b)).length_per_key()
        assert cached == fresh


def test_to_device_passes_cpu_batches_through(synth) -> None:
    ds = Dataset.open(str(synth))
    batches = list(BatchLoader(ds, ds.dates[:1], batch_size=500))
    moved = list(to_device(iter(batches), torch.device("cpu")))
    assert [id(b) for b in moved] == [id(b) for b in batches]


def test_drop_last_and_date_selection(synth) -> None:
    ds = Dataset.open(str(synth))
    loader = BatchLoader(ds, ds.dates[:1], batch_size=400, drop_last=True, prefetch=0)
    sizes = [len(b) for b in loader]
    assert sizes == [400, 400, 400] and len(loader) == 3


def test_loader_argument_checks(synth) -> None:
    ds = Dataset.open(str(synth))
    with pytest.raises(ValueError, match="batch_size"):
        BatchLoader(ds, ds.dates, batch_size=0)
    with pytest.raises(ValueError, match="buffer_rows"):
        BatchLoader(ds, ds.dates, batch_size=100, buffer_rows=10)
    with pytest.raises(DataError, match="not in dataset"):
        BatchLoader(ds, ["1999-01-01"], batch_size=10)


def _copy(synth, tmp_path):
    import shutil

    dst = tmp_path / "copy"
    shutil.copytree(synth, dst)
    return dst


def _edit_schema(path, edit) -> None:
    raw = json.loads((path / "schema.json").read_text())
    edit(raw)
    (path / "schema.json").write_text(json.dumps(raw))


def test_ids_outside_hash_size_are_refused(synth, tmp_path) -> None:
    path = _copy(synth, tmp_path)
    _edit_schema(path, lambda raw: raw["sparse"][0].update(hash_size=5))
    ds = Dataset.open(str(path))
    with pytest.raises(DataError, match="column 'C1' holds id .* outside \\[0, 5\\)"):
        list(BatchLoader(ds, ds.dates, batch_size=100))


def test_schema_column_missing_from_files(synth, tmp_path) -> None:
    path = _copy(synth, tmp_path)
    _edit_schema(path, lambda raw: raw["dense"].append({"name": "I9", "mean": 0.0, "std": 1.0}))
    with pytest.raises(SchemaMismatchError, match="column 'I9' of schema.json is missing"):
        Dataset.open(str(path))


def test_file_column_missing_from_schema(synth, tmp_path) -> None:
    path = _copy(synth, tmp_path)
    _edit_schema(path, lambda raw: raw["dense"].pop())
    with pytest.raises(SchemaMismatchError, match="column 'I4' is in the file but not in schema.json"):
        Dataset.open(str(path))


def test_column_type_disagreement(synth, tmp_path) -> None:
    path = _copy(synth, tmp_path)

    def make_sparse(raw):
        col = raw["dense"].pop(0)
        raw["sparse"].append({"name": col["name"], "hash_size": 10})

    _edit_schema(path, make_sparse)
    with pytest.raises(SchemaMismatchError, match="column 'I1' is float"):
        Dataset.open(str(path))


def test_partitions_disagreeing_with_schema_dates(synth, tmp_path) -> None:
    path = _copy(synth, tmp_path)
    _edit_schema(path, lambda raw: raw["dates"].pop(sorted(raw["dates"])[0]))
    with pytest.raises(SchemaMismatchError, match="only on disk: \\['2024-01-01'\\]"):
        Dataset.open(str(path))


def test_not_a_dataset(tmp_path) -> None:
    with pytest.raises(DataError, match="does not exist"):
        Dataset.open(str(tmp_path / "nothing"))
    with pytest.raises(DataError, match="no schema.json"):
        Dataset.open(str(tmp_path))
    (tmp_path / "schema.json").write_text("{")
    with pytest.raises(DataError, match="not valid JSON"):
        Dataset.open(str(tmp_path))
