"""Generic table importer: CSV built from real Avazu rows, parquet with list columns, every date
form, ISO weeks, bad rows with exact lines, missing columns, --force."""

from __future__ import annotations

import csv
import datetime as dt
from pathlib import Path

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from rankitect.data.dataset import Dataset
from rankitect.data.hashing import id_of_text
from rankitect.data.table import import_table
from rankitect.errors import BadRowError, ConfigError, DataError
from tests.helpers import read_dates, write_csv

HASH = 5000
HEADER = ["y", "price", "spend", "user", "app", "tags", "when", "unused"]
ROLES = dict(label="y", dense=["price", "spend"], sparse=["user", "app"], multi_sparse=["tags"],
             date_column="when")


# -- helpers -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def rows(shared_data: Path) -> list[list[str]]:
    """Rows in HEADER's layout made from the real Avazu sample (read with the csv module)."""
    with open(shared_data / "avazu_sample.txt", newline="") as handle:
        records = list(csv.DictReader(handle))
    out = []
    for i, r in enumerate(records):
        when = "2014-10-21" if i < 50 else "2014-10-22T13:00:00"
        tags = "|".join([r["site_category"], "" if i % 3 == 0 else r["app_category"], r["C1"]])
        out.append([r["click"], r["C15"], "" if i % 4 == 0 else r["C16"], r["device_ip"],
                    r["app_id"], tags, when, r["id"]])
    return out








def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def list_ids(text: str) -> list[int]:
    return [id_of_text(t, HASH) for t in text.split("|") if t]


# -- CSV -----------------------------------------------------------------------------------------
def test_csv_of_real_rows(rows, tmp_path):
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    summary = import_table(src, tmp_path / "out", hash_size=HASH, **ROLES)
    assert summary.dates == {"2014-10-21": 50, "2014-10-22": 50}
    ds = Dataset.open(str(tmp_path / "out"))
    assert ds.schema.label == "y" and ds.schema.dense_names == ["price", "spend"]
    assert ds.schema.sparse_names == ["user", "app", "tags"]
    assert [c.multi for c in ds.schema.sparse] == [False, False, True]
    assert all(c.transform == "none" and c.fill == 0.0 for c in ds.schema.dense)
    assert ds.schema.sparse[2].avg_len == pytest.approx(np.mean([len(list_ids(r[5])) for r in rows]))
    tables = read_dates(tmp_path / "out")
    for date, part in (("2014-10-21", rows[:50]), ("2014-10-22", rows[50:])):
        t = tables[date]
        assert t.column_names == ["y", "price", "spend", "user", "app", "tags"]
        assert ds.schema.dates[date].positives == sum(r[0] == "1" for r in part)
        assert t.column("user").to_pylist() == [id_of_text(r[3], HASH) for r in part]
        assert t.column("app").to_pylist() == [id_of_text(r[4], HASH) for r in part]
        assert t.column("tags").to_pylist() == [list_ids(r[5]) for r in part]
        np.testing.assert_allclose(t.column("price").to_numpy(), [float(r[1]) for r in part])
        np.testing.assert_allclose(t.column("spend").to_numpy(), [float(r[2] or 0) for r in part])


def test_tsv_with_custom_list_separator(rows, tmp_path):
    src = tmp_path / "in.tsv"
    src.write_text("\n".join("\t".join(r) for r in [HEADER] + [r[:5] + [r[5].replace("|", ";")] + r[6:]
                                                               for r in rows]) + "\n")
    import_table(src, tmp_path / "out", hash_size=HASH, list_sep=";", **ROLES)
    t = read_dates(tmp_path / "out")["2014-10-21"]
    assert t.column("tags").to_pylist() == [list_ids(r[5]) for r in rows[:50]]


