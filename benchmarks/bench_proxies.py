"""Zero-cost proxies against trained NE: Spearman rank correlation over sampled NASRec architectures.

Data: synthetic (4 days, seed 0; train days 1-2, NE on day 3) or, with `--data adult`,
../shared/data/adult.parquet imported with defaults (train the first 5 pseudo-days, NE on the
6th). N architectures sampled from the nasrec space (3 blocks). The ground truth is each
architecture trained from scratch: with `--truth defaults` (the default) by the training
defaults (up to 20 epochs, early stopping on the NE date, the best epoch kept), with
`--truth quick` by one epoch at batch 256 (what this benchmark used before). Every proxy is
computed on the same fresh initialization (torch seed 0, the one training starts from) and
again after a short warm-up (Adam on train-day batches). The table gives the Spearman
correlation of each proxy with -NE (so +1 = the proxy ranks architectures exactly as their
trained quality), plus #params and FLOPs as reference points, and the wall time.

    python -m benchmarks.bench_proxies [--data synthetic|adult] [--truth defaults|quick]
                                       [--archs 30] [--rows-per-day 20000] [--warmup-steps 50]
"""

from __future__ import annotations

import argparse
import random
import sys
import tempfile
import time
from pathlib import Path

import numpy as np
import torch

from benchmarks.common import print_table
from rankitect.cost import cost_of
from rankitect.data.batch import Batch
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.data.synth import SynthConfig, generate
from rankitect.model import build_model
from rankitect.searchers.proxies import ProxyTarget, proxy_names, score, warm_up
from rankitect.searchers.rank_stats import spearman
from rankitect.space import make_space
from rankitect.train import TrainConfig
from rankitect.train.run import train_run

TRUTHS = {"defaults": TrainConfig(checkpoint_every=0),
          "quick": TrainConfig(epochs=1, batch_size=256, lr=3e-3, checkpoint_every=0)}
PROXY_BATCH = 256
ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult.parquet"
PROXY_BATCHES = 4  # zico / sigeo use all of them, the other proxies the first
WARMUP_LR = 3e-3


def _first(loader: BatchLoader, n: int) -> list[Batch]:
    out = []
    for batch in loader:
        out.append(batch)
        if len(out) == n:
            break
    return out


def _scores(target: ProxyTarget, batches: list[Batch]) -> tuple[dict[str, float], dict[str, float]]:
    """(value, seconds) of every proxy."""
    values, seconds = {}, {}
    for name in proxy_names():
        start = time.perf_counter()
        values[name] = score(name, target, batches, seed=0)
        seconds[name] = time.perf_counter() - start
    return values, seconds


def dataset(data: str, rows_per_day: int, work: Path) -> tuple[Dataset, list[str], list[str]]:
    """(dataset, train dates, NE dates) of `data`."""
    if data == "adult":
        from benchmarks.tables_real import ADULT_DENSE, ADULT_SPARSE, run_cli

        run_cli(["data", "import", "--input", str(ADULT), "--label", "label", "--dense", ADULT_DENSE,
                 "--sparse", ADULT_SPARSE, "--date-column", "day", "--out", str(work / "adult"), "--force"])
        ds = Dataset.open(str(work / "adult"))
        return ds, ds.dates[:5], ds.dates[5:6]
    generate(work / "synth", SynthConfig(days=4, rows_per_day=rows_per_day, seed=0), force=True)
    ds = Dataset.open(str(work / "synth"))
    return ds, ds.dates[:2], ds.dates[2:3]


