"""Every benchmark of the foundation in one run (`make bench`); prints each table and the ratios."""

from __future__ import annotations

import platform
import tempfile
import time
from pathlib import Path

import torch

from benchmarks import bench_dlrm_speed, bench_loader, bench_memory, bench_quality
from benchmarks.common import print_table


def main() -> None:
    started = time.time()
    print(f"machine: {platform.processor() or platform.machine()}, {torch.get_num_threads()} torch threads, "
          f"torch {torch.__version__}")
    work = Path(tempfile.mkdtemp(prefix="rk-bench-"))

    dlrm = bench_dlrm_speed.measure(workdir=work)
    print_table(f"(1) DLRM training speed ({dlrm['sizes']})", ["model", "examples/s"],
                [["rankitect registry DLRM", dlrm["rankitect"]], ["torchrec.models.dlrm.DLRM", dlrm["torchrec"]]])
    print(f"ratio rankitect / torchrec = {dlrm['ratio']:.3f}  (target >= 0.95)")

    loader = bench_loader.measure(workdir=work)
    print_table(f"(2) Loader throughput ({loader['rows']:,} rows, 26 sparse + 13 dense, batch 2048, shuffled)",
                ["reader", "rows/s"],
                [[k, loader[k]] for k in ("bare pyarrow scan", "rankitect loader")] +
                [["DLRM training (from 1)", dlrm["rankitect"]]])
    print(f"loader / bare pyarrow scan = {loader['rankitect loader'] / loader['bare pyarrow scan']:.3f}")
    print(f"loader / DLRM training rate = {loader['rankitect loader'] / dlrm['rankitect']:.1f}x  (target >= 3x)")

    small, large = bench_memory.measure(workdir=work)
    print_table("(3) Peak RSS streaming a dataset once (shuffle buffer 200k rows)",
                ["rows", "peak RSS MiB", "first 1/5 MiB", "last 1/5 MiB"],
                [[r["rows"], r["peak_mib"], r["first_fifth_mib"], r["last_fifth_mib"]] for r in (small, large)])
    print(f"peak RSS {large['rows']:,} / {small['rows']:,} rows = {large['peak_mib'] / small['peak_mib']:.3f}; "
          f"last / first fifth of the large run = {large['last_fifth_mib'] / large['first_fifth_mib']:.3f}"
          f"  (target: flat)")

    quality = bench_quality.measure(workdir=work)
    print_table("(4) NE on the held-out 4th day vs Bayes-optimal (synthetic 4 days x 50k rows, default difficulty)",
                ["seed", "model", "NE", "Bayes NE", "NE / Bayes - 1", "AUC", "FLOPs/example"],
                [[r["seed"], r["model"], r["ne"], r["bayes_ne"], f"{r['gap']:+.2%}", r["auc"], r["flops"]]
                 for r in quality])
    for model in bench_quality.MODELS:
        rows = [r for r in quality if r["model"] == model]
        print(f"{model:<11} worst NE {max(r['ne'] for r in rows):.4f}, "
              f"worst gap to Bayes {max(r['gap'] for r in rows):+.2%}")
    print(f"\nall benchmarks: {time.time() - started:.0f} s")


if __name__ == "__main__":
    main()