# -- parquet -------------------------------------------------------------------------------------
def test_parquet_list_columns_and_integer_ids(rows, tmp_path):
    n = len(rows)
    str_lists = [[t for t in r[5].split("|")] + ([None] if i % 5 == 0 else []) for i, r in enumerate(rows)]
    str_lists[7] = None
    int_lists = [[int(r[1]), int(r[2] or 0)] for r in rows]
    table = pa.table({
        "y": pa.array([int(r[0]) for r in rows], pa.int64()),
        "price": pa.array([float(r[1]) for r in rows]),
        "user": pa.array([r[3] for r in rows]).dictionary_encode(),
        "app_num": pa.array([int(r[1]) for r in rows], pa.int32()),
        "tags": pa.array(str_lists, pa.list_(pa.string())),
        "nums": pa.array(int_lists, pa.large_list(pa.int64())),
        "when": pa.array([dt.date(2024, 1, 1 + i % 3) for i in range(n)], pa.date32()),
    })
    pq.write_table(table, tmp_path / "in.parquet", row_group_size=30)
    summary = import_table(tmp_path / "in.parquet", tmp_path / "out", label="y", dense=["price"],
                           sparse=["user", "app_num"], multi_sparse=["tags", "nums"],
                           date_column="when", hash_size=HASH)
    assert summary.rows == n and sorted(summary.dates) == ["2024-01-01", "2024-01-02", "2024-01-03"]
    t = read_dates(tmp_path / "out")["2024-01-02"]
    picked = [i for i in range(n) if i % 3 == 1]
    assert t.column("user").to_pylist() == [id_of_text(rows[i][3], HASH) for i in picked]
    assert t.column("app_num").to_pylist() == [id_of_text(rows[i][1], HASH) for i in picked]
    assert t.column("tags").to_pylist() == [[id_of_text(x, HASH) for x in (str_lists[i] or []) if x]
                                            for i in picked]
    assert t.column("tags").to_pylist()[picked.index(7)] == []
    assert t.column("nums").to_pylist() == [[id_of_text(str(v), HASH) for v in int_lists[i]] for i in picked]


def _utc(day: int, hour: int = 0) -> dt.datetime:
    return dt.datetime(2024, 1, 5 + day, hour, tzinfo=dt.timezone.utc)


DATES = ["2024-01-05", "2024-01-06", "2024-01-07"]
DATE_FORMS = {  # form -> date values of rows on DATES[0], DATES[1], DATES[2]
    "timestamp": pa.array([dt.datetime(2024, 1, 5 + d, 12) for d in range(3)], pa.timestamp("ms")),
    # 23:00 in New York is the next day in UTC: the date is the one in the timestamp's zone
    "timestamp_tz": pa.array([_utc(d + 1, 4) for d in range(3)], pa.timestamp("us", "America/New_York")),
    "date32": pa.array([dt.date(2024, 1, 5 + d) for d in range(3)], pa.date32()),
    "iso_date": pa.array(DATES),
    "iso_datetime": pa.array(["2024-01-05T23:59:59+05:00", "2024-01-06 00:00", "2024-01-07T10:00:00.5Z"]),
    "epoch_int": pa.array([int(_utc(d, 1).timestamp()) for d in range(3)], pa.int64()),
    "epoch_float": pa.array([_utc(d, 23).timestamp() + 0.25 for d in range(3)], pa.float64()),
}


TEXT_FORMS = ("iso_date", "iso_datetime", "epoch_int", "epoch_float")  # what a CSV can hold


@pytest.mark.parametrize("kind,form", [("parquet", f) for f in sorted(DATE_FORMS)]
                         + [("csv", f) for f in TEXT_FORMS])
def test_every_date_form(rows, tmp_path, kind, form):
    values = DATE_FORMS[form].take(pa.array([i % 3 for i in range(len(rows))]))
    data = pa.table({"y": pa.array([int(r[0]) for r in rows]), "user": pa.array([r[3] for r in rows]),
                     "when": values})
    if kind == "parquet":
        src = tmp_path / "in.parquet"
        pq.write_table(data, src)
    else:
        src = write_csv(tmp_path / "in.csv", ["y", "user", "when"],
                        [[str(a), b, str(c)] for a, b, c in zip(*(data.column(k).to_pylist() for k in data.column_names))])
    summary = import_table(src, tmp_path / "out", label="y", dense=[], sparse=["user"],
                           multi_sparse=[], date_column="when", hash_size=HASH)
    assert summary.dates == {d: sum(1 for i in range(len(rows)) if i % 3 == k) for k, d in enumerate(DATES)}
    t = read_dates(tmp_path / "out")[DATES[1]]
    assert t.column("user").to_pylist() == [id_of_text(rows[i][3], HASH) for i in range(1, len(rows), 3)]


def test_week_unit_names_partitions_by_monday(tmp_path):
    days = ["2023-12-31", "2024-01-01", "2024-01-07", "2024-01-08", "2024-01-14", "2024-01-10"]
    src = write_csv(tmp_path / "in.csv", ["y", "c", "d"], [["1", f"v{i}", d] for i, d in enumerate(days)])
    summary = import_table(src, tmp_path / "out", label="y", dense=[], sparse=["c"], multi_sparse=[],
                           date_column="d", date_unit="week", hash_size=HASH)
    assert summary.dates == {"2023-12-25": 1, "2024-01-01": 2, "2024-01-08": 3}
    for monday in summary.dates:
        assert dt.date.fromisoformat(monday).isoweekday() == 1
    t = read_dates(tmp_path / "out")["2024-01-08"]
    assert t.column("c").to_pylist() == [id_of_text(v, HASH) for v in ("v3", "v4", "v5")]


