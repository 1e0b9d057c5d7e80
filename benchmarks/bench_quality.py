"""NE against the Bayes-optimal NE on synthetic data with planted interactions (default difficulty).

4 days x 50k rows; train on the first 3 days, evaluate on the 4th, for several data seeds.
Targets: DCNv2 NE < 0.9; a model that can express the planted interactions (dot products
between embedding pairs, a product of two dense features) within 3% of the Bayes NE.
"""

from __future__ import annotations

import argparse
import json
import tempfile
from pathlib import Path

from benchmarks.common import print_table
from rankitect.arch import Architecture
from rankitect.data.dataset import Dataset
from rankitect.data.synth import SynthConfig, generate
from rankitect.train import TrainConfig
from rankitect.train.run import train_run
from search_spaces import baseline

ROOT = Path(__file__).resolve().parents[1]
TRAIN = TrainConfig(epochs=4, batch_size=256, lr=3e-3)
LR_TRAIN = TrainConfig(epochs=3, batch_size=256, lr=1e-2)
MODELS = ("lr", "deepfm", "dcnv2", "dlrm", "dlrm_cross")


def _arch(name: str, ds: Dataset) -> Architecture:
    if name == "dlrm_cross":
        return Architecture.load(ROOT / "examples" / "archs" / "dlrm_cross.json")
    return baseline(name, ds.schema)


def measure(seeds: tuple[int, ...] = (0, 1, 2), workdir: Path | None = None) -> list[dict]:
    work = Path(workdir or tempfile.mkdtemp(prefix="rk-bench-"))
    results = []
    for seed in seeds:
        generate(work / f"synth_{seed}", SynthConfig(days=4, rows_per_day=50_000, seed=seed), force=True)
        ds = Dataset.open(str(work / f"synth_{seed}"))
        truth = json.loads((work / f"synth_{seed}" / "truth.json").read_text())
        bayes = truth["bayes_ne"][ds.dates[3]]
        for name in MODELS:
            cfg = LR_TRAIN if name == "lr" else TRAIN
            m = train_run(ds, _arch(name, ds), ds.dates[:3], ds.dates[3:], cfg,
                          work / "runs" / f"{name}_{seed}", force=True, progress=False)
            results.append({"seed": seed, "model": name, "ne": m["ne"], "bayes_ne": bayes,
                            "gap": m["ne"] / bayes - 1, "auc": m["auc"],
                            "flops": m["flops_per_example"]})
    return results


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--seeds", type=int, default=3)
    args = parser.parse_args()
    results = measure(tuple(range(args.seeds)))
    print_table("NE on the held-out 4th day vs Bayes-optimal (synthetic, 4 days x 50k rows, default difficulty)",
                ["seed", "model", "NE", "Bayes NE", "NE / Bayes - 1", "AUC", "FLOPs/example"],
                [[r["seed"], r["model"], r["ne"], r["bayes_ne"], f"{r['gap']:+.2%}", r["auc"], r["flops"]]
                 for r in results])
    for model in MODELS:
        worst = max(r["gap"] for r in results if r["model"] == model)
        worst_ne = max(r["ne"] for r in results if r["model"] == model)
        print(f"{model:<11} worst NE {worst_ne:.4f}, worst gap to Bayes {worst:+.2%}")


if __name__ == "__main__":
    main()
