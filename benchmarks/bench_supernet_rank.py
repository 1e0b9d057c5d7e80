"""How well a space's weight-sharing supernet ranks its sub-architectures (issue 17: Kendall tau
>= 0.5 for the nasrec supernet), on a real table and on the synthetic data.

Each run is an ordinary `oneshot` search with the training defaults: the supernet trains on the
train dates, `--paths` sub-architectures proposed by evolution are scored by validation NE with
inherited weights (after `--finetune-steps` Adam steps of the path alone), and the `--top-k`
best plus `--calibration` other scored ones drawn at random are trained from scratch. The
scored paths are a uniform sample of the space by default (`--search random`), so that the
retrained ones span it; evolution concentrates them where the supernet is most sure. Over those retrained architectures the table gives the Kendall
tau and Spearman rho between the supernet's NE and the trained validation NE, beside two
rankings that need no supernet: the dense parameter count and the FLOPs (negated: more is
ranked better). Data: adult (../shared/data/adult.parquet imported with defaults; train the
first 5 pseudo-days, validate on the 6th) or synthetic (`rankitect data synth`, 4 days x
`--rows` rows, seed 0; train days 1-2, validate on day 3).

    python -m benchmarks.bench_supernet_rank [--data adult|synthetic] [--spaces nasrec,interactions]
                                             [--paths 60] [--top-k 4] [--calibration 16]
                                             [--supernet-epochs 4] [--sampling uniform]
"""

from __future__ import annotations

import argparse
import tempfile
import time
from pathlib import Path
from typing import Any

from benchmarks.common import print_table
from benchmarks.tables_real import ADULT_DENSE, ADULT_SPARSE, run_cli
from rankitect.searchers.rank_stats import kendall_tau, spearman

ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult.parquet"
SPLITS = {"adult": ("first:5", "2024-01-06", "2024-01-07,2024-01-08"),
          "synthetic": ("first:2", "2024-01-03", "2024-01-04")}


def prepare(kind: str, work: Path, rows: int) -> Path:
    data = work / kind
    if kind == "adult":
        run_cli(["data", "import", "--input", str(ADULT), "--label", "label", "--dense", ADULT_DENSE,
                 "--sparse", ADULT_SPARSE, "--date-column", "day", "--out", str(data), "--force"])
    else:
        from rankitect.data.synth import SynthConfig, generate

        generate(data, SynthConfig(days=4, rows_per_day=rows, seed=0), force=True)
    return data


def run_space(data: Path, kind: str, space: str, args: argparse.Namespace, out: Path) -> list[object]:
    from rankitect.experiment.run import search

    train, valid, test = SPLITS[kind]
    config = {"data": {"path": str(data), "train_dates": train, "valid_dates": valid, "test_dates": test},
              "space": {"name": space}, "objectives": ["ne", "flops"], "budget": {"trials": args.paths},
              "searcher": {"name": "oneshot", "top_k": args.top_k, "calibration": args.calibration,
                           "supernet_epochs": args.supernet_epochs, "sampling": args.sampling,
                           "search": args.search, "finetune_steps": args.finetune_steps},
              "baselines": [], "seed": args.seed}
    started = time.perf_counter()
    result = search(config, out, force=True, progress=False)
    wall = time.perf_counter() - started
    done = [t for t in result.trials if t["status"] == "complete"]
    trained = [t["metrics"]["ne"] for t in done]
    supernet = [t["proposal"]["supernet_ne"] for t in done]
    params = [-float(t["metrics"]["dense_params"]) for t in done]
    flops = [-float(t["metrics"]["flops_per_example"]) for t in done]
    if args.show:
        for t in sorted(done, key=lambda t: t["proposal"]["supernet_ne"]):
            print(f"  {space} #{t['number']}: supernet NE {t['proposal']['supernet_ne']:.4f}  trained NE "
                  f"{t['metrics']['ne']:.4f}  FLOPs {t['metrics']['flops_per_example']:,}", flush=True)
    pick = result.best or {}
    planning: dict[str, Any] = result.planning or {}
    return [space, len(done), f"{kendall_tau(supernet, trained):+.3f}", f"{spearman(supernet, trained):+.3f}",
            f"{kendall_tau(params, trained):+.3f}", f"{kendall_tau(flops, trained):+.3f}",
            f"{pick.get('metrics', {}).get('ne', float('nan')):.4f}",
            f"{pick.get('test_metrics', {}).get('ne', float('nan')):.4f}",
            f"{planning.get('supernet', {}).get('seconds', 0):.0f}", f"{wall:.0f}"]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=sorted(SPLITS), default="adult")
    parser.add_argument("--spaces", default="nasrec,interactions")
    parser.add_argument("--paths", type=int, default=60)
    parser.add_argument("--top-k", type=int, default=4)
    parser.add_argument("--calibration", type=int, default=16)
    parser.add_argument("--rows", type=int, default=20_000, help="rows per synthetic day")
    parser.add_argument("--supernet-epochs", type=int, default=4)
    parser.add_argument("--sampling", default="uniform", choices=("uniform", "sandwich"))
    parser.add_argument("--search", default="random", choices=("random", "evolution", "tpe"),
                        help="how the scored paths are proposed (random: a uniform sample of the space)")
    parser.add_argument("--finetune-steps", type=int, default=0)
    parser.add_argument("--show", action="store_true", help="print each retrained path's two NEs")
    parser.add_argument("--seed", type=int, default=0)
    args = parser.parse_args()
    if args.data == "adult" and not ADULT.is_file():
        print(f"skipped: {ADULT} is absent")
        return
    from rankitect.experiment.executor import ray_session
    from rankitect.experiment.ray_env import loopback_environment

    rows = []
    with tempfile.TemporaryDirectory(prefix="rk-rank-") as tmp:
        work = Path(tmp)
        data = prepare(args.data, work, args.rows)
        loopback_environment()
        with ray_session(None):
            for space in args.spaces.split(","):
                rows.append(run_space(data, args.data, space, args, work / space))
    print_table(f"supernet ranking on {args.data}: supernet {args.supernet_epochs} epochs ({args.sampling} paths), "
                f"paths proposed by {args.search}, {args.finetune_steps} fine-tuning steps, "
                f"{args.paths} paths scored, top {args.top_k} + {args.calibration} "
                f"random retrained from scratch (training defaults), seed {args.seed}; tau/rho against the "
                f"retrained validation NE",
                ["space", "retrained", "tau supernet", "rho supernet", "tau params", "tau FLOPs", "pick valid NE",
                 "pick test NE", "supernet s", "wall s"], rows)


if __name__ == "__main__":
    main()
