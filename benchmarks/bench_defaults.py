"""The training defaults (rankitect.train.config.TrainConfig), measured: `rankitect train --arch
dcnv2` with the defaults against other settings, in one run.

(1) synthetic: `rankitect data synth --days 5 --rows-per-day 50000 --seed 7`, train first:3,
    validate on day 4, test on day 5; test NE against the day's Bayes-optimal NE (the goal:
    within 5%).
(2) ../shared/data/adult.parquet (when present) imported with defaults, train the first 5
    pseudo-days, validate on the 6th, test on the last 2: NE on both.

Each setting is (epochs at most, early stopping, batch size, dense lr); "defaults" passes no
flag. Early stopping selects on the validation date only. Seconds are training time on this
machine. Architectures: dcnv2 and lr (the registry baselines), and dcnv2 with the dense
columns' quantile buckets as features (`embedding.dense_buckets`).

    python -m benchmarks.bench_defaults [--seeds 0,1]
"""

from __future__ import annotations

import argparse
import json
import statistics
import tempfile
from dataclasses import replace
from pathlib import Path

from benchmarks.common import print_table
from benchmarks.tables_real import ADULT_DENSE, ADULT_SPARSE, run_cli, train

SHARED = Path(__file__).resolve().parents[2] / "shared" / "data"
SETTINGS = {"defaults (20 ep at most, stop after 2 without gain)": [],
            "2 ep, no early stopping (the defaults before)": ["--epochs", "2", "--early-stopping", "0"],
            "10 ep at most, stop after 2": ["--epochs", "10"],
            "20 ep at most, stop after 1": ["--early-stopping", "1"],
            "20 ep at most, stop after 2, lr 1e-2": ["--lr", "1e-2"]}
ARCHS = ("dcnv2", "dcnv2+buckets", "lr")


def _arch(name: str, data: Path, work: Path) -> str:
    """A baseline name, or for NAME+buckets a file of that baseline with embedding.dense_buckets."""
    if not name.endswith("+buckets"):
        return name
    from rankitect.schema import Schema
    from search_spaces import baseline

    arch = baseline(name.removesuffix("+buckets"), Schema.load(data))
    path = work / f"{data.name}-{name}.json"
    replace(arch, embedding={**arch.embedding, "dense_buckets": True}, name=name).save(path)
    return str(path)


def measure(data: Path, work: Path, train_dates: str, valid: str, test: str, seeds: list[int]) -> list[list]:
    """Rows: arch, setting, valid NE, test NE, kept epochs, train seconds (means over seeds)."""
    rows = []
    for arch in ARCHS:
        arch_file = _arch(arch, data, work)
        for i, (label, flags) in enumerate(SETTINGS.items()):
            runs = [train(data, work / f"{data.name}-{arch}-{i}-{s}", [*flags, "--seed", str(s), "--test-dates", test],
                          train_dates, valid, arch=arch_file) for s in seeds]
            rows.append([arch, label, statistics.fmean(r["ne"] for r in runs),
                         statistics.fmean(r["test_metrics"]["ne"] for r in runs),
                         ",".join(f"{r.get('best_epoch', '-')}/{r['epochs_trained']}" for r in runs),
                         statistics.median(r["train_seconds"] for r in runs)])
    return rows


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--seeds", default="0")
    args = parser.parse_args()
    seeds = [int(s) for s in args.seeds.split(",")]
    header = ["arch", "setting", "valid NE", "test NE", "kept/trained epochs", "train s"]
    with tempfile.TemporaryDirectory(prefix="rk-defaults-") as tmp:
        work = Path(tmp)
        synth = work / "synth"
        run_cli(["data", "synth", "--out", str(synth), "--days", "5", "--rows-per-day", "50000", "--seed", "7"])
        truth = json.loads((synth / "truth.json").read_text())
        bayes = truth["bayes_ne"]["2024-01-05"]
        rows = measure(synth, work, "first:3", "2024-01-04", "2024-01-05", seeds)
        print_table(f"(1) synthetic 5 x 50k (seed 7), valid 2024-01-04, test 2024-01-05 (Bayes NE {bayes:.5f}); "
                    f"seeds {seeds}", [*header, "test vs Bayes"], [[*r, f"{r[3] / bayes - 1:+.2%}"] for r in rows])
        adult = SHARED / "adult.parquet"
        if not adult.is_file():
            print(f"(2) skipped: {adult} is absent")
            return
        data = work / "adult"
        run_cli(["data", "import", "--input", str(adult), "--label", "label", "--dense", ADULT_DENSE,
                 "--sparse", ADULT_SPARSE, "--date-column", "day", "--out", str(data), "--force"])
        rows = measure(data, work, "first:5", "2024-01-06", "2024-01-07,2024-01-08", seeds)
        print_table(f"(2) adult imported with defaults, train first:5, valid 2024-01-06, test the last 2; seeds {seeds}",
                    header, rows)


if __name__ == "__main__":
    main()
