"""How long `rankitect --help` and every subcommand's `--help` take (goal: under 0.5 s each).

Each is run as a new process (`.venv/bin/rankitect ...`, as a user types it) `--rounds` times,
the commands interleaved; the table gives the median and the slowest round, beside a bare
`python -c pass` measured in the same rounds (the interpreter's own start). What a help
imports is printed too: torch, optuna, ray, grpc, numpy or pyarrow there is the regression
this guards against (the parsers must build from light modules).

    python -m benchmarks.bench_cli [--rounds 5]
"""

from __future__ import annotations

import argparse
import statistics
import subprocess
import sys
import time
from pathlib import Path

from benchmarks.common import print_table

GOAL_S = 0.5
HEAVY = ("torch", "optuna", "ray", "grpc", "numpy", "pyarrow", "pandas")


def commands() -> list[list[str]]:
    """[] (the top-level help) and every subcommand's argv, nested ones included."""
    from launcher.cli import build_parser

    def walk(parser: argparse.ArgumentParser, prefix: list[str]) -> list[list[str]]:
        out = [prefix]
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for name, child in action.choices.items():
                    out += walk(child, [*prefix, name])
        return out

    return walk(build_parser(), [])


def _seconds(argv: list[str]) -> float:
    began = time.perf_counter()
    subprocess.run(argv, check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    return time.perf_counter() - began


def imported_heavy(argv: list[str]) -> list[str]:
    """The heavy packages a help's parser imports (run in a process of its own)."""
    code = ("import sys\nfrom launcher.cli import main\ntry:\n    main(sys.argv[1:] + ['--help'])\n"
            "except SystemExit:\n    pass\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules), file=sys.stderr)")
    done = subprocess.run([sys.executable, "-c", code, *argv], capture_output=True, text=True, check=True)
    return [m for m in done.stderr.strip().splitlines()[-1].split(",") if m] if done.stderr.strip() else []


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--rounds", type=int, default=5, help="runs of each command (default: %(default)s)")
    args = parser.parse_args()
    rankitect = str(Path(sys.executable).parent / "rankitect")
    runs = {"python -c pass": [sys.executable, "-c", "pass"]}
    runs.update({" ".join(["rankitect", *argv, "--help"]): [rankitect, *argv, "--help"] for argv in commands()})
    times: dict[str, list[float]] = {name: [] for name in runs}
    for _ in range(args.rounds):
        for name, argv in runs.items():
            times[name].append(_seconds(argv))
    rows, slow = [], []
    for name, argv in runs.items():
        median = statistics.median(times[name])
        heavy = "-" if name.startswith("python") else (", ".join(imported_heavy(argv[1:-1])) or "none")
        rows.append([name, f"{median:.3f}", f"{max(times[name]):.3f}", heavy])
        if not name.startswith("python") and median >= GOAL_S:
            slow.append(name)
    print_table(f"--help, seconds over {args.rounds} rounds (a new process each)",
                ["command", "median", "slowest", "heavy imports"], rows)
    print(f"goal: every help under {GOAL_S} s (median): {'met' if not slow else 'NOT met: ' + ', '.join(slow)}")


if __name__ == "__main__":
    main()