def measure(data: str, truth: TrainConfig, archs: int, rows_per_day: int, warmup_steps: int,
            work: Path) -> list[dict]:
    ds, train_dates, eval_dates = dataset(data, rows_per_day, work)
    proxy_batches = _first(BatchLoader(ds, train_dates, PROXY_BATCH, shuffle=True, seed=1), PROXY_BATCHES)
    warm_batches = _first(BatchLoader(ds, train_dates, PROXY_BATCH, shuffle=True, seed=2), warmup_steps)
    space = make_space("nasrec", ds.schema, {"blocks": 3})
    results = []
    for i in range(archs):
        arch = space.decode(space.sample(random.Random(i)))
        torch.manual_seed(truth.seed)  # the initialization train_run starts from
        model = build_model(arch, ds.schema)
        target = ProxyTarget.from_model(model)
        fresh, fresh_s = _scores(target, proxy_batches)
        start = time.perf_counter()
        warm_up(model, warm_batches, warmup_steps, WARMUP_LR, seed=0)
        warm_s = time.perf_counter() - start
        warm, warm_proxy_s = _scores(target, proxy_batches)
        start = time.perf_counter()
        metrics = train_run(ds, arch, train_dates, eval_dates, truth, work / "runs" / f"a{i}",
                            force=True, progress=False)
        cost = cost_of(arch, ds.schema)
        results.append({"ne": metrics["ne"], "params": cost.dense_params, "flops": cost.flops,
                        "fresh": fresh, "warm": warm, "fresh_s": fresh_s, "warm_s": warm_proxy_s,
                        "warmup_s": warm_s, "train_s": time.perf_counter() - start})
        print(f"[{i + 1}/{archs}] NE {metrics['ne']:.4f}  dense params {cost.dense_params:,}  "
              f"train {results[-1]['train_s']:.1f}s", file=sys.stderr, flush=True)
    return results


def report(results: list[dict], data: str, truth: str, rows_per_day: int, warmup_steps: int, seconds: float) -> None:
    ne = [r["ne"] for r in results]
    neg_ne = [-v for v in ne]
    where = "adult.parquet (train pseudo-days 1-5, NE on day 6)" if data == "adult" else \
        f"synthetic data 4 days x {rows_per_day:,} rows (seed 0; train days 1-2, NE on day 3)"
    cfg = TRUTHS[truth]
    print(f"# Zero-cost proxies vs trained NE: {len(results)} nasrec architectures (3 blocks), {where}")
    print(f"# ground truth '{truth}': at most {cfg.epochs} epochs, early stopping {cfg.early_stopping}, batch "
          f"{cfg.batch_size}, lr {cfg.lr}; proxies on {PROXY_BATCHES} train batches of {PROXY_BATCH} "
          f"(single-batch proxies: the first), torch seed 0 init; warm-up = {warmup_steps} Adam steps at lr {WARMUP_LR}")
    print(f"# NE: min {min(ne):.4f}, median {float(np.median(ne)):.4f}, max {max(ne):.4f}; "
          f"total wall time {seconds:.0f}s on {torch.get_num_threads()} torch threads")
    rows: list[list[object]] = []
    for name in proxy_names():
        fresh = spearman([r["fresh"][name] for r in results], neg_ne)
        warm = spearman([r["warm"][name] for r in results], neg_ne)
        ms = 1000 * float(np.mean([r["fresh_s"][name] for r in results]))
        ms_warm = 1000 * float(np.mean([r["warm_s"][name] for r in results]))
        rows.append([name, f"{fresh:+.3f}", f"{warm:+.3f}", f"{ms:.1f}", f"{ms_warm:.1f}"])
    for label, key in (("dense #params (reference)", "params"), ("FLOPs/example (reference)", "flops")):
        rho = spearman([r[key] for r in results], neg_ne)
        rows.append([label, f"{rho:+.3f}", f"{rho:+.3f}", "-", "-"])
    warm_ms = 1000 * float(np.mean([r["warmup_s"] for r in results]))
    train_s = float(np.mean([r["train_s"] for r in results]))
    print_table(f"Spearman(proxy, -NE) over {len(results)} architectures (+1 = perfect ranking); "
                f"warm-up {warm_ms:.0f} ms/arch, full training + eval {train_s:.1f} s/arch",
                ["proxy", "rho fresh init", f"rho after {warmup_steps}-step warm-up",
                 "ms/arch fresh", "ms/arch warm"], rows)


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--data", choices=("synthetic", "adult"), default="synthetic")
    parser.add_argument("--truth", choices=sorted(TRUTHS), default="defaults")
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--warmup-steps", type=int, default=50)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rk-proxies-") as work:
        results = measure(args.data, TRUTHS[args.truth], args.archs, args.rows_per_day, args.warmup_steps, Path(work))
    report(results, args.data, args.truth, args.rows_per_day, args.warmup_steps, time.perf_counter() - start)


if __name__ == "__main__":
    main()
