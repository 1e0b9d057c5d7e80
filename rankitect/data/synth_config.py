"""The synthetic generator's knobs (rankitect.data.synth), apart from the generator: the CLI's
parsers read the defaults without importing numpy or pyarrow."""

from __future__ import annotations

from dataclasses import dataclass

PROFILES = ("default", "criteo")

# 1M ids caps 6 of the 26 columns (C1, C10, C11, C20, C21, C22) and leaves ~6.9M ids in all:
# the generator's per-id state (a permutation, a bias, and latent vectors for the planted
# pairs' fields, float32; Zipf tables) takes ~70 MB plus ~32 MB per planted 1M-id field: a default
# run stays well under 1 GB, while the head of the id distribution is that of the real data.
CRITEO_DEFAULT_CAP = 1_000_000


@dataclass(frozen=True)
class SynthConfig:
    """Difficulty knobs. The defaults separate a linear model from one with interactions.

    `profile` picks the column layout (see `rankitect.data.synth_profiles`): "default" uses
    `num_sparse`, `cardinality`, `num_dense` and the `tags` knobs; "criteo" fixes 26 sparse
    columns with Criteo's cardinalities and 13 dense columns, and has no list column.
    `max_cardinality` caps every sparse column's ids; None: 1,000,000 for "criteo", no cap for
    "default" (whose `cardinality` is already the user's choice). rankitect.data.synth's
    `check_config` checks the values.
    """

    days: int = 4
    rows_per_day: int = 50_000
    seed: int = 0
    start_date: str = "2024-01-01"
    num_sparse: int = 8
    cardinality: int = 20
    zipf: float = 1.05
    num_dense: int = 4
    latent_dim: int = 4
    num_pairs: int = 3
    pair_strength: float = 1.0  # std of each planted dot-product term
    cross_strength: float = 0.6  # weight of the dense cross term
    bias_std: float = 0.4  # std of the per-id first-order effects
    noise: float = 1.0  # std of the unseen logit noise
    drift: float = 0.02  # per-day change of the base rate and latent vectors
    base_ctr: float = 0.2
    tag_cardinality: int = 100
    tag_mean_len: float = 3.0  # 0: no list column
    missing_rate: float = 0.02
    embedding_dim: int = 16
    chunk_rows: int = 100_000
    profile: str = "default"
    max_cardinality: int | None = None
