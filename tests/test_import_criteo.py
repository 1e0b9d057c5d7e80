"""Criteo importer on the real sample rows: both input forms, dates, values, bad rows, --force."""

from __future__ import annotations

import csv
import gzip
import math
from pathlib import Path

import numpy as np
import pyarrow as pa
import pytest

from rankitect.data.criteo import COLUMNS, DENSE, SPARSE, import_criteo
from rankitect.data.csv_source import CsvLayout, iter_csv_blocks
from rankitect.data.dataset import Dataset
from rankitect.data.hashing import hash_arrow_strings, id_of_text
from rankitect.errors import BadRowError, ConfigError, DataError
from tests.helpers import read_dates, write_csv

HASH = 1000


# -- helpers -------------------------------------------------------------------------------------
@pytest.fixture(scope="module")
def sample(shared_data: Path) -> tuple[Path, list[str], list[list[str]]]:
    """(path, header, rows) of criteo_sample.txt, read with the csv module."""
    path = shared_data / "criteo_sample.txt"
    with open(path, newline="") as handle:
        reader = csv.reader(handle)
        header = next(reader)
        rows = list(reader)
    return path, header, rows








def assert_nothing_written(tmp_path: Path, out: Path) -> None:
    assert not out.exists()
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []


def expected_dense(text: str) -> float:
    return math.log1p(max(float(text), 0.0)) if text else 0.0


# -- good input ----------------------------------------------------------------------------------
def test_sample_csv_rows_labels_and_columns(sample, tmp_path):
    path, header, rows = sample
    summary = import_criteo(path, tmp_path / "out", hash_size=HASH)
    ds = Dataset.open(str(tmp_path / "out"))
    assert summary.rows == 200 and summary.dates == {"2014-01-01": 200} and summary.skipped == 0
    assert ds.schema.dates["2014-01-01"].rows == 200
    assert ds.schema.dates["2014-01-01"].positives == 49
    assert ds.schema.label == "label"
    assert ds.schema.dense_names == list(DENSE) and ds.schema.sparse_names == list(SPARSE)
    assert all(c.transform == "log1p" and c.fill == 0.0 for c in ds.schema.dense)
    assert all(c.hash_size == HASH and c.hashing == "fnv1a64" for c in ds.schema.sparse)
    assert ds.schema.preprocessing["dense"] == "missing->0, clamp >= 0, log1p"
    assert "fnv1a64" in ds.schema.preprocessing["sparse"]
    table = read_dates(tmp_path / "out")["2014-01-01"]
    assert table.column_names == list(COLUMNS)
    assert table.column("label").to_pylist() == [int(r[0]) for r in rows]


def test_sample_values_match_reference_hash_and_log1p(sample, tmp_path):
    path, header, rows = sample
    import_criteo(path, tmp_path / "out", hash_size=HASH)
    table = read_dates(tmp_path / "out")["2014-01-01"]
    for name in ("C1", "C3", "C20", "C26"):  # C20 and C26 have empty (missing) values
        raw = [r[header.index(name)] for r in rows]
        assert table.column(name).to_pylist() == [id_of_text(v, HASH) for v in raw]
        assert table.column(name).to_pylist() == hash_arrow_strings(pa.array(raw), HASH).tolist()
        assert 0 in table.column(name).to_pylist() or all(raw)
    for name in ("I1", "I2", "I5", "I13"):  # I2 holds -1 (clamped), I1 blanks (missing)
        raw = [r[header.index(name)] for r in rows]
        np.testing.assert_allclose(table.column(name).to_numpy(), [expected_dense(v) for v in raw],
                                   rtol=1e-6)
    assert any(r[header.index("I2")].startswith("-") for r in rows)


def test_dense_edge_values_and_progress(sample, tmp_path):
    _, header, rows = sample
    edited = [r[:] for r in rows[:10]]
    edited[0][1:5] = [" 7 ", "nan", "-3.5", "1e2"]  # I1..I4: spaces, missing, clamped, exponent
    src = write_csv(tmp_path / "in.csv", header, edited)
    counts: list[int] = []
    import_criteo(src, tmp_path / "out", hash_size=HASH, progress=counts.append)
    assert sum(counts) == 10
    first = read_dates(tmp_path / "out")["2014-01-01"].slice(0, 1).to_pylist()[0]
    assert [first[n] for n in ("I1", "I2", "I3", "I4")] == pytest.approx(
        [math.log1p(7), 0.0, 0.0, math.log1p(100)])


