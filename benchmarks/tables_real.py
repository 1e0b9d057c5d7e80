"""Sections (c), (d) and (e) of bench_tables: what a user's commands cost on real-size tables.

Every run is the `rankitect` command a user types, in a child process, so that its peak RSS,
wall time and the bytes it leaves on disk are its own. The peak RSS is the child's VmHWM, read
by the child itself as it ends: getrusage's ru_maxrss would also count the pages the child
shared with this (large) process between fork and exec.
"""

from __future__ import annotations

import json
import os
import statistics
import subprocess
import sys
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

ADULT_DENSE = "age,fnlwgt,educational_num,capital_gain,capital_loss,hours_per_week"
ADULT_SPARSE = "workclass,education,marital_status,occupation,relationship,race,gender,native_country"
PEAK = "rankitect-bench-peak-rss-kb"
# `rankitect ARGS`, then the process's own peak RSS (VmHWM: this program's, since its exec).
CLI = [sys.executable, "-c", "import sys\nfrom launcher.cli import main\ntry:\n    code = main(sys.argv[1:])\n"
       "finally:\n    hwm = [l for l in open('/proc/self/status') if l.startswith('VmHWM')][0].split()[1]\n"
       f"    print('{PEAK}', hwm, file=sys.stderr)\nsys.exit(code)"]


@dataclass(frozen=True)
class Ran:
    seconds: float
    peak_rss_mib: float
    output: str


def run_cli(args: list[str], cwd: Path | None = None) -> Ran:
    """`rankitect ARGS` in a child process; RuntimeError with its output if it fails."""
    started = time.perf_counter()
    proc = subprocess.Popen([*CLI, *args], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                            cwd=cwd, env={**os.environ, "PYTHONWARNINGS": "ignore"})
    output, _ = proc.communicate()
    if proc.returncode != 0:
        raise RuntimeError(f"rankitect {' '.join(args)} exited {proc.returncode}:\n{output[-3000:]}")
    peak = [line.split()[1] for line in output.splitlines() if line.startswith(PEAK)]
    return Ran(time.perf_counter() - started, int(peak[-1]) / 1024 if peak else float("nan"), output)


def disk_bytes(path: Path) -> int:
    """Bytes of the files under `path` (a hard link counted once)."""
    seen: set[tuple[int, int]] = set()
    total = 0
    for root, _, files in os.walk(path):
        for name in files:
            st = os.lstat(os.path.join(root, name))
            if (st.st_dev, st.st_ino) not in seen:
                seen.add((st.st_dev, st.st_ino))
                total += st.st_size
    return total


def train(data: Path, out: Path, extra: list[str], train_dates: str, eval_dates: str,
          arch: str = "dlrm") -> dict[str, Any]:
    """metrics.json of one `rankitect train` run, with its wall time, peak RSS and disk."""
    ran = run_cli(["train", "--data", str(data), "--arch", arch, "--train-dates", train_dates,
                   "--eval-dates", eval_dates, "--out", str(out), "--force", *extra])
    metrics = json.loads((out / "metrics.json").read_text())
    return {**metrics, "wall_seconds": ran.seconds, "peak_rss_mib": ran.peak_rss_mib, "disk_bytes": disk_bytes(out)}


# -- (c) the Criteo profile: fused rowwise Adagrad against dense Adam ------------------------------
def criteo_profile(work: Path, rows_per_day: int, cap: int) -> Path:
    data = work / "criteo_profile"
    if not (data / "schema.json").is_file():
        run_cli(["data", "synth", "--profile", "criteo", "--max-cardinality", str(cap), "--days", "4",
                 "--rows-per-day", str(rows_per_day), "--out", str(data)])
    return data


def lr_quality(data: Path, work: Path, runs: list[tuple[str, str, float, float]], seeds: list[int],
               extra: list[str], train_dates: str, valid: str, test: str) -> list[dict[str, Any]]:
    """One `rankitect train` of the registry DLRM per (label, table optimizer, table lr, dense lr)
    and seed: validation NE on `valid` (what a lr is chosen on), test NE on `test`."""
    out = []
    for label, table_opt, table_lr, dense_lr in runs:
        for seed in seeds:
            m = train(data, work / "runs" / f"{data.name}-{label}-{seed}".replace(" ", "_"),
                      ["--embedding-optimizer", table_opt, "--embedding-lr", str(table_lr), "--lr", str(dense_lr),
                       "--seed", str(seed), "--checkpoint-every", "0", *extra], train_dates, f"{valid},{test}")
            out.append(_seed_record(label, seed, m, valid, test))
    return out


