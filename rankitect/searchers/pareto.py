"""Pareto fronts, the one implementation: non-domination ranks of points whose every
coordinate is minimized (negate a maximized objective first)."""

from __future__ import annotations

from collections.abc import Sequence

Point = Sequence[float]


def dominates(a: Point, b: Point) -> bool:
    """`a` is no worse than `b` anywhere and better somewhere."""
    return all(x <= y for x, y in zip(a, b)) and any(x < y for x, y in zip(a, b))


def pareto_ranks(points: Sequence[Point]) -> list[int]:
    """Non-domination rank of each point: 0 on the front, 1 on the front of the rest, ..."""
    ranks = [0] * len(points)
    remaining = set(range(len(points)))
    rank = 0
    while remaining:
        front = {i for i in remaining if not any(dominates(points[j], points[i]) for j in remaining if j != i)}
        for i in front:
            ranks[i] = rank
        remaining -= front
        rank += 1
    return ranks


def minimized(values: Sequence[float], directions: Sequence[str]) -> tuple[float, ...]:
    """`values` with every "maximize" objective negated, so that lower is better everywhere."""
    return tuple(v if d == "minimize" else -v for v, d in zip(values, directions))
