"""Sampling search on synthetic data with planted interactions, measured in one run.

(1) Each searcher, 40 trials over the `nasrec` space (3 blocks), NE and FLOPs objectives,
    against the five baselines trained with the same settings on the same dates (train on
    days 1-2, select on day 3, report day 4). The architecture reported for a searcher is
    chosen on validation NE only: the best trial with no more FLOPs than the best baseline.
(2) Trial throughput with 1 and 2 workers (a local Ray of 1 and of 2 CPUs, 1 CPU per trial).
(3) Scheduling overhead per trial (submit to result, minus the worker's own time) against
    the trial's training time.
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from rankitect.data.synth import SynthConfig, generate
from rankitect.experiment.run import search

SEARCHERS = ("random", "tpe", "nsga2", "evolution")


def _config(data: Path, searcher: str, trials: int, baselines: list[str]) -> dict[str, Any]:
    return {"data": {"path": str(data), "train_dates": "first:2", "valid_dates": "2024-01-03",
                     "test_dates": "last:1"},
            "space": {"name": "nasrec", "blocks": 3},
            "searcher": {"name": searcher},
            "objectives": ["ne", "flops"],
            "budget": {"trials": trials},
            "train": {"epochs": 2, "batch_size": 256, "lr": 0.003},
            "baselines": baselines, "seed": 0}


def _pick(trials: list[dict[str, Any]], max_flops: float) -> dict[str, Any] | None:
    """Lowest validation NE among complete trials within `max_flops` (selection on validation only)."""
    fits = [t for t in trials if t["status"] == "complete" and t["metrics"]["flops_per_example"] <= max_flops]
    return min(fits, key=lambda t: t["metrics"]["ne"]) if fits else None


def quality(work: Path, trials: int, searchers: tuple[str, ...]) -> dict[str, Any]:
    import ray

    from rankitect.experiment.executor import ray_session
    from rankitect.experiment.ray_env import loopback_environment

    loopback_environment()
    data = work / "data"
    generate(data, SynthConfig(days=4, rows_per_day=50_000, seed=0), force=True)
    truth = json.loads((data / "truth.json").read_text())
    out: dict[str, Any] = {"bayes_test_ne": truth["bayes_ne"]["2024-01-04"], "searchers": {}}
    with ray_session(None):
        baselines = search(_config(data, "random", 1, ["lr", "dlrm", "dcnv2", "deepfm", "autoint"]),
                           work / "baselines", force=True, progress=False).baselines
        out["baselines"] = baselines
        best_name = min(baselines, key=lambda n: baselines[n]["metrics"]["ne"])
        out["best_baseline"] = best_name
        budget = baselines[best_name]["metrics"]["flops_per_example"]
        for name in searchers:
            started = time.perf_counter()
            result = search(_config(data, name, trials, []), work / name, force=True, progress=False)
            out["searchers"][name] = {"wall": time.perf_counter() - started, "pick": _pick(result.trials, budget),
                                      "best": result.best, "front": len(result.pareto)}
        ray.shutdown()
    return out


def throughput(work: Path, trials: int) -> dict[int, dict[str, float]]:
    """Trials per minute and per-trial times with a local Ray of 1 and of 2 CPUs."""
    import ray

    data = work / "data_small"
    generate(data, SynthConfig(days=4, rows_per_day=50_000, seed=1), force=True)
    out = {}
    for workers in (1, 2):
        ray.init(num_cpus=workers, include_dashboard=False, _node_ip_address="127.0.0.1",
                 logging_level="WARNING", log_to_driver=False)
        try:
            started = time.perf_counter()
            result = search(_config(data, "random", trials, []), work / f"tp{workers}", force=True, progress=False)
            wall = time.perf_counter() - started
        finally:
            ray.shutdown()
        done = [t for t in result.trials if t["status"] == "complete"]
        train = [t["seconds"] for t in done]
        overhead = [t["wall_seconds"] - t["seconds"] for t in done]
        out[workers] = {"wall": wall, "trials_per_minute": len(done) / wall * 60,
                        "median_trial_seconds": statistics.median(train),
                        "median_overhead_seconds": statistics.median(overhead),
                        "max_overhead_seconds": max(overhead)}
    return out


def _row(name: str, entry: dict[str, Any] | None, extra: str = "") -> list[Any]:
    if entry is None:
        return [name, "-", "-", "-", extra]
    return [name, entry["metrics"]["ne"], entry["test_metrics"]["ne"], entry["metrics"]["flops_per_example"], extra]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--trials", type=int, default=40)
    parser.add_argument("--searchers", default=",".join(SEARCHERS))
    parser.add_argument("--throughput-trials", type=int, default=8)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rk-bench-search-"))
    q = quality(work, args.trials, tuple(args.searchers.split(",")))
    rows = [_row(f"baseline {n}", e) for n, e in sorted(q["baselines"].items())]
    for name, s in q["searchers"].items():
        rows.append(_row(f"{name}: pick", s["pick"], f"wall {s['wall']:.0f} s, front {s['front']}"))
        rows.append(_row(f"{name}: best valid", s["best"], f"trial #{s['best']['number']}" if s["best"] else ""))
    print_table(f"(1) {args.trials} trials per searcher, nasrec space, synthetic 4 x 50k rows "
                f"(Bayes-optimal test NE {q['bayes_test_ne']:.4f})",
                ["architecture", "valid NE", "test NE", "FLOPs/ex", ""], rows)
    best = q["baselines"][q["best_baseline"]]
    best_baseline_test = min(e["test_metrics"]["ne"] for e in q["baselines"].values())
    print(f"best baseline: {q['best_baseline']} (valid NE {best['metrics']['ne']:.4f}, "
          f"test NE {best['test_metrics']['ne']:.4f}, {best['metrics']['flops_per_example']:,} FLOPs)")
    for name, s in q["searchers"].items():
        if s["pick"]:
            pick = s["pick"]
            beats = pick["test_metrics"]["ne"] < best_baseline_test
            print(f"{name}: pick #{pick['number']} test NE {pick['test_metrics']['ne']:.4f} vs best baseline test NE "
                  f"{best_baseline_test:.4f} ({'lower' if beats else 'NOT lower'}) at "
                  f"{pick['metrics']['flops_per_example']:,} <= {best['metrics']['flops_per_example']:,} FLOPs")
    t = throughput(work, args.throughput_trials)
    print_table(f"(2, 3) {args.throughput_trials} random trials, 50k rows/day, 1 CPU per trial",
                ["workers", "trials/min", "wall s", "median trial s", "median overhead s", "max overhead s"],
                [[w, v["trials_per_minute"], v["wall"], v["median_trial_seconds"], v["median_overhead_seconds"],
                  v["max_overhead_seconds"]] for w, v in t.items()])
    print(f"throughput 2 workers / 1 worker = {t[2]['trials_per_minute'] / t[1]['trials_per_minute']:.2f}x; "
          f"scheduling overhead / training time (median, 2 workers) = "
          f"{t[2]['median_overhead_seconds'] / t[2]['median_trial_seconds']:.3f}")


if __name__ == "__main__":
    main()
