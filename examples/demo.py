"""`make demo`: synthetic data with planted interactions, a short architecture search on a
local Ray, and its Pareto front next to the baselines and the Bayes-optimal NE.

Everything runs through the `rankitect` command a user would type; each command is printed.
"""

from __future__ import annotations

import argparse
import shlex
import subprocess
import sys
from pathlib import Path

RANKITECT = str(Path(sys.executable).parent / "rankitect")
CONFIG = Path(__file__).resolve().parent / "configs" / "demo.yaml"


def run(*args: str) -> None:
    """Run one command; stop the demo with its exit code if it fails (it printed why)."""
    print("$ rankitect " + shlex.join(args), flush=True)
    code = subprocess.run([RANKITECT, *args]).returncode
    if code:
        sys.exit(code)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--workdir", type=Path, default=Path(".demo"))
    parser.add_argument("--rows-per-day", type=int, default=50_000)
    parser.add_argument("--trials", type=int, default=None, help="override budget.trials")
    args = parser.parse_args()
    data = args.workdir / "data"
    run("data", "synth", "--out", str(data), "--days", "4", "--rows-per-day", str(args.rows_per_day),
        "--seed", "0", "--force")
    overrides = ["--set", f"data.path={data}"]
    if args.trials:
        overrides += ["--set", f"budget.trials={args.trials}"]
    run("search", "--config", str(CONFIG), "--out", str(args.workdir / "search"), "--force", *overrides)
    print(f"\nThe best architecture is in {args.workdir / 'search' / 'best'} (arch.json, checkpoint.pt); "
          f"the front is plotted in {args.workdir / 'search' / 'pareto.png'}.")
    return 0


if __name__ == "__main__":
    sys.exit(main())
