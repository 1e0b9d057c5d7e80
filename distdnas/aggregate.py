"""Aggregation of per-shard architecture weights into one choice of modules.

A shard's weights are its mixed-op supernet's final choice probabilities, one list per choice
in the order of the choice's options: {choice name: [probability of options[0], ...]} (the
`option_probabilities` of a DNAS job), so options are found by position, never by their text.

- "mean": average each choice's probabilities over the shards, then take the argmax.
- "vote": each shard votes for its argmax option; the most votes win, ties broken by the
  mean probability.
Either way a layer whose chosen module's aggregated weight (mean probability, or share of
votes) is under `threshold` becomes the space's no-op ("skip") when that is a candidate.
Only active choices are decided, in the space's order. The aggregated weights come back keyed
by option text, the form result.json shows.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from typing import Any

from rankitect.space import Choices, SearchSpace

AGGREGATIONS = ("mean", "vote")
NO_OP = "skip"
Weights = Mapping[str, Sequence[float]]


def mean_weights(shards: Sequence[Weights]) -> dict[str, list[float]]:
    """Per choice, the mean over shards of each option's probability."""
    return {name: [sum(s[name][i] for s in shards) / len(shards) for i in range(len(shards[0][name]))]
            for name in shards[0]}


def vote_shares(shards: Sequence[Weights]) -> dict[str, list[float]]:
    """Per choice, the share of shards whose argmax is each option."""
    out: dict[str, list[float]] = {}
    for name in shards[0]:
        counts = [0] * len(shards[0][name])
        for s in shards:
            counts[max(range(len(s[name])), key=s[name].__getitem__)] += 1
        out[name] = [c / len(shards) for c in counts]
    return out


def aggregate(space: SearchSpace, shards: Sequence[Weights], how: str,
              threshold: float = 0.0) -> tuple[Choices, dict[str, dict[str, float]]]:
    """(the aggregated choices, the aggregated weight of every option). ValueError for an
    unknown `how` or no shards."""
    if how not in AGGREGATIONS:
        raise ValueError(f"aggregation must be one of {AGGREGATIONS}, got {how=}")
    if not shards:
        raise ValueError("aggregate needs at least one shard")
    mean = mean_weights(shards)
    weights = mean if how == "mean" else vote_shares(shards)
    decided: dict[str, Any] = {}
    shown: dict[str, dict[str, float]] = {}
    for choice in space.choices():
        if choice.name not in weights:
            continue
        w, m = weights[choice.name], mean[choice.name]
        shown[choice.name] = {str(o): w[i] for i, o in enumerate(choice.options)}
        if not choice.is_active(decided):
            continue
        best = max(range(len(w)), key=lambda i: (w[i], m[i]))
        if choice.name.endswith(".module") and w[best] < threshold and NO_OP in choice.options:
            best = choice.options.index(NO_OP)
        decided[choice.name] = choice.options[best]
    return space.check_choices(decided), shown
