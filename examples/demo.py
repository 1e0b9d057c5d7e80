"""`make demo`: synthetic data with planted interactions, two baselines, metrics next to Bayes NE.

Everything runs through the `rankitect` command a user would type; each command is printed.
"""

from __future__ import annotations

import argparse
import json
import shlex
import subprocess
import sys
from pathlib import Path

RANKITECT = str(Path(sys.executable).parent / "rankitect")


def run(*args: str) -> None:
    print("$ rankitect " + shlex.join(args), flush=True)
    subprocess.run([RANKITECT, *args], check=True)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path(".demo"))
    parser.add_argument("--rows-per-day", type=int, default=50_000)
    parser.add_argument("--models", default="lr,dlrm", help="comma-separated baselines to train")
    args = parser.parse_args()
    data = args.workdir / "data"
    run("data", "synth", "--out", str(data), "--days", "4", "--rows-per-day", str(args.rows_per_day),
        "--seed", "0", "--force")
    run("data", "inspect", str(data))
    truth = json.loads((data / "truth.json").read_text())
    models = [m for m in args.models.split(",") if m]
    for model in models:
        run("train", "--data", str(data), "--arch", model, "--train-dates", "first:3",
            "--eval-dates", "last:1", "--out", str(args.workdir / "runs" / model),
            "--epochs", "3", "--batch-size", "256", "--lr", "3e-3", "--force")
    eval_date = sorted(truth["bayes_ne"])[-1]
    bayes = truth["bayes_ne"][eval_date]
    print(f"\nEvaluated on {eval_date} (trained on the 3 days before). Planted: "
          + ", ".join(i["name"] for i in truth["interactions"]))
    print(f"{'model':<14}{'NE':>8}{'vs Bayes':>10}{'AUC':>8}{'calib.':>8}{'FLOPs/ex':>11}{'params':>10}{'ex/s':>10}")
    for model in models:
        m = json.loads((args.workdir / "runs" / model / "metrics.json").read_text())
        print(f"{model:<14}{m['ne']:>8.4f}{m['ne'] / bayes - 1:>+10.1%}{m['auc']:>8.4f}"
              f"{m['calibration']:>8.3f}{m['flops_per_example']:>11,}{m['params']:>10,}"
              f"{m['examples_per_second']:>10,.0f}")
    print(f"{'Bayes-optimal':<14}{bayes:>8.4f}{'':>10}  (true click probabilities; no model can do better)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
