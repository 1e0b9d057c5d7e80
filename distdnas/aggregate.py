"""Aggregation of per-shard architecture weights into one choice of modules.

A shard's weights are its mixed-op supernet's final choice probabilities:
{choice name: {str(option): probability}} (the form result.json stores).

- "mean": average each choice's probabilities over the shards, then take the argmax.
- "vote": each shard votes for its argmax option; the most votes win, ties broken by the
  mean probability.
Either way a layer whose chosen module's aggregated weight (mean probability, or share of
votes) is under `threshold` becomes the space's no-op ("skip") when that is a candidate.
Only active choices are decided, in the space's order.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rankitect.space import Choices, SearchSpace

AGGREGATIONS = ("mean", "vote")
NO_OP = "skip"
Weights = Mapping[str, Mapping[str, float]]


def mean_weights(shards: Sequence[Weights]) -> dict[str, dict[str, float]]:
    """Per choice, the mean over shards of each option's probability."""
    out: dict[str, dict[str, float]] = {}
    for name in shards[0]:
        options = shards[0][name]
        out[name] = {o: sum(s[name][o] for s in shards) / len(shards) for o in options}
    return out


def vote_shares(shards: Sequence[Weights]) -> dict[str, dict[str, float]]:
    """Per choice, the share of shards whose argmax is each option."""
    out: dict[str, dict[str, float]] = {}
    for name in shards[0]:
        counts = {o: 0 for o in shards[0][name]}
        for s in shards:
            counts[max(s[name], key=s[name].__getitem__)] += 1
        out[name] = {o: c / len(shards) for o, c in counts.items()}
    return out


def aggregate(space: SearchSpace, shards: Sequence[Weights], how: str, threshold: float = 0.0) -> tuple[Choices, dict[str, dict[str, float]]]:
    """(the aggregated choices, the aggregated weight of every option). ValueError for an
    unknown `how` or no shards."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how=}")
    if not shards:
        raise ValueError("aggregate needs at least one shard")
    mean = mean_weights(shards)
    weights = mean if how == "mean" else vote_shares(shards)
    decided: dict[str, Any] = {}
    for choice in space.choices():
        if not choice.is_active(decided):
            continue
        by_option = {str(o): o for o in choice.options}
        w, m = weights[choice.name], mean[choice.name]
        best = max(w, key=lambda o: (w[o], m[o]))
        if choice.name.endswith(".module") and w[best] < threshold and NO_OP in w:
            best = NO_OP
        decided[choice.name] = by_option[best]
    return space.check_choices(decided), weights
