"""The synthetic generator: deterministic, truthful about its planted structure and Bayes NE."""

from __future__ import annotations

import json

import numpy as np
import pyarrow.parquet as pq
import pytest

from rankitect.blocks import block_names
from rankitect.data.dataset import Dataset
from rankitect.data.inspect import inspect_dataset
from rankitect.data.synth import SynthConfig, _marginal_prob, ablated_bayes_ne, generate
from rankitect.errors import ConfigError
from rankitect.metrics import binary_entropy
from tests.helpers import tiny_synth


def _table(path):
    ds = Dataset.open(str(path))
    return pq.read_table(ds.files[ds.dates[0]][0])


def test_same_seed_same_data_other_seed_other_data(tmp_path) -> None:
    a = _table(tiny_synth(tmp_path / "a", days=1, rows_per_day=500, seed=3))
    b = _table(tiny_synth(tmp_path / "b", days=1, rows_per_day=500, seed=3))
    c = _table(tiny_synth(tmp_path / "c", days=1, rows_per_day=500, seed=4))
    assert a.equals(b)
    assert not a.equals(c)
    assert (tmp_path / "a" / "truth.json").read_text() == (tmp_path / "b" / "truth.json").read_text()


def test_truth_names_real_fields_blocks_and_consistent_bayes_ne(tmp_path) -> None:
    out = tiny_synth(tmp_path / "d", days=3, rows_per_day=3000)
    truth = json.loads((out / "truth.json").read_text())
    ds = Dataset.open(str(out))
    columns = set(ds.schema.dense_names) | set(ds.schema.sparse_names)
    assert len(truth["interactions"]) == SynthConfig().num_pairs + 1
    for inter in truth["interactions"]:
        assert set(inter["fields"]) <= columns
        assert set(inter["blocks"]) <= set(block_names())
        assert inter["logit_std"] > 0.3
    counts = inspect_dataset(ds)["dates"]
    assert sorted(truth["bayes_ne"]) == ds.dates
    for date, ne in truth["bayes_ne"].items():
        rate = counts[date]["positive_rate"]
        assert truth["positive_rate"][date] == pytest.approx(rate)
        assert ne == pytest.approx(truth["bayes_logloss"][date] / binary_entropy(rate))
        assert 0.4 < ne < 0.9  # the planted structure explains much of the label


def test_leaving_out_a_planted_interaction_costs_ne(tmp_path) -> None:
    cfg = SynthConfig(days=2, rows_per_day=3000, seed=5, chunk_rows=1000)
    generate(tmp_path / "d", cfg)
    truth = json.loads((tmp_path / "d" / "truth.json").read_text())
    ablated = ablated_bayes_ne(cfg, 1)
    assert ablated["bayes"] == pytest.approx(truth["bayes_ne"]["2024-01-02"], rel=1e-12)
    assert set(ablated) == {"bayes"} | {i["name"] for i in truth["interactions"]}
    for name, ne in ablated.items():
        if name != "bayes":
            assert ne > ablated["bayes"] + 0.005, name
    with pytest.raises(ConfigError, match="day=2"):
        ablated_bayes_ne(cfg, 2)


def test_marginal_probability_matches_monte_carlo() -> None:
    rng = np.random.default_rng(0)
    logits = np.array([-3.0, -0.5, 0.0, 1.2, 4.0])
    noise = 0.8
    eps = rng.normal(0, noise, size=(400_000, 1))
    mc = (1 / (1 + np.exp(-(logits + eps)))).mean(0)
    np.testing.assert_allclose(_marginal_prob(logits, noise), mc, atol=2e-3)


def test_base_rate_and_list_column(tmp_path) -> None:
    out = tiny_synth(tmp_path / "e", days=1, rows_per_day=4000)
    ds = Dataset.open(str(out))
    stats = ds.schema.dates[ds.dates[0]]
    assert 0.15 < stats.positives / stats.rows < 0.25
    tags = next(c for c in ds.schema.sparse if c.multi)
    assert tags.avg_len == pytest.approx(SynthConfig().tag_mean_len, rel=0.1)


@pytest.mark.parametrize("field, value", [("days", 0), ("noise", -1.0), ("base_ctr", 1.5),
                                          ("num_pairs", 999), ("start_date", "yesterday")])
def test_bad_config_names_the_field(tmp_path, field: str, value) -> None:
    with pytest.raises(ConfigError, match=field):
        generate(tmp_path / "x", SynthConfig(**{field: value}))
    assert not (tmp_path / "x").exists()
