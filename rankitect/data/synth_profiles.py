"""Column layouts ("profiles") of the synthetic generator, and its Zipf id sampler.

A profile fixes which columns `rankitect.data.synth` writes and how many ids each has:

- ``default``: `num_sparse` columns C1..Cn sharing one `cardinality`, `num_dense` columns
  I1..In and, when `tag_mean_len` > 0, the list column `tags`. This is the generator's
  original layout, and its output is byte-identical to that of earlier versions.
- ``criteo``: the shape of the Criteo 1TB click logs: 13 dense columns I1..I13 and 26 sparse
  columns C1..C26 with Criteo's per-column cardinalities, each capped at `max_cardinality`
  (default `CRITEO_DEFAULT_CAP`). It has no list column, as Criteo has none, so the
  `tags` knobs do not apply; nor do `num_sparse`, `cardinality` and `num_dense`.

Ids are identity-hashed: id 0 means missing, ids 1..card are real, and a column's hash size
is card + 1.
"""

from __future__ import annotations

from dataclasses import dataclass, fields
from typing import TYPE_CHECKING

import numpy as np

from rankitect.data.synth_config import CRITEO_DEFAULT_CAP, PROFILES
from rankitect.errors import ConfigError

if TYPE_CHECKING:
    from rankitect.data.synth_config import SynthConfig

# Rows per embedding table of the Criteo 1TB click logs (C1..C26), the 26 numbers that
# torchrec's DLRM example passes as --num_embeddings_per_feature: pytorch/torchrec,
# examples/dlrm/README.MD ("Reproduce", commit 488c02b0); the same list is the default of
# --num_embeddings_per_feature in torchrec's examples/dlrm/dlrm_main.py (MLPerf DLRM).
CRITEO_CARDINALITIES = (
    45833188, 36746, 17245, 7413, 20243, 3, 7114, 1441, 62, 29275261, 1572176, 345138, 10,
    2209, 11267, 128, 4, 974, 14, 48937457, 11316796, 40094537, 452104, 12606, 104, 35,
)
CRITEO_NUM_DENSE = 13

# Fields of SynthConfig that the criteo profile sets itself; a config may leave them at their
# defaults or give the profile's own value, anything else is refused rather than ignored.
_CRITEO_FIXED = {"num_sparse": len(CRITEO_CARDINALITIES), "num_dense": CRITEO_NUM_DENSE,
                 "tag_mean_len": 0.0}


@dataclass(frozen=True)
class Layout:
    """The columns a profile writes. `original`: the layout is the original generator's (the
    default profile with no binding cap), whose random stream and float64 per-id effects are
    kept so that its output stays byte-identical to earlier versions. Other layouts store the
    per-id effects as float32 (the truth is computed from the stored values, so it stays
    exact) and draw latent vectors only for the fields of planted pairs."""

    profile: str
    sparse_names: tuple[str, ...]
    cardinalities: tuple[int, ...]
    dense_names: tuple[str, ...]
    tags: bool
    original: bool

    @property
    def float_dtype(self) -> type:
        """Storage dtype of per-id biases and latent vectors."""
        return np.float64 if self.original else np.float32


def check_profile(cfg: SynthConfig) -> None:
    """ConfigError naming the field and value if `cfg`'s profile, cap or layout fields are off."""
    if cfg.profile not in PROFILES:
        raise ConfigError(f"synth: profile={cfg.profile!r} is unknown (valid: {', '.join(PROFILES)})")
    if cfg.max_cardinality is not None and (isinstance(cfg.max_cardinality, bool)
                                            or not isinstance(cfg.max_cardinality, int)
                                            or cfg.max_cardinality < 2):
        raise ConfigError(f"synth: max_cardinality={cfg.max_cardinality!r} is out of range "
                          f"(an integer >= 2)")
    if cfg.profile == "criteo":
        defaults = {f.name: f.default for f in fields(cfg)}
        for name, value in _CRITEO_FIXED.items():
            if getattr(cfg, name) not in (defaults[name], value):
                raise ConfigError(f"synth: {name}={getattr(cfg, name)!r} does not apply to "
                                  f"profile='criteo', which fixes it at {value!r}")
        if cfg.cardinality != defaults["cardinality"]:
            raise ConfigError(f"synth: cardinality={cfg.cardinality!r} does not apply to "
                              f"profile='criteo' (Criteo's per-column cardinalities; cap them "
                              f"with max_cardinality)")


def layout(cfg: SynthConfig) -> Layout:
    """The columns and per-column cardinalities of `cfg` (already checked)."""
    if cfg.profile == "criteo":
        cap = cfg.max_cardinality if cfg.max_cardinality is not None else CRITEO_DEFAULT_CAP
        cards = tuple(min(c, cap) for c in CRITEO_CARDINALITIES)
        return Layout("criteo", tuple(f"C{i + 1}" for i in range(len(cards))), cards,
                      tuple(f"I{i + 1}" for i in range(CRITEO_NUM_DENSE)), tags=False,
                      original=False)
    card = cfg.cardinality if cfg.max_cardinality is None else min(cfg.cardinality, cfg.max_cardinality)
    return Layout("default", tuple(f"C{i + 1}" for i in range(cfg.num_sparse)),
                  (card,) * cfg.num_sparse, tuple(f"I{i + 1}" for i in range(cfg.num_dense)),
                  tags=cfg.tag_mean_len > 0, original=card == cfg.cardinality)


def zipf_probs(n: int, a: float) -> np.ndarray:
    """P(rank r) proportional to r^-a over ranks 1..n."""
    w = np.arange(1, n + 1, dtype=np.float64) ** -a
    return w / w.sum()


class ZipfSampler:
    """Zipf-distributed ranks 0..n-1 by inverse CDF: one cumulative table per distinct `n`
    (8 bytes per id, shared by columns of equal cardinality) and a binary search per draw.

    Draws equal `rng.choice(n, size, p=zipf_probs(n, a))` (numpy builds the same table and
    searches it with one `rng.random(size)`), without re-validating `p` on every call. Not
    thread-safe.
    """

    def __init__(self, a: float) -> None:
        self.a = a
        self._cdf: dict[int, np.ndarray] = {}

    def draw(self, rng: np.random.Generator, n: int, size: int) -> np.ndarray:
        """`size` int64 ranks in 0..n-1, rank 0 the most likely."""
        cdf = self._cdf.get(n)
        if cdf is None:
            cdf = zipf_probs(n, self.a).cumsum()
            cdf /= cdf[-1]
            self._cdf[n] = cdf
        return cdf.searchsorted(rng.random(size), side="right")


def permutation(rng: np.random.Generator, n: int) -> np.ndarray:
    """A random permutation of 0..n-1, stored as int32 where it fits (same draws as int64)."""
    perm = rng.permutation(n)
    return perm.astype(np.int32) if n <= np.iinfo(np.int32).max else perm
