"""Embedding tables sized to the data, updated at what a batch touches: every figure in one run.

(a) step time of 26 tables (E=16, batch 2048) at 10k, 1M and 10M rows per table: the fused
    lookup against torchrec's FusedEmbeddingBagCollection (target >= 0.95), dense Adam for
    reference at 10k and 1M;
(b) the registry DLRM on fused tables over torchrec's DLRM on FusedEmbeddingBagCollection
    (target >= 0.95 examples/s);
(c) the Criteo profile (synthetic, 26 columns with Criteo 1TB's cardinalities capped at 1M):
    examples/s, peak RSS and NE of fused rowwise Adagrad against dense Adam, learning rates swept
    on the validation day and the best of each retrained with more seeds (test NE on the last day);
(d) ../shared/data/adult.parquet imported with defaults: embedding parameters, a `rankitect
    train` run's examples/s and disk, a 12-trial TPE search's wall time and disk;
(e) the same table with `--table-rows 1000000`: examples/s over its default tables' (>= 0.7);
(f) NE against table rows per distinct id (the default rows rule), on the Criteo profile and adult.

    python -m benchmarks.bench_tables [--sections abcdef] [--sizes 10000,1000000,10000000] [--quick]
"""

from __future__ import annotations

import argparse
import json
import platform
import statistics
import tempfile
import time
from pathlib import Path

import torch

from benchmarks.common import print_table
from benchmarks.tables_real import (
    adult_search,
    criteo_profile,
    disk_bytes,
    import_adult,
    lr_quality,
    rows_sweep,
    summarize,
    train,
)
from benchmarks.tables_speed import dlrm_speed, table_step
from rankitect.blocks.table_rows import MAX_ROWS_PER_ID, ROWS_PER_ID, SMALL_TABLE_ROWS

ADULT = Path(__file__).resolve().parents[2] / "shared" / "data" / "adult.parquet"
MIB = 1 << 20


def section_a(sizes: list[int], rounds: int) -> None:
    rows = []
    for size in sizes:
        r = table_step(size, dense_adam=size <= 1_000_000, rounds=rounds)
        ratio = r["rankitect fused"] / r["torchrec fused"]
        rows.append([f"{size:,}", r["rankitect fused"], r["rankitect fused, ids remapped"], r["torchrec fused"],
                     r.get("dense Adam", "(does not fit)"), f"{ratio:.3f}",
                     f"{r['rankitect fused, ids remapped'] / r['torchrec fused']:.3f}"])
    print_table("(a) 26 tables x E=16, batch 2048, one step = lookup + backward (+ update): examples/s",
                ["rows/table", "rankitect fused", "… ids remapped", "torchrec fused", "dense Adam",
                 "ratio", "ratio remapped"], rows)
    print("ratio = rankitect fused / torchrec FusedEmbeddingBagCollection (target >= 0.95 at every size)")


def section_b(work: Path, rounds: int, quick: bool) -> None:
    r = dlrm_speed(work, rows=2_000 if quick else 100_000, data_rows=8_192 if quick else 60_000, rounds=rounds)
    print_table(f"(b) DLRM training, rowwise Adagrad tables + Adam dense ({r['sizes']})", ["model", "examples/s"],
                [["rankitect registry DLRM (fused tables)", r["rankitect"]],
                 ["torchrec DLRM on FusedEmbeddingBagCollection", r["torchrec"]]])
    print(f"ratio rankitect / torchrec = {r['ratio']:.3f}  (target >= 0.95)")


CRITEO_TRAIN = ["--epochs", "1", "--batch-size", "1024"]
ADULT_TRAIN = ["--epochs", "2", "--batch-size", "512"]  # a search trial's defaults (train section)
SWEEP_DENSE_LR = 3e-3  # the dense layers' lr of (f): a search trial's default


def _splits(work: Path, quick: bool) -> list[tuple[str, Path, list[str], str, str, str]]:
    """(name, data, training flags, train dates, validation day, test day) of the Criteo profile
    and, where ../shared/data has it, adult imported with defaults."""
    criteo = criteo_profile(work, rows_per_day=3_000 if quick else 100_000, cap=1_000 if quick else 1_000_000)
    days = sorted(json.loads((criteo / "schema.json").read_text())["dates"])
    out = [("Criteo profile", criteo, CRITEO_TRAIN, "first:2", days[2], days[3])]
    if ADULT.is_file():
        adult, _ = import_adult(ADULT, work)
        out.append(("adult", adult, ADULT_TRAIN, "first:5", "2024-01-06", "2024-01-07"))
    return out


