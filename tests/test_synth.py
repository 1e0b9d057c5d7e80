"""The synthetic generator: deterministic, truthful about its planted structure and Bayes NE."""

from __future__ import annotations

import json

import numpy as np
import pyarrow as pa
import pyarrow.parquet as pq
import pytest

from launcher.cli import build_parser, main
from rankitect.blocks import block_names
from rankitect.data.dataset import Dataset
from rankitect.data.inspect import inspect_dataset
from rankitect.data.synth import SynthConfig, _marginal_prob, ablated_bayes_ne, generate
from rankitect.data.synth_profiles import CRITEO_CARDINALITIES, ZipfSampler, zipf_probs
from rankitect.errors import ConfigError
from rankitect.metrics import binary_entropy
from tests.helpers import read_dates, tiny_synth


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
                                          ("num_pairs", 999), ("start_date", "yesterday"),
                                          ("profile", "criteo-ish"), ("max_cardinality", 1)])
def test_bad_config_names_the_field(tmp_path, field: str, value) -> None:
    with pytest.raises(ConfigError, match=field):
        generate(tmp_path / "x", SynthConfig(**{field: value}))
    assert not (tmp_path / "x").exists()


def test_default_profile_output_is_pinned(tmp_path) -> None:
    """Values written by the generator before profiles existed: the default stays byte-identical."""
    _, truth = generate(tmp_path / "d", SynthConfig(days=1, rows_per_day=2000, seed=0))
    t = _table(tmp_path / "d")
    assert int(np.sum(t["label"].to_numpy())) == 401
    assert [int(np.sum(t[f"C{i}"].to_numpy())) for i in range(1, 9)] == [
        19012, 21008, 20538, 18563, 21944, 19844, 21675, 20213]
    assert float(np.sum(t["I1"].to_numpy(), dtype=np.float64)) == 2051.7757021592697
    assert truth["bayes_ne"]["2024-01-01"] == pytest.approx(0.6965959354474406, rel=1e-12)
    assert "profile" not in truth["generator"] and "cardinalities" not in truth


def test_zipf_sampler_draws_what_numpy_choice_draws() -> None:
    for n, a in [(20, 1.05), (1000, 0.0), (5000, 1.3)]:
        expected = np.random.default_rng(7).choice(n, size=3000, p=zipf_probs(n, a))
        np.testing.assert_array_equal(ZipfSampler(a).draw(np.random.default_rng(7), n, 3000), expected)


@pytest.fixture(scope="module")
def criteo(tmp_path_factory):
    """A small criteo-profile dataset: cardinalities capped at 5000, 2 days x 2500 rows."""
    cfg = SynthConfig(profile="criteo", max_cardinality=5000, days=2, rows_per_day=2500,
                      chunk_rows=1000, seed=2)
    out = tmp_path_factory.mktemp("criteo") / "d"
    generate(out, cfg)
    return cfg, out


def test_criteo_profile_columns_cardinalities_and_ids(criteo) -> None:
    cfg, out = criteo
    ds = Dataset.open(str(out))
    caps = [min(c, 5000) for c in CRITEO_CARDINALITIES]
    assert ds.schema.dense_names == [f"I{i}" for i in range(1, 14)]
    assert ds.schema.sparse_names == [f"C{i}" for i in range(1, 27)]  # no list column
    assert [c.hash_size for c in ds.schema.sparse] == [c + 1 for c in caps]
    table = pa_concat(out)
    tolerance = 5 * np.sqrt(cfg.missing_rate * (1 - cfg.missing_rate) / len(table))  # 5 binomial sigmas
    for name, card in zip(ds.schema.sparse_names, caps):
        ids = table[name].to_numpy()
        assert ids.min() >= 0 and ids.max() <= card, name  # 0 = missing, ids 1..card
        assert abs(np.mean(ids == 0) - cfg.missing_rate) < tolerance, name
    truth = json.loads((out / "truth.json").read_text())
    assert truth["cardinalities"] == dict(zip(ds.schema.sparse_names, caps))
    assert truth["generator"]["profile"] == "criteo" and truth["generator"]["num_sparse"] == 26
    assert sorted(truth["bayes_ne"]) == ds.dates == ["2024-01-01", "2024-01-02"]
    again = SynthConfig(**truth["generator"])  # the record reproduces the data and its truth
    assert ablated_bayes_ne(again, 1)["bayes"] == pytest.approx(truth["bayes_ne"]["2024-01-02"], rel=1e-12)
    for inter in truth["interactions"]:
        assert set(inter["fields"]) <= set(ds.schema.sparse_names) | set(ds.schema.dense_names)


