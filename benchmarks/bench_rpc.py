"""The gRPC SearchService under load, while a search runs on it.

A real `rankitect serve` (a subprocess, its own local Ray started for the job) runs a search
of synthetic data; meanwhile 32 client threads, each on its own channel, make 50 calls each,
alternating GetJob and ListJobs, and one watcher follows the job's WatchJob stream from its
first event to its last. Measured in one run:
- errors (target: none) and p50 / p99 latency of the calls, under load and, as the reference,
  with the server idle (same calls, same clients, after the job ended); the store holds 49
  finished jobs beside the running one, so a ListJobs returns a full page of 50;
- whether the watcher received every event of the job: numbers 1..last, none missing, none
  twice, compared with a second WatchJob replay of the stored events.

    python -m benchmarks.bench_rpc [--clients 32] [--calls 50] [--trials 8]
"""

from __future__ import annotations

import argparse
import os
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import print_table

HISTORY_JOBS = 49  # finished jobs in the store beside the running one: ListJobs pages 50


def _percentile(values: list[float], q: float) -> float:
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _load(address: str, job_id: str, clients: int, calls: int) -> dict[str, Any]:
    """`clients` threads x `calls` alternating GetJob / ListJobs: latencies (ms) and errors."""
    from launcher.rpc.client import RankitectClient

    latencies: dict[str, list[float]] = {"GetJob": [], "ListJobs": []}
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client_thread() -> None:
        with RankitectClient(address, timeout=30) as client:
            client.health()  # connect before the clock starts
            start.wait()
            for k in range(calls):
                method = "GetJob" if k % 2 == 0 else "ListJobs"
                began = time.perf_counter()
                try:
                    if method == "GetJob":
                        client.get_job(job_id)
                    else:
                        list(client.list_jobs())
                except Exception as exc:  # noqa: BLE001 (counted and shown)
                    with lock:
                        errors.append(f"{method}: {exc}")
                    continue
                with lock:
                    latencies[method].append((time.perf_counter() - began) * 1e3)

    threads = [threading.Thread(target=client_thread) for _ in range(clients)]
    began = time.perf_counter()
    for t in threads:
        t.start()
    for t in threads:
        t.join()
    wall = time.perf_counter() - began
    every = latencies["GetJob"] + latencies["ListJobs"]
    return {"calls": len(every), "errors": errors, "wall": wall,
            **{f"{m}_p50": _percentile(v, 0.5) for m, v in latencies.items()},
            **{f"{m}_p99": _percentile(v, 0.99) for m, v in latencies.items()},
            "all_p50": _percentile(every, 0.5), "all_p99": _percentile(every, 0.99),
            "mean": statistics.fmean(every)}