def section_c(work: Path, quick: bool) -> None:
    table_lrs = (0.1,) if quick else (0.01, 0.03, 0.05, 0.1, 0.3)
    dense_lrs = (1e-3,) if quick else (1e-3, 3e-3, 1e-2)
    runs = [(f"fused: tables rowwise_adagrad lr {t:g}, dense adam lr {d:g}", "rowwise_adagrad", t, d)
            for t in table_lrs for d in dense_lrs[1:] or dense_lrs]
    runs += [(f"dense adam lr {lr:g}", "dense", 0.1, lr) for lr in dense_lrs]
    for name, data, flags, train_dates, valid, test in _splits(work, quick):
        first = lr_quality(data, work, runs, [0], flags, train_dates, valid, test)
        best = {family: min((r for r in first if r["run"].startswith(family)), key=lambda r: r["valid_ne"])["run"]
                for family in ("fused", "dense")}
        more = [] if quick else lr_quality(data, work, [r for r in runs if r[0] in best.values()], [1, 2, 3, 4],
                                           flags, train_dates, valid, test)
        table = summarize(first + more)
        schema = json.loads((data / "schema.json").read_text())
        print_table(f"(c) {name}: {len(schema['sparse'])} id columns, {sum(c['distinct'] for c in schema['sparse']):,} "
                    f"distinct ids, {sum(d['rows'] for d in schema['dates'].values()):,} rows; registry DLRM "
                    f"({' '.join(flags)}), train {train_dates}; "
                    f"lr chosen on {valid} (seed 0), the chosen ones with 5 seeds; test NE on {test}",
                    ["run", "seeds", "valid NE", "test NE", "test spread", "examples/s", "peak RSS MiB", "emb params"],
                    [[r["run"], r["seeds"], f"{r['valid_ne']:.5f}", f"{r['test_ne']:.5f}", f"{r['test_spread']:.5f}",
                      r["examples_per_second"], r["peak_rss_mib"], r["embedding_params"]] for r in table])
        f, d = (next(r for r in table if r["run"] == best[k]) for k in ("fused", "dense"))
        print(f"chosen by validation NE: {best['fused']} and {best['dense']}; fused / dense: examples/s "
              f"{f['examples_per_second'] / d['examples_per_second']:.1f}x, peak RSS "
              f"{f['peak_rss_mib'] / d['peak_rss_mib']:.3f}x, test NE {f['test_ne'] - d['test_ne']:+.5f} "
              f"(seed spreads {f['test_spread']:.5f} / {d['test_spread']:.5f})")


def section_de(work: Path, trials: int, repeats: int) -> None:
    if not ADULT.is_file():
        print(f"\n(d), (e) skipped: {ADULT} not found")
        return
    data, imported = import_adult(ADULT, work)
    schema = json.loads((data / "schema.json").read_text())
    d0 = train(data, work / "adult_defaults", [], "first:5", "2024-01-06")
    b0 = train(data, work / "adult_defaults_1m", ["--table-rows", "1000000"], "first:5", "2024-01-06")
    print_table(f"(d) adult.parquet imported with defaults ({len(schema['sparse'])} id columns, "
                f"{sum(c['distinct'] for c in schema['sparse'])} distinct ids, hash_size "
                f"{schema['sparse'][0]['hash_size']:,}; import {imported.seconds:.1f} s); `rankitect train --arch dlrm` "
                f"with its defaults, train 5 days, eval day 6",
                ["tables", "embedding params", "examples/s", "train s", "NE day 6", "run folder MiB",
                 "checkpoint MiB", "peak RSS MiB"],
                [[label, m["embedding_params"], m["examples_per_second"], m["train_seconds"], m["ne"],
                  m["disk_bytes"] / MIB, (work / run / "checkpoint.pt").stat().st_size / MIB, m["peak_rss_mib"]]
                 for label, run, m in (("default (from distinct ids)", "adult_defaults", d0),
                                       ("--table-rows 1000000", "adult_defaults_1m", b0))])
    longer = ["--epochs", "10", "--batch-size", "512", "--checkpoint-every", "0"]
    default, big = [], []
    for i in range(repeats):  # interleaved: the machine's noise falls on both
        default.append(train(data, work / f"adult_default_{i}", longer, "first:5", "2024-01-06"))
        big.append(train(data, work / f"adult_1m_{i}", [*longer, "--table-rows", "1000000"], "first:5", "2024-01-06"))
    speed_d = statistics.median(m["examples_per_second"] for m in default)
    speed_b = statistics.median(m["examples_per_second"] for m in big)
    print(f"(e) examples/s with --table-rows 1000000 ({big[0]['embedding_params']:,} embedding params) / default tables "
          f"({default[0]['embedding_params']:,}) = {speed_b:,.0f} / {speed_d:,.0f} = {speed_b / speed_d:.3f}  "
          f"(target >= 0.7; {' '.join(longer)}, median of {repeats} interleaved runs each)")
    started = time.perf_counter()
    s = adult_search(data, work, trials)
    print_table(f"(d) {trials}-trial TPE search of nasrec on adult (+ 5 baselines), local Ray, defaults",
                ["wall s", "peak RSS MiB (driver)", "run folder MiB", "trial folders", "median trial KiB",
                 "largest trial MiB", "checkpoint.pt files", "best valid NE", "best test NE"],
                [[s["wall_seconds"], s["peak_rss_mib"], s["disk_bytes"] / MIB, s["trial_folders"],
                  s["median_trial_bytes"] / 1024, s["largest_trial_bytes"] / MIB, s["checkpoints_kept"],
                  s["best_valid_ne"], s["best_test_ne"]]])
    print(f"search wall time measured here {time.perf_counter() - started:.0f} s; dataset on disk "
          f"{disk_bytes(data) / MIB:.1f} MiB")


