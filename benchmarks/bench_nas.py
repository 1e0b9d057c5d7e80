"""Every searcher over one space against the hand-designed baselines and the Bayes-optimal NE, on
synthetic data with planted interactions.

4 days x `--rows-per-day` rows (seed 0, `--profile` default or criteo): train on days 1-2,
select on day 3 (validation), report day 4 (test); every trial, baseline and retrained proposal
trains with the training defaults, on a local Ray with one worker per core. The baselines (lr,
dlrm, dcnv2, deepfm, autoint) train once, in the first search; every searcher's pick (its
trial of lowest validation NE, baselines it enqueued included) is listed with its test NE, its
gap to the Bayes-optimal test NE, FLOPs, parameters and the search's wall time (planning
included). Goals (issue 17): each pick beats every baseline on test NE at no more FLOPs than
the best baseline, within 1.5% of the Bayes NE.

    python -m benchmarks.bench_nas [--rows-per-day 200000] [--profile default] [--space nasrec]
                                   [--searchers tpe,evolution,oneshot,dnas,distdnas] [--trials 20]
                                   [--oneshot-paths 60]
"""

from __future__ import annotations

import argparse
import json
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from rankitect.data.synth import SynthConfig, generate

BASELINES = ["lr", "dlrm", "dcnv2", "deepfm", "autoint"]


def _config(data: Path, space: str, searcher: str, trials: int, baselines: list[str]) -> dict[str, Any]:
    return {"data": {"path": str(data), "train_dates": "first:2", "valid_dates": "2024-01-03",
                     "test_dates": "last:1"},
            "space": {"name": space}, "searcher": {"name": searcher}, "objectives": ["ne", "flops"],
            "budget": {"trials": trials}, "baselines": baselines, "seed": 0}


def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from rankitect.experiment.executor import ray_session
    from rankitect.experiment.ray_env import loopback_environment
    from rankitect.experiment.run import search

    loopback_environment()
    data = work / "data"
    generate(data, SynthConfig(days=4, rows_per_day=args.rows_per_day, seed=0, profile=args.profile), force=True)
    truth = json.loads((data / "truth.json").read_text())
    out: dict[str, Any] = {"bayes_test_ne": truth["bayes_ne"]["2024-01-04"], "runs": {}, "baselines": {}}
    with ray_session(None):
        for i, searcher in enumerate(args.searchers.split(",")):
            trials = args.oneshot_paths if searcher == "oneshot" else args.trials
            config = _config(data, args.space, searcher, trials, BASELINES if i == 0 else [])
            started = time.perf_counter()
            result = search(config, work / searcher, force=True, progress=False)
            wall = time.perf_counter() - started
            if i == 0:
                out["baselines"] = {n: b for n, b in result.baselines.items() if b.get("status") == "complete"}
            out["runs"][searcher] = {"wall": wall, "pick": result.best, "trials": len(result.trials)}
            print(f"{searcher}: {wall:.0f}s, pick #{result.best['number']} valid NE "
                  f"{result.best['metrics']['ne']:.4f}", flush=True)
        ray.shutdown()
    return out


def report(out: dict[str, Any], args: argparse.Namespace) -> None:
    bayes = out["bayes_test_ne"]

    def row(name: str, entry: dict[str, Any], wall: str) -> list[object]:
        m, test = entry["metrics"], entry["test_metrics"]["ne"]
        return [name, f"{m['ne']:.4f}", f"{test:.4f}", f"{test / bayes - 1:+.2%}", f"{m['flops_per_example']:,}",
                f"{m['params']:,}", wall]

    rows = [row(f"baseline {n}", b, "-") for n, b in out["baselines"].items()]
    for searcher, run in out["runs"].items():
        pick = run["pick"]
        label = f"{searcher} pick #{pick['number']}" + (f" = baseline {pick['baseline']}" if pick.get("baseline") else "")
        rows.append(row(label, pick, f"{run['wall']:.0f}"))
    print_table(f"synthetic ({args.profile}) 4 days x {args.rows_per_day:,} rows, seed 0: train days 1-2, valid day 3, "
                f"test day 4; space {args.space}; training defaults; Bayes-optimal test NE {bayes:.4f}",
                ["model", "valid NE", "test NE", "vs Bayes", "FLOPs/ex", "params", "wall s"], rows)
    if not out["baselines"]:
        return
    done = out["baselines"]
    top = min(done, key=lambda n: done[n]["metrics"]["ne"])
    best_test = min(b["test_metrics"]["ne"] for b in done.values())
    budget = done[top]["metrics"]["flops_per_example"]
    for searcher, run in out["runs"].items():
        pick = run["pick"]
        test, flops = pick["test_metrics"]["ne"], pick["metrics"]["flops_per_example"]
        beats = test < best_test and flops <= budget
        print(f"{searcher}: test NE {test:.4f} vs best baseline {best_test:.4f} ({test / best_test - 1:+.2%}), "
              f"{flops:,} FLOPs vs {top}'s {budget:,}: {'beats every baseline' if beats else 'does NOT beat every baseline'}"
              f"; {test / bayes - 1:+.2%} vs Bayes (goal within +1.5%)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-day", type=int, default=200_000)
    parser.add_argument("--profile", default="default", choices=("default", "criteo"))
    parser.add_argument("--space", default="nasrec", choices=("nasrec", "interactions"))
    parser.add_argument("--searchers", default="tpe,evolution,oneshot,dnas,distdnas")
    parser.add_argument("--trials", type=int, default=20, help="trials of the sampling searchers")
    parser.add_argument("--oneshot-paths", type=int, default=60, help="paths a oneshot search scores on its supernet")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rk-nas-") as work:
        out = measure(Path(work), args)
    report(out, args)


if __name__ == "__main__":
    main()