def test_released_gzipped_day_files_one_partition_per_day(sample, tmp_path):
    path, header, rows = sample
    folder = tmp_path / "criteo"
    folder.mkdir()
    chunks = {0: rows[:60], 1: rows[60:120], 10: rows[120:]}  # day_10 sorts numerically
    for k, part in chunks.items():
        write_csv(folder / f"day_{k}.gz", None, part, sep="\t")
    (folder / "README").write_text("not a day file\n")
    summary = import_criteo(folder, tmp_path / "out", hash_size=HASH, start_date="2020-02-27")
    expect = {"2020-02-27": chunks[0], "2020-02-28": chunks[1], "2020-03-08": chunks[10]}
    assert summary.dates == {d: len(r) for d, r in expect.items()}
    ds = Dataset.open(str(tmp_path / "out"))
    tables = read_dates(tmp_path / "out")
    for date, part in expect.items():
        assert ds.schema.dates[date].positives == sum(r[0] == "1" for r in part)
        assert tables[date].column("C5").to_pylist() == [id_of_text(r[header.index("C5")], HASH) for r in part]
        np.testing.assert_allclose(tables[date].column("I3").to_numpy(),
                                   [expected_dense(r[header.index("I3")]) for r in part], rtol=1e-6)


def test_released_single_tsv_equals_sample_csv(sample, tmp_path):
    path, header, rows = sample
    tsv = write_csv(tmp_path / "day_0", None, rows, sep="\t")
    import_criteo(tsv, tmp_path / "from_tsv", hash_size=HASH)
    import_criteo(path, tmp_path / "from_csv", hash_size=HASH)
    assert read_dates(tmp_path / "from_tsv")["2014-01-01"].equals(read_dates(tmp_path / "from_csv")["2014-01-01"])


def test_pseudo_days_split_one_file_by_row_order(sample, tmp_path):
    path, header, rows = sample
    summary = import_criteo(path, tmp_path / "out", hash_size=HASH, days=3, start_date="2014-12-31")
    assert summary.dates == {"2014-12-31": 67, "2015-01-01": 67, "2015-01-02": 66}
    ds = Dataset.open(str(tmp_path / "out"))
    tables = read_dates(tmp_path / "out")
    for date, part in zip(ds.dates, (rows[:67], rows[67:134], rows[134:])):
        assert ds.schema.dates[date].positives == sum(r[0] == "1" for r in part)
        assert tables[date].column("C1").to_pylist() == [id_of_text(r[header.index("C1")], HASH) for r in part]
    assert sum(s.positives for s in ds.schema.dates.values()) == 49


def test_option_errors(sample, tmp_path):
    path, _, rows = sample
    with pytest.raises(DataError, match="days=500"):
        import_criteo(path, tmp_path / "out", days=500)
    folder = tmp_path / "days"
    folder.mkdir()
    write_csv(folder / "day_0", None, rows[:5], sep="\t")
    with pytest.raises(ConfigError, match="days=2"):
        import_criteo(folder, tmp_path / "out", days=2)
    with pytest.raises(ConfigError, match="start_date"):
        import_criteo(path, tmp_path / "out", start_date="2014-13-01")
    with pytest.raises(ConfigError, match="on_bad_rows"):
        import_criteo(path, tmp_path / "out", on_bad_rows="ignore")
    with pytest.raises(ConfigError, match="hash_size"):
        import_criteo(path, tmp_path / "out", hash_size=1)
    garbage = tmp_path / "garbage.txt"
    garbage.write_text("hello,world\n1,2\n")
    with pytest.raises(DataError, match="line 1"):
        import_criteo(garbage, tmp_path / "out")
    assert_nothing_written(tmp_path, tmp_path / "out")


# -- bad rows ------------------------------------------------------------------------------------
def _short(row: list[str]) -> list[str]:
    return row[:-1]


def _long(row: list[str]) -> list[str]:
    return row + ["extra"]


def _text_dense(row: list[str]) -> list[str]:
    return row[:3] + ["abc"] + row[4:]  # I3


def _label_two(row: list[str]) -> list[str]:
    return ["2"] + row[1:]


BAD_CASES = [  # (damage, row index, expected column, reason key, message part)
    (_short, 3, "C26", "wrong number of fields", "expected 40 fields, found 39"),
    (_long, 150, "(field 41)", "wrong number of fields", "expected 40 fields, found 41"),
    (_text_dense, 5, "I3", "not a number", "'abc'"),
    (lambda r: r[:5] + ["inf"] + r[6:], 70, "I5", "not a number", "'inf'"),
    (_label_two, 8, "label", "label not 0/1", "'2'"),
]