def test_criteo_ids_are_zipf_skewed(criteo) -> None:
    cfg, out = criteo
    ids = pa_concat(out)["C1"].to_numpy()
    ids = ids[ids > 0]
    top_share = np.bincount(ids).max() / len(ids)
    expected = zipf_probs(5000, cfg.zipf)[0]  # about 0.12: the head of a 5000-id Zipf(1.05)
    assert top_share == pytest.approx(expected, abs=0.03)
    assert top_share > 100 / 5000


def test_max_cardinality_caps_every_column(tmp_path) -> None:
    schema, truth = generate(tmp_path / "c", SynthConfig(profile="criteo", max_cardinality=50,
                                                         days=1, rows_per_day=500))
    assert [c.hash_size for c in schema.sparse] == [min(c, 50) + 1 for c in CRITEO_CARDINALITIES]
    schema, truth = generate(tmp_path / "d", SynthConfig(cardinality=100, max_cardinality=30,
                                                         days=1, rows_per_day=500))
    assert {c.hash_size for c in schema.sparse if not c.multi} == {31}
    assert truth["generator"]["max_cardinality"] == 30 and set(truth["cardinalities"].values()) == {30}
    assert pa_concat(tmp_path / "d")["C1"].to_numpy().max() <= 30


@pytest.mark.parametrize("field, value", [("num_sparse", 5), ("cardinality", 100), ("num_dense", 3),
                                          ("tag_mean_len", 2.0)])
def test_criteo_profile_refuses_the_fields_it_fixes(tmp_path, field: str, value) -> None:
    with pytest.raises(ConfigError, match=f"{field}={value!r} does not apply to profile='criteo'"):
        generate(tmp_path / "x", SynthConfig(profile="criteo", **{field: value}))
    assert not (tmp_path / "x").exists()


@pytest.mark.parametrize("flags, message", [
    (["--profile", "nope"], "argument --profile: invalid choice: 'nope'"),
    (["--max-cardinality", "1"], "argument --max-cardinality: must be an integer >= 2, got 1"),
    (["--max-cardinality", "lots"], "argument --max-cardinality: must be an integer >= 2, got 'lots'"),
    (["--profile", "criteo", "--num-sparse", "5"], "num_sparse=5 does not apply to profile='criteo'"),
])
def test_cli_bad_profile_or_cap_exits_2_and_writes_nothing(tmp_path, capsys, flags, message) -> None:
    assert main(["data", "synth", "--out", str(tmp_path / "x"), *flags]) == 2
    assert message in capsys.readouterr().err
    assert not (tmp_path / "x").exists()


def test_cli_criteo_profile_and_help(tmp_path, capsys) -> None:
    out = tmp_path / "c"
    assert main(["data", "synth", "--out", str(out), "--profile", "criteo", "--max-cardinality", "1000",
                 "--days", "1", "--rows-per-day", "300"]) == 0
    assert "Bayes-optimal NE by date: 2024-01-01" in capsys.readouterr().out
    assert json.loads((out / "truth.json").read_text())["cardinalities"]["C1"] == 1000
    data = next(a for a in build_parser()._subparsers._group_actions[0].choices["data"]._actions
                if a.dest == "data_command")
    for action in data.choices["synth"]._actions:
        if action.dest not in ("help", "out", "force"):  # flags, and the one required option
            assert action.help and "default" in action.help, action.dest


def pa_concat(out) -> pa.Table:
    """All rows of the dataset at `out`, every date, as one table."""
    return pa.concat_tables(read_dates(out).values())
