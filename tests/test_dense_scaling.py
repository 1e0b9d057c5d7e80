"""Dense columns as CTR practice reads them: clip and log1p chosen at import from the column's
statistics, applied inside the model; quantile buckets fed as categorical features."""

from __future__ import annotations

import json
from dataclasses import replace

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rankitect.arch import Architecture, Node
from rankitect.cost import cost_of
from rankitect.data.dense_stats import CLIP_HIGH, CLIP_LOW, RowSample, choose_scaling
from rankitect.data.table import import_table
from rankitect.errors import ArchitectureError, ConfigError, DataError
from rankitect.model import build_model
from rankitect.schema import Schema
from search_spaces.nasrec import NasRecOptions, NasRecSpace
from tests.flop_audit import audit_forward
from tests.helpers import random_kjt, toy_schema

ROWS = 3000


def _table(tmp_path, seed: int = 0):
    rng = np.random.default_rng(seed)
    amount = np.where(rng.random(ROWS) < 0.8, 0.0, rng.lognormal(7.0, 1.5, ROWS))  # heavy tail, >= 0
    age = rng.normal(40.0, 12.0, ROWS)
    age[:3] = [500.0, -400.0, 900.0]  # outliers
    table = pa.table({"label": (rng.random(ROWS) < 0.3).astype(np.int8), "amount": amount, "age": age,
                      "city": rng.integers(0, 50, ROWS).astype(str),
                      "day": np.repeat(["2024-01-01", "2024-01-02", "2024-01-03"], ROWS // 3)})
    path = tmp_path / "t.parquet"
    pq.write_table(table, path)
    return path, amount, age


def _imported(tmp_path) -> tuple[Schema, np.ndarray, np.ndarray]:
    path, amount, age = _table(tmp_path)
    import_table(path, tmp_path / "ds", label="label", dense=["amount", "age"], sparse=["city"],
                 multi_sparse=[], date_column="day")
    return Schema.load(tmp_path / "ds"), amount.astype(np.float32), age.astype(np.float32)


def test_import_chooses_log1p_for_a_heavy_tail_and_clips_outliers(tmp_path):
    schema, amount, age = _imported(tmp_path)
    col = {c.name: c for c in schema.dense}
    assert col["amount"].scale == "log1p" and col["age"].scale == "linear"
    low, high = np.quantile(age.astype(np.float64), [CLIP_LOW, CLIP_HIGH])
    assert col["age"].clip_min == pytest.approx(low, rel=1e-6) and col["age"].clip_max == pytest.approx(high, rel=1e-6)
    assert col["age"].clip_max < 500.0 and col["age"].clip_min > -400.0
    # every row is in the sample at this size: the statistics are those of the transformed column
    expected = np.log1p(np.clip(amount.astype(np.float64), col["amount"].clip_min, col["amount"].clip_max))
    assert col["amount"].mean == pytest.approx(expected.mean(), rel=1e-6)
    assert col["amount"].std == pytest.approx(expected.std(), rel=1e-6)
    assert list(col["age"].buckets) == sorted(set(col["age"].buckets)) and len(col["age"].buckets) == 31
    assert len(col["amount"].buckets) > 31  # 80% zeros: the other values' quantiles are added
    raw = json.loads((tmp_path / "ds" / "schema.json").read_text())
    assert {"scale", "clip_min", "clip_max", "buckets"} <= set(raw["dense"][0])


def test_the_model_applies_clip_log1p_and_normalization_as_recorded(tmp_path):
    schema, amount, age = _imported(tmp_path)
    arch = Architecture((Node("logit", "fc", ("dense",), {"width": 1, "activation": "none"}),))
    model = build_model(arch, schema)
    stored = torch.tensor(np.stack([amount[:64], age[:64]], 1))
    got = model.dense_prep(stored, model.dense_mean, model.dense_inv_std)
    cols = schema.dense
    ref = np.stack([np.log1p(np.clip(amount[:64], cols[0].clip_min, cols[0].clip_max)),
                    np.clip(age[:64], cols[1].clip_min, cols[1].clip_max)], 1)
    ref = (ref - [cols[0].mean, cols[1].mean]) / [cols[0].std, cols[1].std]
    np.testing.assert_allclose(got.numpy(), ref, rtol=1e-5, atol=1e-5)
    inside = got[3:]  # rows without outliers go back to what they were
    np.testing.assert_allclose(model.dense_prep.inverse(inside, model.dense_mean, model.dense_inv_std).numpy(),
                               stored[3:].numpy(), rtol=1e-4, atol=1e-3)


def test_dense_buckets_follow_the_boundaries_and_cost_what_the_cost_model_says(tmp_path):
    schema, amount, age = _imported(tmp_path)
    arch = Architecture((Node("x", "concat", ("dense", "sparse"), {"mode": "flat"}),
                         Node("logit", "fc", ("x",), {"width": 1, "activation": "none"})),
                        embedding={"dense_buckets": True})
    model = build_model(arch, schema)
    cost = cost_of(model.validated)
    assert model.validated.nodes[0].input_shapes[1] == (schema.num_sparse + 2, schema.embedding_dim)
    assert cost.params == sum(p.numel() for p in model.parameters())
    plain = cost_of(replace(arch, embedding={}), schema)
    assert cost.embedding_params - plain.embedding_params == sum(len(c.buckets) + 1 for c in schema.dense) * 16
    stored = torch.tensor(np.stack([amount[:32], age[:32]], 1))
    clipped = model.dense_prep.clipped(stored)
    ids = torch.searchsorted(model.dense_buckets.bounds, clipped.t().contiguous())
    for j, col in enumerate(schema.dense):
        np.testing.assert_array_equal(ids[j].numpy(), np.searchsorted(np.array(col.buckets, np.float32),
                                                                      clipped[:, j].numpy(), side="left"))
    embedded = model.embedding(random_kjt(schema, 32))
    audit = audit_forward(model.interact, [stored, embedded], 32)
    assert audit.total == pytest.approx(cost.flops)  # one id per row: the lookup's pooling is free
    widest = max(len(c.buckets) for c in schema.dense)
    steps = int(np.ceil(np.log2(widest + 1)))
    assert cost.by_node["sparse"] == 2 * (steps + 1)  # two columns' searches, and their offset adds


def test_dense_buckets_on_a_schema_without_boundaries_is_refused_by_field():
    schema = toy_schema()  # hand-made columns: no buckets recorded
    arch = Architecture((Node("logit", "fc", ("sparse",), {"width": 1, "activation": "none"}),),
                        embedding={"dense_buckets": True})
    with pytest.raises(ArchitectureError) as err:
        build_model(arch, schema)
    assert ("embedding", "embedding.dense_buckets") in [(n, f) for n, f, _ in err.value.problems]
    assert "import it again" in str(err.value)


@pytest.mark.parametrize("change, field", [({"scale": "sqrt"}, "scale"),
                                           ({"clip_min": 5.0, "clip_max": 1.0}, "clip_min < clip_max"),
                                           ({"clip_min": 1.0}, "set together"),
                                           ({"scale": "log1p", "clip_min": -1.0, "clip_max": 2.0}, "clip_min >= 0"),
                                           ({"buckets": [2.0, 1.0]}, "ascending")])
def test_a_bad_scaling_in_schema_json_names_column_and_field(change, field):
    raw = toy_schema().to_dict()
    raw["dense"][0].update(change)
    with pytest.raises(DataError, match=f"dense column 'd0'.*{field}"):
        Schema.from_dict(raw)


def test_choose_scaling_rules():
    rng = np.random.default_rng(1)
    normal = choose_scaling(rng.normal(3.0, 2.0, 20_000))
    assert normal.scale == "linear" and normal.mean == pytest.approx(3.0, abs=0.05)
    counts = choose_scaling(rng.poisson(0.3, 20_000) * rng.lognormal(3, 1.5, 20_000))
    assert counts.scale == "log1p" and counts.clip_min == 0.0
    signed = choose_scaling(rng.standard_cauchy(20_000))  # heavy tails on both sides: clipped, not logged
    assert signed.scale == "linear" and signed.clip_min < 0 < signed.clip_max
    constant = choose_scaling(np.full(100, 7.0))
    assert constant.clip_min is None and constant.std == 1.0 and constant.buckets == (7.0,)


def test_row_sample_is_bounded_and_uniform():
    sample = RowSample(num_columns=2)
    for start in range(0, 300_000, 50_000):
        rows = np.arange(start, start + 50_000, dtype=np.float64)
        sample.add(np.stack([rows, -rows], 1))
    assert sample.rows.shape == (sample.capacity, 2)
    assert np.all(sample.rows[:, 1] == -sample.rows[:, 0])  # rows are kept whole
    assert sample.rows[:, 0].mean() == pytest.approx(150_000, rel=0.02)  # from every part of the stream


def test_nasrec_searches_dense_buckets_where_the_schema_has_them(tmp_path):
    schema, _, _ = _imported(tmp_path)
    space = NasRecSpace(schema)
    assert "dense_buckets" in [c.name for c in space.choices()]
    choices = space.baseline_choices("deepfm")
    assert choices["dense_buckets"] is False
    arch = space.decode({**choices, "dense_buckets": True})
    assert arch.embedding == {"dense_buckets": True}
    model = build_model(arch, schema)
    assert model(torch.zeros(4, 2), random_kjt(schema, 4)).shape == (4,)
    assert "dense_buckets" not in [c.name for c in NasRecSpace(toy_schema()).choices()]
    assert "dense_buckets" not in [c.name for c in NasRecSpace(schema, NasRecOptions(dense_buckets="off")).choices()]
    with pytest.raises(ConfigError, match="space.dense_buckets"):
        NasRecSpace(toy_schema(), NasRecOptions(dense_buckets="on"))


def test_scaling_crosses_the_wire_unchanged(tmp_path):
    from launcher.rpc.convert import schema_from_proto, schema_to_proto

    schema, _, _ = _imported(tmp_path)
    back = schema_from_proto(schema_to_proto(schema))
    assert back.dense == schema.dense


def test_a_column_mostly_zero_keeps_buckets_for_its_other_values():
    rng = np.random.default_rng(2)
    values = np.where(rng.random(20_000) < 0.9, 0.0, rng.integers(1, 10_000, 20_000)).astype(np.float64)
    buckets = choose_scaling(values).buckets
    assert len(buckets) >= 31  # 0 and ~31 quantiles of the non-zero values, not just 0 and a few
    assert buckets[0] == 0.0 and all(a < b for a, b in zip(buckets, buckets[1:]))


def test_nasrec_table_rows_choice_changes_parameters_as_the_cost_model_says(tmp_path):
    from rankitect.blocks.table_rows import default_rows

    schema, _, _ = _imported(tmp_path)
    space = NasRecSpace(schema, NasRecOptions(row_scales=(0.25, 1.0)))
    assert "table_rows" in [c.name for c in space.choices()]
    choices = space.baseline_choices("dlrm")
    assert choices["table_rows"] == 1.0
    full, quarter = (build_model(space.decode({**choices, "table_rows": s}), schema) for s in (1.0, 0.25))
    rows_full = [default_rows(c) for c in schema.sparse]
    rows_quarter = [max(2, round(r * 0.25)) for r in rows_full]
    e = schema.embedding_dim
    assert cost_of(full.validated).embedding_params - cost_of(quarter.validated).embedding_params == \
        (sum(rows_full) - sum(rows_quarter)) * e
    for model in (full, quarter):
        assert cost_of(model.validated).params == sum(p.numel() for p in model.parameters())
    assert cost_of(full.validated).flops == cost_of(quarter.validated).flops
    with pytest.raises(ConfigError, match="space.row_scales"):
        NasRecSpace(schema, NasRecOptions(row_scales=(0.0, 1.0)))