def section_f(work: Path, quick: bool) -> None:
    """NE against rows per distinct id, on the Criteo profile and on adult; "hash_size": every
    table at its column's hash_size (1M on adult: no collision beyond the import's hashing)."""
    per_id = [1, 4] if quick else [1, 4, 16, 64]
    seeds = [0] if quick else [0, 1, 2, 3, 4]
    rows = []
    for name, data, flags, train_dates, valid, test in _splits(work, quick):
        flags = [*flags, "--lr", str(SWEEP_DENSE_LR)]
        runs = rows_sweep(data, work, [-1, *per_id], seeds, train_dates, valid, test, flags)
        if name == "adult":
            runs += rows_sweep(data, work, [0], seeds, train_dates, valid, test, flags)
        for r in summarize(runs):
            label = {"k=0": "hash_size", "k=-1": "default (auto)"}.get(r["run"], r["run"])
            rows.append([name, label, r["seeds"], f"{r['valid_ne']:.5f}",
                         f"{r['test_ne']:.5f}", f"{r['test_spread']:.5f}", r["embedding_params"],
                         r["examples_per_second"]])
    print_table("(f) NE against table rows per distinct id k (rows = min(hash_size, k x (distinct + 1))), "
                f"registry DLRM, fused rowwise Adagrad at its default lr, dense Adam lr {SWEEP_DENSE_LR:g}", ["data", "k", "seeds", "valid NE", "test NE", "test spread",
                                                        "emb params", "examples/s"], rows)
    print(f"default (auto): {ROWS_PER_ID} x (distinct + 1), small columns up to {MAX_ROWS_PER_ID} x while within "
          f"{SMALL_TABLE_ROWS:,} rows (rankitect.blocks.table_rows)")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--sections", default="abcdef", help="which sections to run (default abcdef)")
    parser.add_argument("--sizes", default="10000,1000000,10000000", help="rows per table of (a)")
    parser.add_argument("--rounds", type=int, default=5, help="timed passes per contestant, median kept")
    parser.add_argument("--trials", type=int, default=12, help="trials of the adult TPE search")
    parser.add_argument("--repeats", type=int, default=3, help="interleaved train runs of (d) and (e)")
    parser.add_argument("--quick", action="store_true", help="tiny sizes: a smoke test of the code")
    parser.add_argument("--workdir", type=Path, default=None)
    args = parser.parse_args()
    work = args.workdir or Path(tempfile.mkdtemp(prefix="rk-bench-tables-"))
    work.mkdir(parents=True, exist_ok=True)
    print(f"machine: {platform.machine()}, {torch.get_num_threads()} torch threads, torch {torch.__version__}; "
          f"work folder {work}")
    sizes = [1_000, 20_000] if args.quick else [int(s) for s in args.sizes.split(",")]
    if "a" in args.sections:
        section_a(sizes, 2 if args.quick else args.rounds)
    if "b" in args.sections:
        section_b(work, 2 if args.quick else args.rounds, args.quick)
    if "c" in args.sections:
        section_c(work, args.quick)
    if "d" in args.sections or "e" in args.sections:
        section_de(work, 2 if args.quick else args.trials, 1 if args.quick else args.repeats)
    if "f" in args.sections:
        section_f(work, args.quick)


if __name__ == "__main__":
    main()
