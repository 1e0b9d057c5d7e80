"""`make demo`: synthetic data with planted interactions, a short architecture search on a
local Ray, and its Pareto front next to the baselines and the Bayes-optimal NE; then the best
model exported (with int8 embedding tables) and a few raw rows scored by the artifact's loader.

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
    parser.add_argument("--dashboard", action="store_true",
                        help="run the search's local Ray with its dashboard and print its URL")
    args = parser.parse_args()
    data = args.workdir / "data"
    run("data", "synth", "--out", str(data), "--days", "4", "--rows-per-day", str(args.rows_per_day),
        "--seed", "0", "--force")
    overrides = ["--set", f"data.path={data}"]
    if args.trials:
        overrides += ["--set", f"budget.trials={args.trials}"]
    run("search", "--config", str(CONFIG), "--out", str(args.workdir / "search"), "--force", *overrides,
        *(["--dashboard"] if args.dashboard else []))
    print(f"\nThe best architecture is in {args.workdir / 'search' / 'best'} (arch.json, checkpoint.pt); "
          f"the front is plotted in {args.workdir / 'search' / 'pareto.png'}.\n")
    export = args.workdir / "export"
    run("export", "--run", str(args.workdir / "search"), "--out", str(export), "--int8", "--force")
    score_raw_rows(export, data, args.workdir / "raw_rows.jsonl")
    print("\n" + verdict(json.loads((args.workdir / "search" / "result.json").read_text())))
    return 0


def verdict(result: dict) -> str:
    """Did the search's pick beat every baseline on test NE at no more FLOPs than the best
    baseline (the one with the lowest validation NE)? Said plainly either way, with the margin."""
    from rankitect.experiment.report import best_baseline

    best, leader = result.get("best"), best_baseline(result)
    if best is None or leader is None:
        return "The demo's search has no complete trial or no complete baseline to compare."
    top, top_entry = leader
    baselines = {n: b for n, b in result.get("baselines", {}).items() if b.get("status") == "complete"}
    test, flops = best["test_metrics"]["ne"], best["metrics"]["flops_per_example"]
    best_test = min(b["test_metrics"]["ne"] for b in baselines.values())
    budget = top_entry["metrics"]["flops_per_example"]
    margin = f"{test / best_test - 1:+.2%}"
    if test < best_test and flops <= budget:
        return (f"The pick #{best['number']} beats every baseline on test NE: {test:.4f} against the best baseline's "
                f"{best_test:.4f} ({margin}), at {flops:,} FLOPs/ex, no more than {top}'s {budget:,}.")
    return (f"This run's pick #{best['number']} does NOT beat every baseline at no more FLOPs: test NE {test:.4f} "
            f"against the best baseline's {best_test:.4f} ({margin}), {flops:,} FLOPs/ex against {top}'s {budget:,}.")


def score_raw_rows(export: Path, data: Path, rows_file: Path, count: int = 5) -> None:
    """A few raw rows of the last day, scored by the artifact's own loader in a plain process."""
    import pyarrow.parquet as pq

    last = sorted(data.glob("date=*"))[-1]
    rows = pq.read_table(sorted(last.glob("*.parquet"))[0]).slice(0, count).to_pylist()
    rows_file.write_text("".join(json.dumps(r) + "\n" for r in rows))
    command = [sys.executable, str(export / "rankitect_serving.py"), str(export), str(rows_file)]
    print(f"\n$ python {shlex.join(command[1:])}", flush=True)
    proc = subprocess.run(command, capture_output=True, text=True)
    if proc.returncode:
        print(proc.stderr, file=sys.stderr)
        sys.exit(proc.returncode)
    for row, score in zip(rows, proc.stdout.split()):
        print(f"  label {row['label']}  click probability {score}")


if __name__ == "__main__":
    sys.exit(main())