# -- bad input -----------------------------------------------------------------------------------
BAD_CASES = [  # (row index, column index, new value or None = drop a field, column, reason key)
    (3, 4, None, "when", "wrong number of fields"),          # 6 of 8 fields: 'when' is the first missing
    (10, 1, "cheap", "price", "not a number"),
    (17, 0, "2", "y", "label not 0/1"),
    (25, 6, "", "when", "date missing"),
    (33, 6, "2024-02-30", "when", "bad date"),
    (41, 6, "yesterday", "when", "bad date"),
    (60, 6, "99999999999999", "when", "bad date"),           # epoch seconds past year 9999
]


@pytest.mark.parametrize("index,col,value,column,kind", BAD_CASES)
def test_bad_csv_row_names_line_and_column(rows, tmp_path, index, col, value, column, kind):
    bad = [r[:] for r in rows]
    if value is None:
        bad[index] = bad[index][:col] + bad[index][col + 2:]
    else:
        bad[index][col] = value
    src = write_csv(tmp_path / "in.csv", HEADER, bad)
    out = tmp_path / "out"
    with pytest.raises(BadRowError) as info:
        import_table(src, out, **ROLES)
    assert (info.value.line, info.value.column) == (index + 2, column)
    if value:
        assert repr(value) in str(info.value)
    assert_nothing_written(tmp_path, out)
    summary = import_table(src, out, on_bad_rows="skip", **ROLES)
    assert summary.rows == 99 and summary.skipped_by_reason == {kind: 1}
    assert f"line {index + 2}, column {column!r}" in summary.first_skipped[0]


def test_bad_parquet_rows_use_row_numbers(tmp_path):
    table = pa.table({"y": [1, 0, 2, 1, 0], "x": ["a", "b", "c", "d", "e"],
                      "d": ["2024-01-01", None, "2024-01-01", "2024-01-02", "2024-01-02"]})
    pq.write_table(table, tmp_path / "in.parquet")
    roles = dict(label="y", dense=[], sparse=["x"], multi_sparse=[], date_column="d")
    with pytest.raises(BadRowError) as info:
        import_table(tmp_path / "in.parquet", tmp_path / "out", **roles)
    assert (info.value.line, info.value.column) == (2, "d")
    assert "parquet" in str(info.value)
    assert_nothing_written(tmp_path, tmp_path / "out")
    summary = import_table(tmp_path / "in.parquet", tmp_path / "out", on_bad_rows="skip", **roles)
    assert summary.dates == {"2024-01-01": 1, "2024-01-02": 2}
    assert summary.skipped_by_reason == {"date missing": 1, "label not 0/1": 1}


@pytest.mark.parametrize("role,name", [("date_column", "day"), ("dense", ["price", "cost"]),
                                       ("sparse", ["nope"]), ("multi_sparse", ["tagz"]),
                                       ("label", "clicked")])
def test_named_column_missing_from_input(rows, tmp_path, role, name):
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    missing = name if isinstance(name, str) else name[-1]
    with pytest.raises(DataError, match=repr(missing)):
        import_table(src, tmp_path / "out", **{**ROLES, role: name})
    assert_nothing_written(tmp_path, tmp_path / "out")
    pq.write_table(pa.table({h: [r[i] for r in rows] for i, h in enumerate(HEADER)}), tmp_path / "in.parquet")
    with pytest.raises(DataError, match=repr(missing)):
        import_table(tmp_path / "in.parquet", tmp_path / "out", **{**ROLES, role: name})
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_option_errors(rows, tmp_path):
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    with pytest.raises(ConfigError, match="'price'"):
        import_table(src, tmp_path / "out", **{**ROLES, "sparse": ["price"]})
    with pytest.raises(ConfigError, match="date_unit"):
        import_table(src, tmp_path / "out", date_unit="month", **ROLES)
    with pytest.raises(ConfigError, match="at least one"):
        import_table(src, tmp_path / "out", **{**ROLES, "dense": [], "sparse": [], "multi_sparse": []})
    other = tmp_path / "in.json"
    other.write_text("{}")
    with pytest.raises(DataError, match="suffix"):
        import_table(other, tmp_path / "out", **ROLES)
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_existing_output_kept_without_force_and_replaced_with_force(rows, tmp_path):
    src = write_csv(tmp_path / "in.csv", HEADER, rows)
    out = tmp_path / "out"
    import_table(src, out, **ROLES)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match="force"):
        import_table(src, out, date_unit="week", **ROLES)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    summary = import_table(src, out, date_unit="week", force=True, **ROLES)
    assert summary.dates == {"2014-10-20": 100}
    assert Dataset.open(str(out)).dates == ["2014-10-20"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
