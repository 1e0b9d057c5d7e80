"""Helpers shared by the benchmarks: interleaved timing and a plain table printer."""

from __future__ import annotations

import statistics
import time
from collections.abc import Callable


def interleaved_rates(runs: dict[str, Callable[[], int]], rounds: int) -> dict[str, float]:
    """Median items/s of each callable (returning the items it processed), run in turn per round.

    Interleaving spreads the machine's noise over all contestants instead of favouring one.
    """
    samples: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(rounds):
        for name, fn in runs.items():
            start = time.perf_counter()
            items = fn()
            samples[name].append(items / (time.perf_counter() - start))
    return {name: statistics.median(values) for name, values in samples.items()}


def print_table(title: str, header: list[str], rows: list[list[object]]) -> None:
    cells = [[str(c) for c in header]] + [[_fmt(c) for c in r] for r in rows]
    widths = [max(len(r[i]) for r in cells) for i in range(len(header))]
    print(f"\n## {title}")
    for i, row in enumerate(cells):
        print("  ".join(c.rjust(w) for c, w in zip(row, widths)))
        if i == 0:
            print("  ".join("-" * w for w in widths))


def _fmt(value: object) -> str:
    if isinstance(value, float):
        return f"{value:,.0f}" if abs(value) >= 1000 else f"{value:.4g}"
    if isinstance(value, int):
        return f"{value:,}"
    return str(value)
