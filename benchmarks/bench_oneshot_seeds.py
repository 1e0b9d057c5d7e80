"""One-shot search across search seeds: `oneshot` over `interactions` (bench_nas's settings:
synthetic 4 days x 20k rows, train days 1-2, select on day 3, test day 4; 40 paths scored on
the supernet, the top 3 retrained) at several seeds, for the spread a single run hides.

    python -m benchmarks.bench_oneshot_seeds [--seeds 0,1,2,3] [--paths 40]
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import print_table
from rankitect.data.synth import SynthConfig, generate
from rankitect.experiment.run import search


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0,1,2,3")
    parser.add_argument("--paths", type=int, default=40)
    args = parser.parse_args()
    work = Path(tempfile.mkdtemp(prefix="rk-oneshot-"))
    data = work / "data"
    generate(data, SynthConfig(days=4, rows_per_day=20_000, seed=0), force=True)
    rows, tests = [], []
    for seed in (int(s) for s in args.seeds.split(",")):
        config = {"data": {"path": str(data), "train_dates": "first:2", "valid_dates": "2024-01-03",
                           "test_dates": "last:1"},
                  "space": {"name": "interactions", "layers": 3}, "searcher": {"name": "oneshot", "top_k": 3},
                  "objectives": ["ne", "flops"], "budget": {"trials": args.paths},
                  "train": {"epochs": 2, "batch_size": 256, "lr": 0.003}, "baselines": [], "seed": seed}
        result = search(config, work / f"seed{seed}", force=True, progress=False)
        pick = result.best
        tests.append(pick["test_metrics"]["ne"])
        rows.append([seed, f"#{pick['number']}", f"{pick['metrics']['ne']:.4f}", f"{tests[-1]:.4f}",
                     f"{pick['metrics']['flops_per_example']:,}"])
    print_table(f"oneshot over interactions, {args.paths} paths, top 3 retrained; mean test NE "
                f"{statistics.fmean(tests):.4f} (min {min(tests):.4f}, max {max(tests):.4f})",
                ["seed", "pick", "valid NE", "test NE", "FLOPs/ex"], rows)


if __name__ == "__main__":
    main()