def _seed_record(label: str, seed: int, metrics: dict[str, Any], valid: str, test: str) -> dict[str, Any]:
    """What `summarize` reads of one run's metrics: its NE on the validation and test days."""
    return {"run": label, "seed": seed, "valid_ne": metrics["by_date"][valid]["ne"],
            "test_ne": metrics["by_date"][test]["ne"], "examples_per_second": metrics["examples_per_second"],
            "peak_rss_mib": metrics["peak_rss_mib"], "embedding_params": metrics["embedding_params"]}


def summarize(rows: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Per run label: mean and spread (max - min) over seeds of valid / test NE, median speed."""
    out = []
    for label in dict.fromkeys(r["run"] for r in rows):
        mine = [r for r in rows if r["run"] == label]
        out.append({"run": label, "seeds": len(mine),
                    "valid_ne": statistics.mean(r["valid_ne"] for r in mine),
                    "test_ne": statistics.mean(r["test_ne"] for r in mine),
                    "test_spread": max(r["test_ne"] for r in mine) - min(r["test_ne"] for r in mine),
                    "examples_per_second": statistics.median(r["examples_per_second"] for r in mine),
                    "peak_rss_mib": max(r["peak_rss_mib"] for r in mine),
                    "embedding_params": mine[0]["embedding_params"]})
    return out


# -- (d) and (e): adult.parquet imported with defaults --------------------------------------------
def import_adult(source: Path, work: Path) -> tuple[Path, Ran]:
    data = work / "adult"
    ran = run_cli(["data", "import", "--input", str(source), "--label", "label", "--dense", ADULT_DENSE,
                   "--sparse", ADULT_SPARSE, "--date-column", "day", "--out", str(data), "--force"])
    return data, ran


def adult_search(data: Path, work: Path, trials: int) -> dict[str, Any]:
    """A `trials`-trial TPE search of nasrec with the default baselines: train the first 5
    pseudo-days, validate on the 6th, test on the last 2; wall time, peak RSS and disk."""
    config = {"data": {"path": str(data), "train_dates": "first:5", "valid_dates": "2024-01-06",
                       "test_dates": "last:2"},
              "space": {"name": "nasrec"}, "searcher": {"name": "tpe"}, "budget": {"trials": trials}}
    path = work / "adult_tpe.yaml"
    path.write_text(yaml.safe_dump(config))
    out = work / "adult_tpe"
    ran = run_cli(["search", "--config", str(path), "--out", str(out), "--force"])
    result = json.loads((out / "result.json").read_text())
    trials_dir = out / "trials"
    per_trial = [disk_bytes(p) for p in trials_dir.iterdir()] if trials_dir.is_dir() else []
    best = result.get("best") or {}
    return {"wall_seconds": ran.seconds, "peak_rss_mib": ran.peak_rss_mib, "disk_bytes": disk_bytes(out),
            "trial_folders": len(per_trial), "largest_trial_bytes": max(per_trial, default=0),
            "median_trial_bytes": statistics.median(per_trial) if per_trial else 0,
            "checkpoints_kept": sum(1 for _ in out.rglob("checkpoint.pt")),
            "best_valid_ne": (best.get("metrics") or {}).get("ne"),
            "best_test_ne": (best.get("test_metrics") or {}).get("ne")}


# -- (f) table rows per distinct id: what hashing collisions cost ---------------------------------
def rows_sweep(data: Path, work: Path, per_id: list[int], seeds: list[int], train_dates: str, valid: str,
               test: str, extra: list[str]) -> list[dict[str, Any]]:
    """The registry DLRM with each column's table at k x (distinct ids + 1) rows (capped at its
    hash_size), for each k and seed: validation / test NE and embedding parameters."""
    from rankitect.arch.graph import Architecture
    from rankitect.data.dataset import Dataset
    from search_spaces import baseline

    schema = Dataset.open(str(data)).schema
    out = []
    for k in per_id:  # k = 0: every table at its column's hash_size; k = -1: the default rule
        arch = baseline("dlrm", schema).to_dict()
        if k != -1:
            arch["embedding"] = {**arch.get("embedding", {}), "rows": {
                c.name: c.hash_size if k == 0 else max(2, min(c.hash_size, k * ((c.distinct or 0) + 1)))
                for c in schema.sparse}}
        path = work / f"dlrm_rows_{k}.json"
        Architecture.from_dict(arch).save(path)
        for seed in seeds:
            m = train(data, work / "runs" / f"rows-{data.name}-{k}-{seed}", [*extra, "--seed", str(seed)],
                      train_dates, f"{valid},{test}", arch=str(path))
            out.append(_seed_record(f"k={k}", seed, m, valid, test))
    return out