def measure(work: Path, clients: int, calls: int, trials: int) -> dict[str, Any]:
    from launcher.rpc.client import RankitectClient
    from launcher.rpc.gen import search_pb2 as spb

    final_states = {spb.JOB_STATE_SUCCEEDED, spb.JOB_STATE_FAILED, spb.JOB_STATE_CANCELLED}
    from rankitect.data.synth import SynthConfig, generate

    data = work / "data"
    generate(data, SynthConfig(days=3, rows_per_day=20_000, seed=0))
    config = {"data": {"path": str(data), "train_dates": "first:1", "valid_dates": "2024-01-02",
                       "test_dates": "2024-01-03"},
              "space": {"name": "nasrec", "blocks": 2}, "searcher": {"name": "random"},
              "budget": {"trials": trials}, "train": {"epochs": 1, "batch_size": 256}, "baselines": ["lr"]}
    from launcher.jobs.store import RUNNING, SUCCEEDED, JobStore

    store = JobStore(work / "runs" / "jobs.sqlite3")  # finished jobs, so that ListJobs returns a full page
    for _ in range(HISTORY_JOBS):
        old, _ = store.create("anonymous", None, yaml.safe_dump(config), "history", "random on nasrec", "random", 8)
        store.transition(old.job_id, RUNNING, "started")
        store.transition(old.job_id, SUCCEEDED, "succeeded")
    store.close()
    server = subprocess.Popen([sys.executable, "-m", "launcher.cli", "serve", "--port", "0", "--allow-root",
                               str(work), "--runs-dir", str(work / "runs")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        address = server.stdout.readline().split()[4]
        with RankitectClient(address, timeout=30) as client:
            job, _ = client.submit_search(yaml.safe_dump(config))
            watched: list[Any] = []
            watcher = threading.Thread(target=lambda: watched.extend(client.watch_job(job.job_id)))
            watcher.start()
            while True:  # until the search is under way
                current = client.get_job(job.job_id)
                if current.progress.trials_done >= 1:
                    break
                if current.state in final_states:
                    raise RuntimeError(f"the job ended before its first trial: {current.error or current.state}")
                time.sleep(0.5)
            print(f"job {job.job_id} running; loading the server", flush=True)
            busy = _load(address, job.job_id, clients, calls)
            state_during = client.get_job(job.job_id)
            watcher.join()
            final = client.get_job(job.job_id)
            replay = list(client.watch_job(job.job_id))
            idle = _load(address, job.job_id, clients, calls)
    finally:
        server.terminate()
        server.wait(120)
    numbers = [e.number for e in watched]
    return {"busy": busy, "idle": idle, "trials_done_at_load_end": state_during.progress.trials_done,
            "state_at_load_end": state_during.state, "final_state": final.state, "last_event": final.last_event,
            "watched": len(watched), "consecutive": numbers == list(range(1, final.last_event + 1)),
            "same_as_replay": [e.SerializeToString(deterministic=True) for e in watched]
            == [e.SerializeToString(deterministic=True) for e in replay],
            "kinds": {k: sum(1 for e in watched if e.WhichOneof("kind") == k)
                      for k in ("state", "trial", "best", "pareto", "progress", "log")}}


def report(out: dict[str, Any], clients: int, calls: int) -> None:
    from launcher.rpc.gen import search_pb2 as spb

    rows = []
    for name in ("busy", "idle"):
        r = out[name]
        rows.append([f"{'while the search runs' if name == 'busy' else 'server idle'}", r["calls"], len(r["errors"]),
                     f"{r['GetJob_p50']:.2f}", f"{r['GetJob_p99']:.2f}", f"{r['ListJobs_p50']:.2f}",
                     f"{r['ListJobs_p99']:.2f}", f"{r['all_p50']:.2f}", f"{r['all_p99']:.2f}",
                     f"{r['calls'] / r['wall']:,.0f}"])
    print_table(f"{clients} clients x {calls} calls (GetJob / ListJobs alternating), latency in ms",
                ["", "calls", "errors", "GetJob p50", "p99", "ListJobs p50", "p99", "all p50", "all p99", "calls/s"],
                rows)
    busy, idle = out["busy"], out["idle"]
    print(f"under load / idle: p50 {busy['all_p50'] / idle['all_p50']:.2f}x, p99 {busy['all_p99'] / idle['all_p99']:.2f}x;"
          f" the search was still {spb.JobState.Name(out['state_at_load_end'])} with "
          f"{out['trials_done_at_load_end']} trials done when the load ended")
    for name in ("busy", "idle"):
        for line in out[name]["errors"][:5]:
            print(f"  {name} error: {line}")
    print(f"WatchJob: {out['watched']} events received of {out['last_event']} stored "
          f"({out['kinds']}); numbers 1..{out['last_event']} without a gap: {out['consecutive']}; "
          f"identical to a replay of the stored events: {out['same_as_replay']}; "
          f"job {spb.JobState.Name(out['final_state'])}")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--trials", type=int, default=8)
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rk-bench-rpc-") as work:
        out = measure(Path(work), args.clients, args.calls, args.trials)
    report(out, args.clients, args.calls)


if __name__ == "__main__":
    main()