@pytest.mark.parametrize("form", ["csv", "tsv.gz"])
@pytest.mark.parametrize("damage,index,column,kind,message", BAD_CASES)
def test_bad_row_names_line_and_column(sample, tmp_path, form, damage, index, column, kind, message):
    _, header, rows = sample
    bad_rows = [damage(r) if i == index else r for i, r in enumerate(rows)]
    if form == "csv":
        src, line = write_csv(tmp_path / "in.csv", header, bad_rows), index + 2
    else:
        src, line = write_csv(tmp_path / "day_0.gz", None, bad_rows, sep="\t"), index + 1
    out = tmp_path / "out"
    with pytest.raises(BadRowError) as info:
        import_criteo(src, out, hash_size=HASH)
    assert (info.value.line, info.value.column) == (line, column)
    assert message in str(info.value) and f"line {line}" in str(info.value)
    assert_nothing_written(tmp_path, out)

    summary = import_criteo(src, out, hash_size=HASH, on_bad_rows="skip")
    assert summary.rows == 199 and summary.skipped == 1
    assert summary.skipped_by_reason == {kind: 1}
    assert f"line {line}, column {column!r}" in summary.first_skipped[0]
    ds = Dataset.open(str(out))
    assert ds.schema.dates["2014-01-01"].positives == 49 - (rows[index][0] == "1")


def test_earliest_bad_row_is_reported_and_all_are_skipped(sample, tmp_path):
    _, header, rows = sample
    bad_rows = [r[:] for r in rows]
    bad_rows[40] = _label_two(rows[40])   # line 42
    bad_rows[20] = _short(rows[20])       # line 22, rejected by the parser
    bad_rows[60] = _text_dense(rows[60])  # line 62
    src = write_csv(tmp_path / "in.csv", header, bad_rows)
    with pytest.raises(BadRowError) as info:
        import_criteo(src, tmp_path / "out")
    assert (info.value.line, info.value.column) == (22, "C26")
    bad_rows[20] = rows[20]
    src = write_csv(tmp_path / "in.csv", header, bad_rows)
    with pytest.raises(BadRowError) as info:
        import_criteo(src, tmp_path / "out")
    assert (info.value.line, info.value.column) == (42, "label")
    bad_rows[20] = _short(rows[20])
    src = write_csv(tmp_path / "in.csv", header, bad_rows)
    summary = import_criteo(src, tmp_path / "out", on_bad_rows="skip")
    assert summary.rows == 197 and summary.skipped == 3
    assert [s.split(": ")[0].split(", ", 1)[1] for s in summary.first_skipped] == [
        "line 22, column 'C26'", "line 42, column 'label'", "line 62, column 'I3'"]


def test_all_rows_bad_writes_nothing(sample, tmp_path):
    _, header, rows = sample
    src = write_csv(tmp_path / "in.csv", header, [_label_two(r) for r in rows[:5]])
    with pytest.raises(DataError, match="no rows"):
        import_criteo(src, tmp_path / "out", on_bad_rows="skip")
    assert_nothing_written(tmp_path, tmp_path / "out")


def test_line_numbers_across_many_small_blocks(sample, tmp_path):
    """Every row's line is exact across blocks, with rejected rows and blank lines between."""
    _, header, rows = sample
    text_lines = [",".join(header)]
    for i, row in enumerate(rows):
        if i % 17 == 5:
            text_lines.append(",".join(_short(row)))
        elif i % 23 == 7:
            text_lines.append("")
        else:
            text_lines.append(",".join(row))
    path = tmp_path / "in.csv.gz"
    path.write_bytes(gzip.compress(("\n".join(text_lines) + "\n").encode()))
    layout = CsvLayout(path, ",", tuple(header), header_lines=1)
    seen_lines, rejected = [], []
    for block in iter_csv_blocks(layout, block_bytes=1500):
        for line, c1 in zip(block.lines.tolist(), block.table.column("C1").to_pylist()):
            assert text_lines[line - 1].split(",")[14] == c1
            seen_lines.append(line)
        rejected += [r.line for r in block.bad_rows]
    short = [i + 2 for i in range(len(rows)) if i % 17 == 5]
    blank = [i + 2 for i in range(len(rows)) if i % 23 == 7 and i % 17 != 5]
    assert rejected == short
    assert sorted(seen_lines + short + blank) == list(range(2, len(rows) + 2))


# -- existing output -----------------------------------------------------------------------------
def test_existing_output_kept_without_force_and_replaced_with_force(sample, tmp_path):
    path, _, _ = sample
    out = tmp_path / "out"
    import_criteo(path, out, hash_size=HASH)
    before = {p: p.read_bytes() for p in out.rglob("*") if p.is_file()}
    with pytest.raises(DataError, match="force"):
        import_criteo(path, out, hash_size=HASH, days=2)
    assert {p: p.read_bytes() for p in out.rglob("*") if p.is_file()} == before
    summary = import_criteo(path, out, hash_size=HASH, days=2, force=True)
    assert sorted(summary.dates) == ["2014-01-01", "2014-01-02"]
    assert Dataset.open(str(out)).dates == ["2014-01-01", "2014-01-02"]
    assert [p.name for p in tmp_path.iterdir() if p.name.startswith(".")] == []
