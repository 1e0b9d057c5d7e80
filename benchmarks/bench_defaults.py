"""The training defaults (rankitect.train.config.TrainConfig), measured: `rankitect train --arch
dcnv2` with the defaults against other settings, in one run.

(1) synthetic: `rankitect data synth --days 4 --rows-per-day 50000 --seed 7`, train first:3,
    evaluate last:1; NE against the day's Bayes-optimal NE (the goal: within 5%).
(2) ../shared/data/adult.parquet (when present) imported with defaults, train the first 5
    pseudo-days, validate on the 6th, test on the 7th: NE on both.

Each setting is (epochs, batch size, dense lr); "defaults" passes no flag. Seconds are
training time on this machine.

    python -m benchmarks.bench_defaults [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from pathlib import Path

from benchmarks.common import print_table
from benchmarks.tables_real import ADULT_DENSE, ADULT_SPARSE, run_cli, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETTINGS = {"defaults": [], "1 ep, 1024, lr 1e-3 (old train)": ["--epochs", "1", "--batch-size", "1024", "--lr", "1e-3"],
            "1 ep, 512, lr 3e-3": ["--epochs", "1", "--batch-size", "512", "--lr", "3e-3"],
            "2 ep, 1024, lr 3e-3": ["--epochs", "2", "--batch-size", "1024", "--lr", "3e-3"],
            "3 ep, 512, lr 5e-3": ["--epochs", "3", "--batch-size", "512", "--lr", "5e-3"]}


def measure(data: Path, work: Path, train_dates: str, eval_dates: str, seeds: list[int]) -> dict[str, dict]:
    out = {}
    for i, (label, flags) in enumerate(SETTINGS.items()):
        runs = [train(data, work / f"{data.name}-{i}-{s}", [*flags, "--seed", str(s)], train_dates,
                      eval_dates, arch="dcnv2") for s in seeds]
        out[label] = {"by_date": [r["by_date"] for r in runs], "seconds": statistics.median(r["train_seconds"] for r in runs)}
    return out


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    with tempfile.TemporaryDirectory(prefix="rk-defaults-") as tmp:
        work = Path(tmp)
        synth = work / "synth"
        run_cli(["data", "synth", "--out", str(synth), "--days", "4", "--rows-per-day", "50000", "--seed", "7"])
        truth = json.loads((synth / "truth.json").read_text())
        day = sorted(truth["bayes_ne"])[-1]
        bayes = truth["bayes_ne"][day]
        rows = []
        for label, m in measure(synth, work, "first:3", "last:1", seeds).items():
            ne = statistics.fmean(b[day]["ne"] for b in m["by_date"])
            rows.append([label, f"{ne:.5f}", f"{ne / bayes - 1:+.2%}", f"{m['seconds']:.1f}"])
        print_table(f"(1) dcnv2, synthetic 4 x 50k (seed 7), eval {day}; Bayes NE {bayes:.5f}; seeds {seeds}",
                    ["setting", "NE", "vs Bayes", "train s"], rows)
        adult = SHARED / "adult.parquet"
        if not adult.is_file():
            print(f"(2) skipped: {adult} is absent")
            return
        data = work / "adult"
        run_cli(["data", "import", "--input", str(adult), "--label", "label", "--dense", ADULT_DENSE,
                 "--sparse", ADULT_SPARSE, "--date-column", "day", "--out", str(data), "--force"])
        rows = []
        for label, m in measure(data, work, "first:5", "2024-01-06,2024-01-07", seeds).items():
            valid = statistics.fmean(b["2024-01-06"]["ne"] for b in m["by_date"])
            test = statistics.fmean(b["2024-01-07"]["ne"] for b in m["by_date"])
            rows.append([label, f"{valid:.5f}", f"{test:.5f}", f"{m['seconds']:.1f}"])
        print_table(f"(2) dcnv2, adult imported with defaults, train first:5; seeds {seeds}",
                    ["setting", "valid NE (day 6)", "test NE (day 7)", "train s"], rows)


if __name__ == "__main__":
    main()
