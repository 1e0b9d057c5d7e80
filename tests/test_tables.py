"""Embedding tables sized to the data: distinct counts at import, rows from them, fused tables."""

from __future__ import annotations

import csv
import json
from pathlib import Path

import numpy as np
import pyarrow.compute as pc
import pyarrow.parquet as pq
import pytest
import torch

from launcher.cli import main
from rankitect.arch.graph import Architecture
from rankitect.blocks.embedding import EmbeddingModule
from rankitect.blocks.fused_tables import FusedTables, TableOptimizer
from rankitect.blocks.table_rows import (
    MAX_ROWS_PER_ID,
    ROWS_PER_ID,
    SMALL_TABLE_ROWS,
    default_rows,
    table_rows,
)
from rankitect.cost import cost_of
from rankitect.data.avazu import import_avazu
from rankitect.data.criteo import import_criteo
from rankitect.data.dataset import Dataset
from rankitect.data.distinct import EXACT_LIMIT, DistinctCounter
from rankitect.data.table import import_table
from rankitect.errors import ArchitectureError
from rankitect.model import build_model
from rankitect.schema import Schema, SparseColumn
from search_spaces import baseline
from tests.helpers import random_kjt, tiny_synth, toy_schema

BIG_HASH = 1 << 40  # no two raw values of these small tables share an id


def _raw_distinct(path: Path, columns: list[str]) -> dict[str, int]:
    """Distinct non-empty values of each column of a CSV file, read with the csv module."""
    with open(path, newline="") as handle:
        rows = list(csv.DictReader(handle))
    return {c: len({r[c] for r in rows if r[c] != ""}) for c in columns}


# -- counting ------------------------------------------------------------------------------------
def test_counter_is_exact_below_its_limit_and_a_close_sketch_above() -> None:
    rng = np.random.default_rng(0)
    small = rng.integers(1, 5000, size=20_000)
    counter = DistinctCounter()
    for part in np.array_split(small, 7):
        counter.update(part)
    assert counter.exact and counter.count() == len(set(small.tolist()))

    big = rng.integers(1, 1 << 62, size=400_000)
    counter = DistinctCounter()
    for part in np.array_split(np.concatenate([big, big[:100_000]]), 9):  # repeats do not count twice
        counter.update(part)
    truth = len(np.unique(big))
    assert not counter.exact and abs(counter.count() - truth) / truth < 0.03
    assert counter._registers.nbytes == 1 << 14 and counter._seen is None  # bounded, whatever the rows


def test_counter_limit_is_where_it_switches() -> None:
    counter = DistinctCounter(exact_limit=100)
    counter.update(np.arange(1, 101))
    assert counter.exact and counter.count() == 100
    counter.update(np.array([101]))
    assert not counter.exact and abs(counter.count() - 101) <= 3


