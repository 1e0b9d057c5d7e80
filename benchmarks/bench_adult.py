"""Searches against the hand-designed models on a real table, ../shared/data/adult.parquet.

The table imported with `rankitect data import` and its defaults; train on the first 5
pseudo-days, select on the 6th, report the last 2. Each searcher runs with the training
defaults (TrainConfig) and the five baselines beside it; every baseline's and every searcher's
pick is listed with its validation and test NE, test AUC, FLOPs and parameters, next to
scikit-learn's logistic regression and LightGBM trained on the same dates
(benchmarks/adult_reference.py; `make setup-bench` installs them; without them those rows are
left out and the run says so).

Goals (issue 17): the pick beats every baseline on test NE at no more FLOPs than the best
baseline, and lands within 5% of LightGBM's test NE; the `lr` baseline within 2% of
scikit-learn's logistic regression.

    python -m benchmarks.bench_adult [--trials 12] [--searchers tpe,evolution] [--space nasrec]
                                     [--oneshot-paths 60]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from benchmarks.tables_real import ADULT_DENSE, ADULT_SPARSE, run_cli

ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult.parquet"
TRAIN, VALID, TEST = "first:5", "2024-01-06", "2024-01-07,2024-01-08"
BASELINES = ["lr", "dlrm", "dcnv2", "deepfm", "autoint"]
SEARCHERS = ("tpe", "evolution", "random", "nsga2", "proxy", "oneshot", "dnas", "distdnas")


def search_config(data: Path, searcher: str, space: str, trials: int, seed: int) -> dict[str, Any]:
    return {"data": {"path": str(data), "train_dates": TRAIN, "valid_dates": VALID, "test_dates": TEST},
            "space": {"name": space}, "searcher": {"name": searcher},
            "objectives": ["ne", "flops"], "budget": {"trials": trials}, "baselines": BASELINES, "seed": seed}


def run_search(data: Path, work: Path, searcher: str, space: str, trials: int, seed: int) -> dict[str, Any]:
    from rankitect.experiment.run import search

    started = time.perf_counter()
    result = search(search_config(data, searcher, space, trials, seed), work / searcher, force=True, progress=False)
    return {"result": result, "seconds": time.perf_counter() - started}


def row(name: str, entry: dict[str, Any], lightgbm: float | None) -> list[object]:
    m, t = entry["metrics"], entry["test_metrics"]
    vs = f"{t['ne'] / lightgbm - 1:+.1%}" if lightgbm else "-"
    return [name, f"{m['ne']:.4f}", f"{t['ne']:.4f}", f"{t['auc']:.4f}", m["flops_per_example"], m["params"], vs]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--trials", type=int, default=12)
    parser.add_argument("--searchers", default="tpe,evolution", help=f"any of {','.join(SEARCHERS)}")
    parser.add_argument("--space", default="nasrec", choices=("nasrec", "interactions"))
    parser.add_argument("--oneshot-paths", type=int, default=60,
                        help="paths a oneshot search scores on its supernet (its budget.trials; it retrains top_k)")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if not ADULT.is_file():
        print(f"skipped: {ADULT} is absent")
        return
    from rankitect.experiment.executor import ray_session
    from rankitect.experiment.ray_env import loopback_environment

    refs: dict[str, dict[str, float]] = {}
    try:
        from benchmarks.adult_reference import load, references
        split = load(ADULT, ADULT_DENSE.split(","), ADULT_SPARSE.split(","))
        refs = references(split, [f"2024-01-0{d}" for d in range(1, 6)], [VALID], TEST.split(","))
    except ImportError as exc:
        print(f"(scikit-learn / LightGBM rows left out: {exc}; `make setup-bench` installs them)")
    lightgbm = refs.get("LightGBM", {}).get("test_ne")
    with tempfile.TemporaryDirectory(prefix="rk-adult-") as tmp:
        work = Path(tmp)
        data = work / "adult"
        run_cli(["data", "import", "--input", str(ADULT), "--label", "label", "--dense", ADULT_DENSE,
                 "--sparse", ADULT_SPARSE, "--date-column", "day", "--out", str(data), "--force"])
        loopback_environment()
        runs = {}
        with ray_session(None):
            for searcher in args.searchers.split(","):
                trials = args.oneshot_paths if searcher == "oneshot" else args.trials
                runs[searcher] = run_search(data, work, searcher, args.space, trials, args.seed)
    first = next(iter(runs.values()))["result"]
    rows = [row(f"baseline {n}", b, lightgbm) for n, b in first.baselines.items() if b.get("status") == "complete"]
    for searcher, r in runs.items():
        best = r["result"].best
        if best is not None:
            label = f"{searcher} pick #{best.get('number')} ({args.space}, {r['seconds']:.0f} s)"
            rows.append(row(label + (f" = baseline {best['baseline']}" if best.get("baseline") else ""), best, lightgbm))
    for name, ref in refs.items():
        rows.append([name, f"{ref['valid_ne']:.4f}", f"{ref['test_ne']:.4f}", f"{ref['test_auc']:.4f}", "-", "-",
                     f"{ref['test_ne'] / lightgbm - 1:+.1%}" if lightgbm else "-"])
    print_table(f"adult.parquet imported with defaults; train {TRAIN}, valid {VALID}, test {TEST}; "
                f"{args.trials} trials, seed {args.seed}, training defaults",
                ["model", "valid NE", "test NE", "test AUC", "FLOPs/ex", "params", "vs LightGBM"], rows)
    goals(first.baselines, runs, refs)


def goals(baselines: dict[str, Any], runs: dict[str, Any], refs: dict[str, dict[str, float]]) -> None:
    done = {n: b for n, b in baselines.items() if b.get("status") == "complete"}
    top = min(done, key=lambda n: done[n]["metrics"]["ne"])
    best_test = min(b["test_metrics"]["ne"] for b in done.values())
    budget = done[top]["metrics"]["flops_per_example"]
    print()
    for searcher, r in runs.items():
        best = r["result"].best
        test, flops = best["test_metrics"]["ne"], best["metrics"]["flops_per_example"]
        beats = test < best_test and flops <= budget
        line = (f"{searcher}: pick test NE {test:.4f} vs best baseline {best_test:.4f} ({test / best_test - 1:+.2%}), "
                f"{flops:,} FLOPs vs {top}'s {budget:,}: {'beats every baseline' if beats else 'does NOT beat every baseline'}")
        if "LightGBM" in refs:
            line += f"; {test / refs['LightGBM']['test_ne'] - 1:+.2%} vs LightGBM (goal within +5%)"
        print(line)
    if "scikit-learn LR" in refs and "lr" in done:
        ours, theirs = done["lr"]["test_metrics"]["ne"], refs["scikit-learn LR"]["test_ne"]
        print(f"baseline lr: test NE {ours:.4f} vs scikit-learn LR {theirs:.4f} ({ours / theirs - 1:+.2%}; goal within 2%)")
    print(f"median trial seconds: {statistics.median(t['seconds'] for r in runs.values() for t in r['result'].trials):.1f}")


if __name__ == "__main__":
    main()
