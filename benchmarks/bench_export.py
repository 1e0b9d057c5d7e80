"""Export in one run: a DLRM trained on Criteo-shaped synthetic data, exported with `--int8`.

(1) latency of the exported program (torch.export, reloaded from model.pt2) against the eager
model on the same tensors at batch 1, 64 and 4096: median of interleaved repeats, one process;
(2) the int8 program against fp32: NE on the run's eval date, embedding and file sizes, latency.
"""

from __future__ import annotations

import argparse
import statistics
import tempfile
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import torch

from benchmarks.common import print_table
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.data.synth import SynthConfig, generate
from rankitect.export.artifact import export_run
from rankitect.export.int8 import quantize
from rankitect.export.program import ServingModule, program_inputs, quiet_export
from rankitect.export.run_folder import load_model, open_run
from rankitect.train import TrainConfig
from rankitect.train.run import train_run
from search_spaces import baseline

BATCHES = (1, 64, 4096)


def _seconds_per_call(fn: Callable[[], object], budget: float) -> float:
    """Mean seconds of one call over enough calls to fill about `budget` seconds."""
    fn()
    start, calls = time.perf_counter(), 0
    while True:
        fn()
        calls += 1
        elapsed = time.perf_counter() - start
        if elapsed >= budget:
            return elapsed / calls


def interleaved_latency(runs: dict[Any, Callable[[], object]], rounds: int,
                        budget: float) -> dict[Any, float]:
    """Median seconds per call of each callable, all measured in turn every round (so that a
    burst of load from elsewhere falls on every contestant alike)."""
    samples: dict[Any, list[float]] = {name: [] for name in runs}
    with torch.inference_mode():
        for _ in range(rounds):
            for name, fn in runs.items():
                samples[name].append(_seconds_per_call(fn, budget))
    return {name: statistics.median(values) for name, values in samples.items()}


def measure(rows_per_day: int = 60_000, hash_size: int = 20_000, rounds: int = 11, budget: float = 0.1,
            workdir: Path | None = None) -> dict[str, object]:
    work = Path(workdir or tempfile.mkdtemp(prefix="rk-bench-export-"))
    cfg = SynthConfig(days=2, rows_per_day=rows_per_day, num_sparse=26, num_dense=13,
                      cardinality=hash_size - 1, embedding_dim=16, seed=0)
    generate(work / "data", cfg, force=True)
    dataset = Dataset.open(str(work / "data"))
    started = time.perf_counter()
    config = TrainConfig(epochs=1, batch_size=1024, lr=3e-3)
    metrics = train_run(dataset, baseline("dlrm", dataset.schema), dataset.dates[:1], dataset.dates[1:],
                        config, work / "run", force=True, progress=False)
    train_s = time.perf_counter() - started
    started = time.perf_counter()
    result = export_run(work / "run", work / "artifact", int8=True, force=True)
    export_s = time.perf_counter() - started

    model, schema = load_model(open_run(work / "run"), dataset.schema)
    # "eager": the model as it trained or was quantized (a KeyedJaggedTensor into torchrec's
    # lookup); "fused": the float model with the exported program's one-table lookup, eagerly
    eager = {"fp32": ServingModule(model, schema.sparse_names, fused=False).eval(),
             "fused fp32": ServingModule(model, schema.sparse_names).eval(),
             "int8": ServingModule(quantize(model), schema.sparse_names, fused=False).eval()}
    with quiet_export():
        exported = {name: torch.export.load(work / "artifact" / f).module()
                    for name, f in (("fp32", "model.pt2"), ("int8", "model_int8.pt2"))}
    runs = {}
    for batch_size in BATCHES:
        batch = next(iter(BatchLoader(dataset, dataset.dates[1:], batch_size, shuffle=False, prefetch=0)))
        args = program_inputs(batch.dense, batch.sparse)
        for form, modules in (("eager", eager), ("exported", exported)):
            runs.update({(batch_size, f"{form} {k}"): (lambda m=m, args=args: m(*args))
                         for k, m in modules.items()})
    latency: dict[int, dict[str, float]] = {b: {} for b in BATCHES}
    for (batch_size, name), seconds in interleaved_latency(runs, rounds, budget).items():
        latency[batch_size][name] = seconds
    return {"sizes": f"DLRM, 26 sparse x {hash_size:,} rows + a list feature, E=16, 13 dense",
            "train_ne": metrics["ne"], "train_s": train_s, "export_s": export_s,
            "int8": result.metrics["int8"], "latency": latency, "threads": torch.get_num_threads()}


def report(r: dict[str, object]) -> None:
    latency = r["latency"]
    rows = []
    for b, times in latency.items():
        rows.append([b, times["eager fp32"] * 1e6, times["eager fused fp32"] * 1e6, times["exported fp32"] * 1e6,
                     f"{times['eager fp32'] / times['exported fp32']:.2f}x",
                     times["eager int8"] * 1e6, times["exported int8"] * 1e6,
                     f"{times['eager int8'] / times['exported int8']:.2f}x",
                     f"{times['exported fp32'] / times['exported int8']:.2f}x"])
    print_table(f"(1) Latency per call, microseconds ({r['sizes']}; {r['threads']} threads; median of "
                f"interleaved repeats). eager: the model as trained (KJT, a lookup per table); eager "
                f"fused: with the program's one-table lookup",
                ["batch", "eager fp32", "eager fused", "exported fp32", "eager t / exported t", "eager int8",
                 "exported int8", "eager t / exported t", "fp32 t / int8 t (exported)"],
                rows)
    q = r["int8"]
    print_table(f"(2) int8 embedding tables vs fp32 (NE on {', '.join(q['eval_dates'])})",
                ["", "fp32", "int8", "int8 / fp32"],
                [["NE", f"{q['ne_fp32']:.5f}", f"{q['ne_int8']:.5f}", f"{q['ne_change_relative']:+.4%}"],
                 ["AUC", f"{q['auc_fp32']:.5f}", f"{q['auc_int8']:.5f}", ""],
                 ["embedding bytes", q["embedding_bytes_fp32"], q["embedding_bytes_int8"],
                  f"{q['embedding_size_ratio']:.3f}"],
                 ["program file bytes", q["file_bytes_fp32"], q["file_bytes_int8"],
                  f"{q['file_size_ratio']:.3f}"]])
    print(f"\ntrained NE {r['train_ne']:.5f} in {r['train_s']:.0f} s; export with --int8 (both programs, "
          f"NE of both on the eval date) took {r['export_s']:.1f} s")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows-per-day", type=int, default=60_000)
    parser.add_argument("--hash-size", type=int, default=20_000)
    args = parser.parse_args()
    report(measure(rows_per_day=args.rows_per_day, hash_size=args.hash_size))


if __name__ == "__main__":
    main()
