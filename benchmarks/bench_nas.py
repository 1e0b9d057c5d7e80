"""One-shot and DNAS searches against the TPE search, on synthetic data with planted interactions.

The settings are those of bench_search but with 4x the rows: 4 days x 200k rows (seed 0), train
on days 1-2, select on day 3 (validation), report day 4 (test); every trial trains 2 epochs,
batch 256, lr 3e-3, on a local Ray with one worker per core. TPE searches the nasrec space
(3 blocks) as in bench_search; one-shot and DNAS the interactions space (3 layers). Each searcher's pick is its trial
with the lowest validation NE; the table gives its test NE, the gap to the Bayes-optimal test
NE, FLOPs and the wall time of the whole search (planning included). A second one-shot run
retrains `--calibration` more sub-architectures from scratch to measure the Kendall tau between
the supernet's ranking (inherited weights) and the from-scratch ranking.

    python -m benchmarks.bench_nas [--rows-per-day 200000] [--tpe-trials 40] [--oneshot-trials 300]
                                   [--calibration 24] [--only tpe oneshot dnas]
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
from rankitect.experiment.run import search

INTERACTIONS = {"name": "interactions", "layers": 3}


def _config(data: Path, space: dict[str, Any], searcher: dict[str, Any], trials: int) -> dict[str, Any]:
    return {"data": {"path": str(data), "train_dates": "first:2", "valid_dates": "2024-01-03",
                     "test_dates": "last:1"},
            "space": space, "searcher": searcher, "objectives": ["ne", "flops"], "budget": {"trials": trials},
            "train": {"epochs": 2, "batch_size": 256, "lr": 0.003}, "baselines": [], "seed": 0}


def _run(name: str, config: dict[str, Any], out: Path) -> dict[str, Any]:
    started = time.perf_counter()
    result = search(config, out, force=True, progress=False)
    wall = time.perf_counter() - started
    pick = min((t for t in result.trials if t["status"] == "complete"), key=lambda t: t["metrics"]["ne"])
    print(f"{name}: {wall:.0f}s, trial #{pick['number']} valid NE {pick['metrics']['ne']:.4f}", flush=True)
    return {"wall": wall, "pick": pick, "trials": len(result.trials), "planning": result.planning}


def measure(work: Path, args: argparse.Namespace) -> dict[str, Any]:
    import ray

    from rankitect.experiment.executor import ray_session
    from rankitect.experiment.ray_env import loopback_environment

    loopback_environment()
    data = work / "data"
    generate(data, SynthConfig(days=4, rows_per_day=args.rows_per_day, seed=0), force=True)
    truth = json.loads((data / "truth.json").read_text())
    out: dict[str, Any] = {"bayes_test_ne": truth["bayes_ne"]["2024-01-04"], "rows": args.rows_per_day, "runs": {}}
    runs = {
        "tpe (nasrec)": _config(data, {"name": "nasrec", "blocks": 3}, {"name": "tpe"}, args.tpe_trials),
        "oneshot": _config(data, INTERACTIONS, {"name": "oneshot", "top_k": 3}, args.oneshot_trials),
        "dnas": _config(data, INTERACTIONS, {"name": "dnas"}, 1),
        "oneshot + calibration": _config(data, INTERACTIONS, {"name": "oneshot", "top_k": 3,
                                                              "calibration": args.calibration},
                                         args.oneshot_trials),
    }
    with ray_session(None):
        for i, (name, config) in enumerate(runs.items()):
            if args.only and name.split()[0] not in args.only:
                continue
            out["runs"][name] = _run(name, config, work / f"run{i}")
        ray.shutdown()
    return out


def report(out: dict[str, Any]) -> None:
    bayes = out["bayes_test_ne"]
    print(f"# synthetic 4 days x {out['rows']:,} rows (seed 0): train days 1-2, valid day 3, test day 4; "
          f"Bayes-optimal test NE {bayes:.4f}")
    rows = []
    for name, run in out["runs"].items():
        pick = run["pick"]
        test = pick["test_metrics"]["ne"]
        rows.append([name, run["trials"], f"#{pick['number']}", f"{pick['metrics']['ne']:.4f}", f"{test:.4f}",
                     f"{100 * (test / bayes - 1):+.1f}%", f"{pick['metrics']['flops_per_example']:,}",
                     f"{run['wall']:.0f}"])
    print_table("Pick = lowest validation NE; wall = the whole search (planning + retraining)",
                ["searcher", "trained", "pick", "valid NE", "test NE", "vs Bayes", "FLOPs/ex", "wall s"], rows)
    tpe = out["runs"].get("tpe (nasrec)")
    for name in ("oneshot", "dnas"):
        run = out["runs"].get(name)
        if tpe and run:
            print(f"{name} / tpe: wall {run['wall'] / tpe['wall']:.2f}, test NE "
                  f"{run['pick']['test_metrics']['ne'] - tpe['pick']['test_metrics']['ne']:+.4f}")
    if "dnas" in out["runs"]:
        for lam in out["runs"]["dnas"]["planning"]["lambdas"]:
            print(f"dnas lambda={lam['lambda']:g}: derived {lam['flops']:,} FLOPs/ex "
                  f"(expected {lam['expected_flops']:,.0f}), supernet {lam['seconds']:.0f}s, {lam['choices']}")
    calibrated = out["runs"].get("oneshot + calibration")
    if calibrated and calibrated["planning"].get("agreement"):
        a = calibrated["planning"]["agreement"]
        print(f"oneshot supernet vs from-scratch ranking over {a['archs']} architectures: Kendall tau "
              f"{a['kendall_tau']:+.3f}, Spearman {a['spearman']:+.3f}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--rows-per-day", type=int, default=200_000)
    parser.add_argument("--tpe-trials", type=int, default=40)
    parser.add_argument("--oneshot-trials", type=int, default=300, help="sub-architectures scored on the supernet")
    parser.add_argument("--calibration", type=int, default=24)
    parser.add_argument("--only", nargs="*", default=None, help="tpe, oneshot, dnas")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rk-nas-") as work:
        out = measure(Path(work), args)
    report(out)


if __name__ == "__main__":
    main()
