"""Synthetic CTR data with planted structure and a known Bayes-optimal NE.

The click logit of a row is

    b0(day) + sum_f bias_f[id_f] + w . z + sum_(a,b) <v_a(day)[id_a], v_b(day)[id_b]>
            + beta * z_i * z_j + mean_t tag_bias[t] + eps,      eps ~ N(0, noise^2) unseen

where z are the standardized dense features, (a, b) the planted pairs of sparse fields whose
latent vectors interact by dot product, and (i, j) the planted dense cross. Drift moves the
base rate and the latent vectors a little every day. The Bayes-optimal prediction given the
observed columns is p = E_eps[sigmoid(logit)], computed by Gauss-Hermite quadrature; the
Bayes log-loss of a day is the log-loss of p on that day's realized labels.

Which columns are written, and how many ids each has, is the config's `profile`
(`rankitect.data.synth_profiles`): the default layout, or the Criteo 1TB shape.
"""

from __future__ import annotations

import datetime as dt
import json
import math
from collections.abc import Callable, Iterator
from dataclasses import asdict
from pathlib import Path

import numpy as np
import pyarrow as pa

from rankitect.data.synth_config import SynthConfig
from rankitect.data.synth_profiles import ZipfSampler, check_profile, layout, permutation, zipf_probs
from rankitect.data.writer import ColumnPlan, DatasetWriter
from rankitect.errors import ConfigError
from rankitect.metrics import binary_entropy, logloss
from rankitect.schema import DenseColumn, Schema, SparseColumn

TRUTH_FILE = "truth.json"
TAGS = "tags"
_QUAD_NODES, _QUAD_WEIGHTS = np.polynomial.hermite_e.hermegauss(40)
_QUAD_WEIGHTS = _QUAD_WEIGHTS / _QUAD_WEIGHTS.sum()


