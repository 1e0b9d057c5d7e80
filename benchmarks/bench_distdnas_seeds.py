"""Does DistDNAS's pick hold across data seeds? Its default search over each space, per seed.

For every data seed (`--seeds`, default 0,1,2,7) the generator writes 8 days x 50k rows (as
`rankitect data synth --days 8 --rows-per-day 50000 --seed S`: the planted pairs, biases and
drift differ per seed); DistDNAS searches each space (`--spaces`, default interactions and
nasrec) with every default (searcher options, space options, training), training on days 1-6
(one shard per day), selecting on day 7 and testing on day 8, with no baselines. Reported per
(seed, space): the pick's validation and test NE, its gap to day 8's Bayes-optimal NE (goal,
issue 17: within 1.5%), FLOPs and wall time.

Each finished (seed, space) is kept under `--out` (its result.json): a run interrupted and
started again with the same `--out` skips what finished and goes on.

    python -m benchmarks.bench_distdnas_seeds [--seeds 0,1,2,7] [--spaces interactions,nasrec]
                                              [--out bench_out/distdnas_seeds]
"""

from __future__ import annotations

import argparse
import json
import statistics
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from rankitect.data.synth import SynthConfig, generate

DAYS, ROWS_PER_DAY, TEST_DATE = 8, 50_000, "2024-01-08"
GOAL = 0.015


def _config(data: Path, space: str) -> dict[str, Any]:
    return {"data": {"path": str(data), "train_dates": "first:6", "valid_dates": "2024-01-07",
                     "test_dates": TEST_DATE},
            "space": {"name": space}, "searcher": {"name": "distdnas"}, "objectives": ["ne", "flops"],
            "baselines": [], "seed": 0}


def _dataset(out: Path, seed: int) -> tuple[Path, float]:
    """The seed's dataset (written once) and its test day's Bayes-optimal NE."""
    data = out / f"data_seed{seed}"
    if not (data / "truth.json").exists():
        generate(data, SynthConfig(days=DAYS, rows_per_day=ROWS_PER_DAY, seed=seed), force=True)
    return data, json.loads((data / "truth.json").read_text())["bayes_ne"][TEST_DATE]


def _pick_row(run_dir: Path, wall: float | None) -> dict[str, Any]:
    result = json.loads((run_dir / "result.json").read_text())
    best = result["best"]
    return {"valid_ne": best["metrics"]["ne"], "test_ne": best["test_metrics"]["ne"],
            "flops": best["metrics"]["flops_per_example"], "params": best["metrics"]["params"],
            "choice": best.get("choices", {}), "wall": wall}


def measure(out: Path, seeds: list[int], spaces: list[str]) -> list[dict[str, Any]]:
    """One row per (seed, space); a finished one is read back from `out`, not run again."""
    from rankitect.experiment.executor import ray_session
    from rankitect.experiment.ray_env import loopback_environment
    from rankitect.experiment.run import search

    loopback_environment()
    rows = []
    with ray_session(None):
        for seed in seeds:
            data, bayes = _dataset(out, seed)
            for space in spaces:
                run_dir = out / f"seed{seed}_{space}"
                walls = out / f"seed{seed}_{space}.wall"
                if not walls.exists():
                    started = time.perf_counter()
                    search(_config(data, space), run_dir, force=True, progress=False)
                    walls.write_text(f"{time.perf_counter() - started:.1f}")
                row = {"seed": seed, "space": space, "bayes": bayes,
                       **_pick_row(run_dir, float(walls.read_text()))}
                print(f"seed {seed} {space}: test NE {row['test_ne']:.4f} ({row['test_ne'] / bayes - 1:+.2%} vs Bayes), "
                      f"{row['wall']:.0f}s", flush=True)
                rows.append(row)
    return rows


def report(rows: list[dict[str, Any]]) -> None:
    table = [[r["seed"], r["space"], f"{r['valid_ne']:.4f}", f"{r['test_ne']:.4f}", f"{r['bayes']:.4f}",
              f"{r['test_ne'] / r['bayes'] - 1:+.2%}", f"{r['flops']:,}", f"{r['params']:,}", f"{r['wall']:.0f}"]
             for r in rows]
    print_table(f"DistDNAS defaults, synthetic {DAYS} days x {ROWS_PER_DAY:,} rows per data seed: train days 1-6, "
                "valid day 7, test day 8", ["seed", "space", "valid NE", "test NE", "Bayes NE", "vs Bayes",
                                            "FLOPs/ex", "params", "wall s"], table)
    for space in sorted({r["space"] for r in rows}):
        gaps = [r["test_ne"] / r["bayes"] - 1 for r in rows if r["space"] == space]
        within = sum(g <= GOAL for g in gaps)
        print(f"{space}: gap to Bayes mean {statistics.mean(gaps):+.2%}, worst {max(gaps):+.2%}; "
              f"{within} of {len(gaps)} seeds within +{GOAL:.1%}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,7", help="data seeds, comma-separated")
    parser.add_argument("--spaces", default="interactions,nasrec", help="spaces, comma-separated")
    parser.add_argument("--out", default="bench_out/distdnas_seeds", help="folder kept between runs")
    args = parser.parse_args()
    out = Path(args.out)
    out.mkdir(parents=True, exist_ok=True)
    rows = measure(out, [int(s) for s in args.seeds.split(",")], args.spaces.split(","))
    report(rows)


if __name__ == "__main__":
    main()
