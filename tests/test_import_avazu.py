"""Avazu importer on the real sample rows: dates from `hour`, hour_of_day, ids, bad rows."""

from __future__ import annotations

import csv
from pathlib import Path

import pyarrow as pa
import pytest

from rankitect.data.avazu import HOUR_OF_DAY_HASH_SIZE, import_avazu
from rankitect.data.dataset import Dataset
from rankitect.data.hashing import hash_arrow_strings, id_of_text
from rankitect.errors import BadRowError, DataError
from tests.helpers import read_dates, write_csv

HASH = 5000


@pytest.fixture(scope="module")
def sample(shared_data: Path) -> tuple[Path, list[str], list[list[str]]]:
    """(path, header, rows) of avazu_sample.txt, read with the csv module."""
    path = shared_data / "avazu_sample.txt"
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    return path, header, rows








def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def test_sample_rows_dates_and_columns(sample, tmp_path):
    path, header, rows = sample
    summary = import_avazu(path, tmp_path / "out", hash_size=HASH)
    assert summary.rows == 100 and summary.dates == {"2014-10-21": 100}
    ds = Dataset.open(str(tmp_path / "out"))
    categorical = [n for n in header if n not in ("id", "click", "hour")]
    assert len(categorical) == 21
    assert ds.schema.label == "click" and ds.schema.dense == ()
    assert ds.schema.sparse_names == categorical + ["hour_of_day"]
    assert ds.schema.dates["2014-10-21"].positives == sum(r[1] == "1" for r in rows)
    table = read_dates(tmp_path / "out")["2014-10-21"]
    assert table.column_names == ["click"] + categorical + ["hour_of_day"]
    assert table.column("click").to_pylist() == [int(r[1]) for r in rows]


def test_sample_ids_match_reference_hash(sample, tmp_path):
    path, header, rows = sample
    import_avazu(path, tmp_path / "out", hash_size=HASH)
    table = read_dates(tmp_path / "out")["2014-10-21"]
    for name in ("site_id", "device_ip", "device_model", "C14", "C20", "banner_pos"):
        raw = [r[header.index(name)] for r in rows]
        assert table.column(name).to_pylist() == [id_of_text(v, HASH) for v in raw]
        assert table.column(name).to_pylist() == hash_arrow_strings(pa.array(raw), HASH).tolist()
    assert set(table.column("hour_of_day").to_pylist()) == {id_of_text("00", HOUR_OF_DAY_HASH_SIZE)}


def test_hours_of_several_days(sample, tmp_path):
    _, header, rows = sample
    hours = ["14102100"] * 30 + ["14102213"] * 30 + ["14123123"] * 40
    src = write_csv(tmp_path / "in.csv", header, [r[:2] + [h] + r[3:] for r, h in zip(rows, hours)])
    summary = import_avazu(src, tmp_path / "out", hash_size=HASH)
    assert summary.dates == {"2014-10-21": 30, "2014-10-22": 30, "2014-12-31": 40}
    tables = read_dates(tmp_path / "out")
    for date, hh, part in (("2014-10-21", "00", rows[:30]), ("2014-10-22", "13", rows[30:60]),
                           ("2014-12-31", "23", rows[60:])):
        assert tables[date].column("hour_of_day").to_pylist() == [id_of_text(hh, HOUR_OF_DAY_HASH_SIZE)] * len(part)
        assert tables[date].column("app_id").to_pylist() == [id_of_text(r[header.index("app_id")], HASH) for r in part]
    ids = {id_of_text(f"{h:02d}", HOUR_OF_DAY_HASH_SIZE) for h in range(24)}
    assert len(ids) == 24 and 0 not in ids


BAD_CASES = [  # (row index, column index, new value or None = drop a field, column, reason key)
    (4, 2, "1410210", "hour", "bad hour"),        # 7 digits
    (9, 2, "14023100", "hour", "bad hour"),       # Feb 31
    (11, 2, "14102124", "hour", "bad hour"),      # hour 24
    (20, 2, "", "hour", "bad hour"),              # empty
    (30, 2, "1410x100", "hour", "bad hour"),
    (40, 1, "2", "click", "label not 0/1"),
    (50, 23, None, "C21", "wrong number of fields"),
]


@pytest.mark.parametrize("index,col,value,column,kind", BAD_CASES)
def test_bad_row_names_line_and_column(sample, tmp_path, index, col, value, column, kind):
    _, header, rows = sample
    bad = [r[:] for r in rows]
    if value is None:
        del bad[index][col]
    else:
        bad[index][col] = value
    src = write_csv(tmp_path / "in.csv", header, bad)
    out = tmp_path / "out"
    with pytest.raises(BadRowError) as info:
        import_avazu(src, out)
    assert (info.value.line, info.value.column) == (index + 2, column)
    if value is not None:
        assert repr(value) in str(info.value)
    assert_nothing_written(tmp_path, out)
    summary = import_avazu(src, out, on_bad_rows="skip")
    assert summary.rows == 99 and summary.skipped_by_reason == {kind: 1}
    assert f"line {index + 2}, column {column!r}" in summary.first_skipped[0]


def test_missing_click_column(sample, tmp_path):
    _, header, rows = sample
    keep = [i for i, n in enumerate(header) if n != "click"]
    src = write_csv(tmp_path / "in.csv", [header[i] for i in keep], [[r[i] for i in keep] for r in rows])
    with pytest.raises(DataError, match="'click'"):
        import_avazu(src, tmp_path / "out")
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_existing_output_needs_force(sample, tmp_path):
    path, _, _ = sample
    out = tmp_path / "out"
    out.mkdir()
    (out / "mine.txt").write_text("keep me")
    with pytest.raises(DataError, match="force"):
        import_avazu(path, out)
    with pytest.raises(DataError, match="not a Rankitect dataset"):
        import_avazu(path, out, force=True)
    assert (out / "mine.txt").read_text() == "keep me"