def test_criteo_counts_match_an_independent_count(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "criteo_sample.txt"
    import_criteo(path, tmp_path / "out", hash_size=BIG_HASH)
    schema = Dataset.open(str(tmp_path / "out")).schema
    expected = _raw_distinct(path, [f"C{i}" for i in range(1, 27)])
    assert {c.name: c.distinct for c in schema.sparse} == expected
    assert max(expected.values()) < EXACT_LIMIT


def test_avazu_counts_match_an_independent_count(shared_data: Path, tmp_path: Path) -> None:
    path = shared_data / "avazu_sample.txt"
    import_avazu(path, tmp_path / "out", hash_size=BIG_HASH)
    schema = Dataset.open(str(tmp_path / "out")).schema
    categorical = [c.name for c in schema.sparse if c.name != "hour_of_day"]
    expected = _raw_distinct(path, categorical)
    with open(path, newline="") as handle:
        expected["hour_of_day"] = len({r["hour"][-2:] for r in csv.DictReader(handle)})
    assert {c.name: c.distinct for c in schema.sparse} == expected


def test_table_counts_match_an_independent_count_on_adult(shared_data: Path, tmp_path: Path) -> None:
    source = shared_data / "adult.parquet"
    raw = pq.read_table(source)
    strings = [f.name for f in raw.schema if str(f.type) in ("string", "large_string") and f.name != "day"]
    import_table(source, tmp_path / "out", label="label", dense=["age", "hours_per_week"], sparse=strings,
                 multi_sparse=[], date_column="day", hash_size=BIG_HASH)
    schema = Dataset.open(str(tmp_path / "out")).schema
    expected = {}
    for name in strings:
        column = pc.drop_null(raw.column(name))
        expected[name] = pc.count_distinct(pc.filter(column, pc.not_equal(column, ""))).as_py()
    assert {c.name: c.distinct for c in schema.sparse} == expected
    assert all(count > 0 for count in expected.values())  # every column holds ids: not vacuous


def test_synth_counts_the_ids_it_wrote(tmp_path: Path) -> None:
    ds = Dataset.open(str(tiny_synth(tmp_path / "ds", days=2, rows_per_day=300, cardinality=500)))
    tables = [pq.read_table(f) for files in ds.files.values() for f in files]
    for col in ds.schema.sparse:
        ids = np.concatenate([np.asarray(pc.list_flatten(t.column(col.name)) if col.multi
                                         else t.column(col.name)) for t in tables])
        assert col.distinct == len(np.unique(ids[ids > 0])), col.name


def test_schema_without_counts_still_loads_with_hash_size_rows(tmp_path: Path) -> None:
    """A dataset written before distinct counts: its hash size is its table size."""
    ds = tiny_synth(tmp_path / "ds", days=2, rows_per_day=200)
    raw = json.loads((ds / "schema.json").read_text())
    for col in raw["sparse"]:
        del col["distinct"]
    (ds / "schema.json").write_text(json.dumps(raw))
    schema = Dataset.open(str(ds)).schema
    assert table_rows(schema) == tuple(c.hash_size for c in schema.sparse)


# -- rows ----------------------------------------------------------------------------------------
def test_default_rows_follow_the_count_and_the_cap() -> None:
    def rows(distinct: int | None, hash_size: int = 10**9) -> int:
        return default_rows(SparseColumn("a", hash_size=hash_size, distinct=distinct))

    assert rows(1) == MAX_ROWS_PER_ID * 2 and rows(110) == MAX_ROWS_PER_ID * 111  # small: 64x
    assert rows(2000) == SMALL_TABLE_ROWS  # 64x would pass the small-table size: that size
    assert rows(100_000) == ROWS_PER_ID * 100_001  # large: 4x
    assert rows(0) == MAX_ROWS_PER_ID
    assert rows(110, hash_size=300) == 300 and rows(100_000, hash_size=5000) == 5000  # the cap
    assert rows(None, hash_size=77) == 77  # not counted: hash_size rows, as before
    for distinct in (0, 1, 10, 1000, 5000, 20_000, 10**6):
        assert ROWS_PER_ID * (distinct + 1) <= rows(distinct) <= 64 * (distinct + 1)


def _counted_schema() -> Schema:
    base = toy_schema(num_dense=2, num_sparse=3, dim=8)
    sparse = tuple(SparseColumn(c.name, hash_size=10_000, multi=c.multi, avg_len=c.avg_len, distinct=9 + i)
                   for i, c in enumerate(base.sparse))
    return Schema(label="label", dense=base.dense, sparse=sparse, embedding_dim=8)


def test_embedding_rows_override_and_cost() -> None:
    schema = _counted_schema()
    arch = baseline("dlrm", schema)
    auto = cost_of(arch, schema)
    assert auto.embedding_params == sum(default_rows(c) for c in schema.sparse) * 8
    auto_rows = [default_rows(c) for c in schema.sparse]
    for rows, expected in ((50, [50] * 4), ({"s1": 70}, [auto_rows[0], 70, *auto_rows[2:]]),
                           (10**9, [c.hash_size for c in schema.sparse])):
        custom = Architecture.from_dict({**arch.to_dict(), "embedding": {"rows": rows}})
        model = build_model(custom, schema)
        assert [b.weight.shape[0] for b in model.embedding.ebc.embedding_bags.values()] == expected
        assert cost_of(custom, schema).embedding_params == sum(expected) * 8


@pytest.mark.parametrize("rows, message", [
    (0, "field 'embedding.rows': must be in [2, "),
    (1, "field 'embedding.rows': must be in [2, "),
    ({"s1": 0}, "field 'embedding.rows': column 's1': must be in [2, "),
    ({"nope": 5}, "field 'embedding.rows': names no sparse column: 'nope'"),
    ("lots", "field 'embedding.rows': must be \"auto\", an integer or {column: rows}, got 'lots'"),
])
def test_bad_embedding_rows_name_the_key(rows, message: str) -> None:
    schema = _counted_schema()
    arch = Architecture.from_dict({**baseline("dlrm", schema).to_dict(), "embedding": {"rows": rows}})
    with pytest.raises(ArchitectureError) as err:
        build_model(arch, schema)
    assert message in str(err.value)


# -- fused tables ----------------------------------------------------------------------------------
@pytest.mark.parametrize("pooling, dim", [("sum", 8), ("mean", 6)])
def test_fused_tables_compute_what_plain_tables_compute(pooling: str, dim: int) -> None:
    """Same weights, same outputs: with ids remapped (rows below hash_size), a list column,
    mean pooling, and a width the kernel pads (6 -> 8)."""
    schema = _counted_schema()
    rows = table_rows(schema)
    assert all(r < c.hash_size for r, c in zip(rows, schema.sparse))  # the remap is at work
    torch.manual_seed(0)
    plain = EmbeddingModule(schema, dim, pooling)
    fused = EmbeddingModule(schema, dim, pooling, optimizer=TableOptimizer())
    assert isinstance(fused.ebc, FusedTables) and sorted(plain.state_dict()) == sorted(fused.state_dict())
    fused.load_state_dict(plain.state_dict())
    kjt = random_kjt(schema, batch=64, seed=3)
    assert kjt.values().max() >= min(rows)  # ids beyond the tables' rows
    torch.testing.assert_close(fused(kjt), plain(kjt), rtol=1e-6, atol=1e-6)


def test_remap_keeps_missing_and_maps_ids_into_the_table() -> None:
    schema = _counted_schema()
    module = EmbeddingModule(schema, 8, "sum")
    kjt = random_kjt(schema, batch=32, seed=1)
    ids = module.remap(kjt.values(), kjt.lengths())
    per_feature = kjt.lengths().view(len(schema.sparse), -1).sum(1).tolist()
    for col, r, values, mapped in zip(schema.sparse, module.rows, kjt.values().split(per_feature),
                                      ids.split(per_feature)):
        expected = [0 if v == 0 else 1 + (v - 1) % (r - 1) for v in values.tolist()]
        assert mapped.tolist() == expected and int(mapped.max()) < r, col.name


def test_fused_tables_refuse_to_move_and_cuda_only_optimizers_on_cpu() -> None:
    schema = _counted_schema()
    fused = EmbeddingModule(schema, 8, "sum", optimizer=TableOptimizer())
    fused.to("cpu")  # where they are: fine
    with pytest.raises(RuntimeError, match="cannot be moved"):
        fused.double()
    with pytest.raises(ValueError, match="'adam' runs on CUDA only"):
        TableOptimizer("adam").check(torch.device("cpu"))


# -- the command line ------------------------------------------------------------------------------
def test_train_table_rows_flag_and_its_mistakes(tmp_path: Path, capsys) -> None:
    ds = tiny_synth(tmp_path / "ds", days=3, rows_per_day=400, cardinality=300)
    args = ["train", "--data", str(ds), "--arch", "dlrm", "--train-dates", "first:2", "--eval-dates", "last:1",
            "--epochs", "1", "--batch-size", "128", "--json"]
    assert main([*args, "--out", str(tmp_path / "r"), "--table-rows", "64"]) == 0
    metrics = json.loads((tmp_path / "r" / "metrics.json").read_text())
    schema = Dataset.open(str(ds)).schema
    assert metrics["embedding_params"] == sum(min(64, c.hash_size) for c in schema.sparse) * schema.embedding_dim
    weights = torch.load(tmp_path / "r" / "checkpoint.pt", weights_only=True)["model"]
    assert {k: v.shape[0] for k, v in weights.items() if "embedding_bags" in k} == {
        f"embedding.ebc.embedding_bags.t_{c.name}.weight": min(64, c.hash_size) for c in schema.sparse}
    capsys.readouterr()
    assert main([*args, "--out", str(tmp_path / "bad"), "--table-rows", "0"]) == 2
    assert "--table-rows must be >= 2, got 0" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    assert main([*args, "--out", str(tmp_path / "bad"), "--loader-workers", "-5"]) == 2
    assert "loader_workers: must be >= 0, or -1 (auto), got -5" in capsys.readouterr().err
    assert main([*args, "--out", str(tmp_path / "bad"), "--embedding-optimizer", "adam"]) == 2
    assert "embedding_optimizer: must be one of rowwise_adagrad, adagrad, sgd, dense on device='cpu'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()
    bad_arch = tmp_path / "arch.json"
    bad_arch.write_text(json.dumps({**baseline("dlrm", schema).to_dict(), "embedding": {"rows": {"C99": 10}}}))
    assert main([*args[:4], str(bad_arch), *args[5:], "--out", str(tmp_path / "bad")]) == 2
    assert "field 'embedding.rows': names no sparse column: 'C99'" in capsys.readouterr().err
    assert not (tmp_path / "bad").exists()


def test_import_hash_size_under_two_is_refused(shared_data: Path, tmp_path: Path, capsys) -> None:
    assert main(["data", "criteo", "--input", str(shared_data / "criteo_sample.txt"), "--out", str(tmp_path / "o"),
                 "--hash-size", "1"]) == 2
    assert "argument --hash-size: must be an integer >= 2, got 1" in capsys.readouterr().err
    assert not (tmp_path / "o").exists()


def test_fused_sgd_trains_as_plain_tables_with_torch_sgd() -> None:
    """Five steps of SGD in the tables' backward give the tables torch's SGD gives plain tables
    (rows no batch touched have a zero gradient: SGD leaves them alone either way)."""
    schema = _counted_schema()
    torch.manual_seed(0)
    plain = EmbeddingModule(schema, 8, "mean")
    fused = EmbeddingModule(schema, 8, "mean", optimizer=TableOptimizer("sgd", lr=0.5))
    fused.load_state_dict(plain.state_dict())
    sgd = torch.optim.SGD(plain.parameters(), lr=0.5)
    for step in range(5):
        kjt = random_kjt(schema, batch=16, seed=10 + step)
        target = torch.randn(16, len(schema.sparse), 8, generator=torch.Generator().manual_seed(step))
        sgd.zero_grad()
        (plain(kjt) - target).square().sum().backward()
        sgd.step()
        (fused(kjt) - target).square().sum().backward()
    for key, value in plain.state_dict().items():
        torch.testing.assert_close(fused.state_dict()[key], value, rtol=1e-5, atol=1e-6)


def test_rowwise_adagrad_on_a_padded_width_steps_as_on_an_unpadded_one() -> None:
    """E=6 lives in rows of 8 floats: the lr is scaled so that a step is the one of E=8 tables
    whose 2 extra columns hold zeros and get no gradient, which is exactly rowwise Adagrad of
    the 6 columns (its mean square over 6 values, not 8)."""
    schema = _counted_schema()
    kjt = random_kjt(schema, batch=16, seed=2)
    torch.manual_seed(0)
    six = EmbeddingModule(schema, 6, "sum", optimizer=TableOptimizer("rowwise_adagrad", lr=0.3))
    start = {k: v.clone() for k, v in six.state_dict().items()}
    six(kjt).square().sum().backward()
    g = {}  # the step by hand: w -= lr * grad / (sqrt(mean over the row of grad^2) + eps)
    plain = EmbeddingModule(schema, 6, "sum")
    plain.load_state_dict(start)
    plain(kjt).square().sum().backward()
    for name, bag in plain.ebc.embedding_bags.items():
        grad = bag.weight.grad
        g[name] = start[f"ebc.embedding_bags.{name}.weight"] - 0.3 * grad / (
            grad.square().mean(dim=1, keepdim=True).sqrt() + 1e-8)
    assert six.ebc.widths == [8] * schema.num_sparse
    for name in g:
        torch.testing.assert_close(six.state_dict()[f"ebc.embedding_bags.{name}.weight"], g[name],
                                   rtol=1e-5, atol=1e-6)


def test_the_lr_schedule_reaches_the_tables(tmp_path: Path) -> None:
    from rankitect.train import TrainConfig, Trainer
    from rankitect.train.trainer import training_model

    ds = Dataset.open(str(tiny_synth(tmp_path / "ds", days=2, rows_per_day=600)))
    config = TrainConfig(epochs=1, batch_size=100, embedding_lr=0.2, lr_schedule="linear", checkpoint_every=0,
                         shuffle_buffer=1000)
    seen: list[float] = []
    trainer = Trainer(training_model(baseline("dlrm", ds.schema), ds.schema, config), ds, ds.dates, config,
                      progress=False, on_step=lambda step, loss: seen.append(kernel.get_learning_rate()))
    kernel = trainer.model.embedding.ebc.kernel
    trainer.fit()
    steps = len(trainer.loader)
    torch.testing.assert_close(seen, [0.2 * (1 - i / steps) for i in range(steps)], rtol=1e-6, atol=1e-7)