def check_config(cfg: SynthConfig) -> None:
    """ConfigError naming the first field that is out of range."""
    check_profile(cfg)
    num_fields = len(layout(cfg).sparse_names)
    rules = [
        ("days", cfg.days >= 1), ("rows_per_day", cfg.rows_per_day >= 10),
        ("num_sparse", cfg.num_sparse >= 2), ("cardinality", cfg.cardinality >= 2),
        ("num_dense", cfg.num_dense >= 0), ("latent_dim", cfg.latent_dim >= 1),
        ("num_pairs", 0 <= cfg.num_pairs <= num_fields * (num_fields - 1) // 2),
        ("noise", cfg.noise >= 0), ("drift", cfg.drift >= 0),
        ("base_ctr", 0 < cfg.base_ctr < 1), ("zipf", cfg.zipf >= 0),
        ("tag_cardinality", cfg.tag_cardinality >= 2), ("tag_mean_len", cfg.tag_mean_len >= 0),
        ("missing_rate", 0 <= cfg.missing_rate < 1), ("embedding_dim", cfg.embedding_dim >= 1),
        ("chunk_rows", cfg.chunk_rows >= 1),
    ]
    for name, ok in rules:
        if not ok:
            raise ConfigError(f"synth: {name}={getattr(cfg, name)!r} is out of range")
    try:
        dt.date.fromisoformat(cfg.start_date)
    except ValueError:
        raise ConfigError(f"synth: start_date={cfg.start_date!r} is not YYYY-MM-DD") from None


class _World:
    """The fixed ground truth drawn from the seed: effects, latent vectors, planted pairs."""

    def __init__(self, cfg: SynthConfig) -> None:
        rng = np.random.default_rng([cfg.seed, 0])
        self.cfg = cfg
        self.layout = lay = layout(cfg)
        self.sparse_names, self.dense_names = list(lay.sparse_names), list(lay.dense_names)
        self.cards, k, f = lay.cardinalities, cfg.latent_dim, len(lay.cardinalities)
        self.zipf = ZipfSampler(cfg.zipf)
        self.perm = [permutation(rng, c) for c in self.cards]  # popular ids differ by field
        self.bias = [_zero_first(rng.normal(0, cfg.bias_std, size=c + 1), lay.float_dtype)
                     for c in self.cards]  # id 0: missing
        all_pairs = [(a, b) for a in range(f) for b in range(a + 1, f)]
        chosen = rng.choice(len(all_pairs), size=cfg.num_pairs, replace=False)
        self.pairs = [all_pairs[i] for i in sorted(chosen)]
        # Entries N(0, s^2) give a k-dim dot product of std s^2 * sqrt(k). Latent vectors are
        # kept for the paired fields only; the original layout draws them for every field.
        s = math.sqrt(cfg.pair_strength / math.sqrt(k)) if cfg.pair_strength > 0 else 0.0
        paired = sorted({j for pair in self.pairs for j in pair})
        drawn = range(f) if lay.original else paired
        self.latent: dict[int, np.ndarray] = {}
        self.latent_step: dict[int, np.ndarray] = {}
        for j in drawn:
            v = _zero_first(rng.normal(0, s, size=(self.cards[j] + 1, k)), lay.float_dtype)
            if j in paired:
                self.latent[j] = v
        for j in drawn:
            v = rng.normal(0, s, size=(self.cards[j] + 1, k)).astype(lay.float_dtype, copy=False)
            if j in paired:
                self.latent_step[j] = v
        d = len(self.dense_names)
        self.dense_mean = rng.uniform(0, 5, size=d)
        self.dense_scale = rng.uniform(0.5, 3, size=d)
        self.dense_w = rng.normal(0, 0.3, size=d)
        self.cross = (0, 1) if d >= 2 and cfg.cross_strength > 0 else None
        self.tag_bias = rng.normal(0, 0.5, size=cfg.tag_cardinality + 1)
        self.tag_bias[0] = 0.0
        self.base_walk = np.cumsum(rng.normal(0, cfg.drift, size=cfg.days))
        self.b0 = 0.0
        self.b0 = self._calibrate_b0()

    def date(self, day: int) -> str:
        return (dt.date.fromisoformat(self.cfg.start_date) + dt.timedelta(days=day)).isoformat()

    def _calibrate_b0(self) -> float:
        """Intercept that makes day 0's mean true probability equal `base_ctr` (bisection)."""
        rows = self.draw(0, min(20_000, self.cfg.rows_per_day * 2), np.random.default_rng([self.cfg.seed, 1]))
        offset = rows["logit"]
        lo, hi = -20.0, 20.0
        for _ in range(60):
            mid = (lo + hi) / 2
            if _marginal_prob(offset + mid, self.cfg.noise).mean() > self.cfg.base_ctr:
                hi = mid
            else:
                lo = mid
        return (lo + hi) / 2

    def draw(self, day: int, n: int, rng: np.random.Generator) -> dict[str, np.ndarray]:
        """Observed columns of `n` rows of `day` plus their `logit` (noise-free) and terms."""
        cfg, f = self.cfg, len(self.cards)
        out: dict[str, np.ndarray] = {}
        ids = np.empty((f, n), np.int64)
        for j in range(f):
            ids[j] = self.perm[j][self.zipf.draw(rng, self.cards[j], n)] + 1
            ids[j][rng.random(n) < cfg.missing_rate] = 0
            out[self.sparse_names[j]] = ids[j]
        raw = rng.normal(self.dense_mean, self.dense_scale, size=(n, len(self.dense_names)))
        z = (raw - self.dense_mean) / self.dense_scale
        for j, name in enumerate(self.dense_names):
            out[name] = raw[:, j].astype(np.float32)
        tag_term = self._draw_tags(n, rng, out) if self.layout.tags else np.zeros(n)

        first = np.stack([self.bias[j][ids[j]] for j in range(f)]).astype(np.float64, copy=False).sum(0)
        first = first + z @ self.dense_w
        pair_terms = [np.einsum("nk,nk->n", self._latent(a, ids[a], day), self._latent(b, ids[b], day))
                      for a, b in self.pairs]
        cross = cfg.cross_strength * z[:, self.cross[0]] * z[:, self.cross[1]] if self.cross else np.zeros(n)
        out["pair_terms"] = np.stack(pair_terms) if pair_terms else np.zeros((0, n))
        out["cross_term"] = cross
        out["logit"] = (self.b0 + self.base_walk[day] + first + tag_term + cross
                        + (np.sum(pair_terms, axis=0) if pair_terms else 0.0))
        return out

    def _draw_tags(self, n: int, rng: np.random.Generator, out: dict[str, np.ndarray]) -> np.ndarray:
        """Draw the `tags` list column into `out`; returns its logit term (mean tag bias)."""
        cfg = self.cfg
        lengths = rng.poisson(cfg.tag_mean_len, size=n).clip(0, 3 * int(cfg.tag_mean_len) + 1)
        tags = rng.choice(cfg.tag_cardinality, size=int(lengths.sum()), p=zipf_probs(cfg.tag_cardinality, cfg.zipf)) + 1
        out[TAGS + ":values"], out[TAGS + ":offsets"] = tags, np.concatenate([[0], np.cumsum(lengths)])
        tag_sum = np.bincount(np.repeat(np.arange(n), lengths), weights=self.tag_bias[tags], minlength=n)
        return tag_sum / np.maximum(lengths, 1)

    def _latent(self, field: int, ids: np.ndarray, day: int) -> np.ndarray:
        """(n, k) float64 latent vectors of `ids` of a paired `field` on `day` (drifted)."""
        v = self.latent[field][ids].astype(np.float64, copy=False)
        step = self.latent_step[field][ids].astype(np.float64, copy=False)
        return v + self.cfg.drift * day * step


def _zero_first(values: np.ndarray, dtype: type) -> np.ndarray:
    """`values` as `dtype` with row 0 (id 0: missing) set to zero."""
    values = values.astype(dtype, copy=False)
    values[0] = 0.0
    return values


def _marginal_prob(logit: np.ndarray, noise: float) -> np.ndarray:
    """E[sigmoid(logit + eps)], eps ~ N(0, noise^2), by Gauss-Hermite quadrature."""
    if noise == 0:
        return 1.0 / (1.0 + np.exp(-logit))
    z = logit[..., None] + noise * _QUAD_NODES
    return (1.0 / (1.0 + np.exp(-z))) @ _QUAD_WEIGHTS


def _plan(world: _World, cfg: SynthConfig) -> ColumnPlan:
    dense = tuple(DenseColumn(name=n) for n in world.dense_names)
    sparse = tuple(SparseColumn(name=n, hash_size=c + 1, hashing="identity")
                   for n, c in zip(world.sparse_names, world.cards))
    if world.layout.tags:
        sparse += (SparseColumn(name=TAGS, hash_size=cfg.tag_cardinality + 1, multi=True,
                                hashing="identity"),)
    return ColumnPlan(label="label", dense=dense, sparse=sparse, embedding_dim=cfg.embedding_dim,
                      source="synth", preprocessing={"dense": "none", "sparse": "identity ids; 0 = missing"})


def _day_chunks(world: _World, day: int) -> Iterator[tuple[dict[str, np.ndarray], np.ndarray, np.ndarray]]:
    """(rows, true p, labels) of each chunk of `day`: the one way a day's rows are drawn."""
    cfg = world.cfg
    for chunk, start in enumerate(range(0, cfg.rows_per_day, cfg.chunk_rows)):
        n = min(cfg.chunk_rows, cfg.rows_per_day - start)
        rng = np.random.default_rng([cfg.seed, 2, day, chunk])
        rows = world.draw(day, n, rng)
        p = _marginal_prob(rows["logit"], cfg.noise)
        yield rows, p, (rng.random(n) < p).astype(np.int8)


def generate(out: Path, cfg: SynthConfig, force: bool = False,
             progress: Callable[[int], None] | None = None) -> tuple[Schema, dict]:
    """Write the dataset and `truth.json` to `out`; returns (schema, truth).

    `progress` is called with the number of rows written after each chunk.
    """
    check_config(cfg)
    world = _World(cfg)
    plan = _plan(world, cfg)
    truth_days: dict[str, dict[str, float]] = {}
    term_std: dict[str, list[float]] = {}
    writer = DatasetWriter(Path(out), plan, force=force)
    try:
        for day in range(cfg.days):
            date = world.date(day)
            probs, labels = [], []
            for chunk, (rows, p, y) in enumerate(_day_chunks(world, day)):
                probs.append(p)
                labels.append(y)
                if day == 0 and chunk == 0:
                    term_std = _term_std(world, rows)
                writer.write(date, _table(world, rows, y))
                if progress is not None:
                    progress(len(y))
            p, y = np.concatenate(probs), np.concatenate(labels)
            loss = logloss(p, y)
            truth_days[date] = {
                "logloss": loss, "ne": loss / binary_entropy(float(y.mean())),
                "expected_logloss": float(np.mean(-(p * np.log(p) + (1 - p) * np.log1p(-p)))),
                "positive_rate": float(y.mean()),
            }
        schema = writer.commit()
    except BaseException:
        writer.abort()
        raise
    truth = _truth(world, cfg, truth_days, term_std)
    (Path(out) / TRUTH_FILE).write_text(json.dumps(truth, indent=2) + "\n")
    return schema, truth


def ablated_bayes_ne(cfg: SynthConfig, day: int) -> dict[str, float]:
    """NE on day `day` (0-based) of the Bayes predictor, and of that predictor with each planted
    interaction left out of its logit (keyed by the interaction's truth.json name): what a
    model that misses the interaction can reach at best, up to refitting its intercept.

    The day's rows and labels are drawn again exactly as `generate` draws them, so "bayes"
    equals truth.json's bayes_ne of that date."""
    check_config(cfg)
    if not 0 <= day < cfg.days:
        raise ConfigError(f"synth: day={day} is out of range (0..{cfg.days - 1})")
    world = _World(cfg)
    names = [i["name"] for i in _interactions(world, {})]
    logits, probs, labels, terms = [], [], [], []
    for rows, p, y in _day_chunks(world, day):
        probs.append(p)
        labels.append(y)
        logits.append(rows["logit"])
        terms.append(np.concatenate([rows["pair_terms"], rows["cross_term"][None, :]])
                     if world.cross is not None else rows["pair_terms"])
    logit, y, term = np.concatenate(logits), np.concatenate(labels), np.concatenate(terms, axis=1)
    entropy = binary_entropy(float(y.mean()))
    out = {"bayes": logloss(np.concatenate(probs), y) / entropy}
    for name, t in zip(names, term):
        out[name] = logloss(_marginal_prob(logit - t, cfg.noise), y) / entropy
    return out


def _table(world: _World, rows: dict[str, np.ndarray], labels: np.ndarray) -> pa.Table:
    cols: dict[str, pa.Array] = {"label": pa.array(labels, pa.int8())}
    for name in world.dense_names:
        cols[name] = pa.array(rows[name], pa.float32())
    for name in world.sparse_names:
        cols[name] = pa.array(rows[name], pa.int64())
    if world.layout.tags:
        cols[TAGS] = pa.ListArray.from_arrays(pa.array(rows[TAGS + ":offsets"], pa.int32()),
                                              pa.array(rows[TAGS + ":values"], pa.int64()))
    return pa.table(cols)


def _term_std(world: _World, rows: dict[str, np.ndarray]) -> dict[str, float]:
    stds = {f"pair{i}": float(np.std(t)) for i, t in enumerate(rows["pair_terms"])}
    stds["cross"] = float(np.std(rows["cross_term"]))
    stds["logit"] = float(np.std(rows["logit"]))
    return stds


def _interactions(world: _World, term_std: dict[str, float]) -> list[dict]:
    """truth.json's "interactions": each planted term with its fields and expressing blocks."""
    interactions = []
    for i, (a, b) in enumerate(world.pairs):
        interactions.append({
            "name": f"dot_{world.sparse_names[a]}_{world.sparse_names[b]}",
            "kind": "embedding_dot_product",
            "fields": [world.sparse_names[a], world.sparse_names[b]],
            "blocks": ["dot", "fm", "dcn", "attention"],
            "logit_std": term_std.get(f"pair{i}", 0.0),
        })
    if world.cross is not None:
        i, j = world.cross
        interactions.append({
            "name": f"cross_{world.dense_names[i]}_{world.dense_names[j]}",
            "kind": "dense_product",
            "fields": [world.dense_names[i], world.dense_names[j]],
            "blocks": ["dcn", "gating"],
            "logit_std": term_std.get("cross", 0.0),
        })
    return interactions


def _generator(world: _World, cfg: SynthConfig) -> dict:
    """truth.json's "generator": the config, which `SynthConfig(**generator)` reproduces. The
    original layout records exactly the fields it always did (byte-identical truth.json);
    the criteo profile records the layout fields it fixes, and no single cardinality."""
    record = asdict(cfg)
    if world.layout.original:
        del record["profile"], record["max_cardinality"]
    elif cfg.profile == "criteo":
        del record["cardinality"]
        record.update(num_sparse=len(world.sparse_names), num_dense=len(world.dense_names),
                      tag_mean_len=0.0)
    return record


def _truth(world: _World, cfg: SynthConfig, days: dict[str, dict[str, float]],
           term_std: dict[str, float]) -> dict:
    extra = {} if world.layout.original else {"cardinalities": dict(zip(world.sparse_names, world.cards))}
    return {
        "generator": _generator(world, cfg),
        "interactions": _interactions(world, term_std),
        "first_order": {"fields": world.sparse_names + world.dense_names
                        + ([TAGS] if world.layout.tags else []),
                        "blocks": ["fc", "mlp"]},
        "noise_std": cfg.noise,
        "logit_std": term_std.get("logit", 0.0),
        "bayes_logloss": {d: v["logloss"] for d, v in days.items()},
        "bayes_ne": {d: v["ne"] for d, v in days.items()},
        "bayes_expected_logloss": {d: v["expected_logloss"] for d, v in days.items()},
        "positive_rate": {d: v["positive_rate"] for d, v in days.items()},
        "definition": "Bayes log-loss: log-loss of the true p = E[sigmoid(logit + eps) | observed "
                      "columns] on the day's realized labels; NE = that / H(mean label of the day)",
        **extra,
    }
