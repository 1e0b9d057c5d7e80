"""Zero-cost proxies against trained NE: Spearman rank correlation over sampled NASRec architectures.

Synthetic data (4 days, seed 0); N architectures sampled from the nasrec space (3 blocks). Each
is trained from scratch (1 epoch, batch 256, lr 3e-3, days 1-2) and evaluated on day 3 (NE).
Every proxy is computed on the same fresh initialization (torch seed 0, the one training
starts from) and again after a short warm-up (Adam on train-day batches). The table gives the
Spearman correlation of each proxy with -NE (so +1 = the proxy ranks architectures exactly as
their trained quality), plus #params and FLOPs as reference points, and the wall time.

    python -m benchmarks.bench_proxies [--archs 30] [--rows-per-day 20000] [--warmup-steps 50]
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

TRAIN = TrainConfig(epochs=1, batch_size=256, lr=3e-3)
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


def measure(archs: int, rows_per_day: int, warmup_steps: int, work: Path) -> list[dict]:
    generate(work / "synth", SynthConfig(days=4, rows_per_day=rows_per_day, seed=0), force=True)
    ds = Dataset.open(str(work / "synth"))
    train_dates, eval_dates = ds.dates[:2], ds.dates[2:3]
    proxy_batches = _first(BatchLoader(ds, train_dates, TRAIN.batch_size, shuffle=True, seed=1), PROXY_BATCHES)
    warm_batches = _first(BatchLoader(ds, train_dates, TRAIN.batch_size, shuffle=True, seed=2), warmup_steps)
    space = make_space("nasrec", ds.schema, {"blocks": 3})
    results = []
    for i in range(archs):
        arch = space.decode(space.sample(random.Random(i)))
        torch.manual_seed(TRAIN.seed)  # the initialization train_run starts from
        model = build_model(arch, ds.schema)
        target = ProxyTarget.from_model(model)
        fresh, fresh_s = _scores(target, proxy_batches)
        start = time.perf_counter()
        warm_up(model, warm_batches, warmup_steps, WARMUP_LR, seed=0)
        warm_s = time.perf_counter() - start
        warm, warm_proxy_s = _scores(target, proxy_batches)
        start = time.perf_counter()
        metrics = train_run(ds, arch, train_dates, eval_dates, TRAIN, work / "runs" / f"a{i}",
                            force=True, progress=False)
        cost = cost_of(arch, ds.schema)
        results.append({"ne": metrics["ne"], "params": cost.dense_params, "flops": cost.flops,
                        "fresh": fresh, "warm": warm, "fresh_s": fresh_s, "warm_s": warm_proxy_s,
                        "warmup_s": warm_s, "train_s": time.perf_counter() - start})
        print(f"[{i + 1}/{archs}] NE {metrics['ne']:.4f}  dense params {cost.dense_params:,}  "
              f"train {results[-1]['train_s']:.1f}s", file=sys.stderr, flush=True)
    return results


def report(results: list[dict], rows_per_day: int, warmup_steps: int, seconds: float) -> None:
    ne = [r["ne"] for r in results]
    neg_ne = [-v for v in ne]
    print(f"# Zero-cost proxies vs trained NE: {len(results)} nasrec architectures (3 blocks), synthetic "
          f"data 4 days x {rows_per_day:,} rows (seed 0)")
    print(f"# train days 1-2 (1 epoch, batch {TRAIN.batch_size}, lr {TRAIN.lr}), NE on day 3; proxies on "
          f"{PROXY_BATCHES} train batches of {TRAIN.batch_size} (single-batch proxies: the first), "
          f"torch seed 0 init; warm-up = {warmup_steps} Adam steps at lr {WARMUP_LR}")
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
    parser.add_argument("--archs", type=int, default=30)
    parser.add_argument("--rows-per-day", type=int, default=20_000)
    parser.add_argument("--warmup-steps", type=int, default=50)
    args = parser.parse_args()
    start = time.perf_counter()
    with tempfile.TemporaryDirectory(prefix="rk-proxies-") as work:
        results = measure(args.archs, args.rows_per_day, args.warmup_steps, Path(work))
    report(results, args.rows_per_day, args.warmup_steps, time.perf_counter() - start)


if __name__ == "__main__":
    main()
