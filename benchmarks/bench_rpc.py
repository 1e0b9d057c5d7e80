"""The gRPC SearchService under load, while a search runs on it.

A real `rankitect serve` (a subprocess with --token-file, its own local Ray started for the
job) runs a search of synthetic data; meanwhile 32 client threads, each on its own channel
(grpc carries them on one connection), make 50 calls each, alternating GetJob and ListJobs,
and one watcher follows the job's WatchJob stream from its first event to its last. Measured in
one run:
- errors (target: none) and p50 / p99 latency of the calls: while the search runs (goal: p99
  under 20 ms), then again while 64 more streams are open (32 WatchJob with the token, 32
  grpc.health.v1.Health/Watch without one, each on a connection of its own, as 64 clients
  would open them): streams past the server's limits may be refused (counted by status), the
  unary calls must not fail and their p99 must stay within 3x the idle server's; and, as the
  reference, with the server idle (same calls, same clients, after the job ended); and the
  floor: the same clients making health Checks (grpc's own servicer, a constant reply). The
  clients call back to back (a closed loop), so a call waits for those of the other clients
  ahead of it: latency is about clients / (calls per second), and what a call of ours costs
  beyond the floor is what the server does for it.
- ValidateArchitecture of chains of 1k, 2k, MAX_NODES and 20k nodes (goal: the 20k one
  answered, or refused by the node limit, in under a second; the others linear in nodes). The store
  holds 49 finished jobs beside the running one, so a ListJobs returns a full page of 50;
- whether the watcher received every event of the job: numbers 1..last, none missing, none
  twice, compared with a second WatchJob replay of the stored events.

    python -m benchmarks.bench_rpc [--clients 32] [--calls 50] [--trials 8] [--streams 64]
"""

from __future__ import annotations

import argparse
import json
import os
import secrets
import statistics
import subprocess
import sys
import tempfile
import threading
import time
from collections import Counter
from pathlib import Path
from typing import Any

import yaml

from benchmarks.common import print_table

HISTORY_JOBS = 49  # finished jobs in the store beside the running one: ListJobs pages 50
OWNER = "bench"  # the owner of the bench's token
STREAM_ANSWER_S = 20.0  # how long a stream may take to answer its first message (or be refused)
STREAMS_CALL_TIMEOUT_S = 10.0  # per unary call while the streams are open
MAX_ERRORS = 3  # a client stops after this many failed calls (a starved server would fail them all)


def _percentile(values: list[float], q: float) -> float:
    if not values:
        return float("nan")
    ordered = sorted(values)
    return ordered[min(len(ordered) - 1, int(round(q * (len(ordered) - 1))))]


def _status(exc: Exception) -> str:
    """The gRPC status name of a failed call (the exception's type for anything else)."""
    code = getattr(exc, "code", None)
    return code().name if callable(code) else f"{type(exc).__name__}: {exc}"


def _load(address: str, token: str, job_id: str, clients: int, calls: int, timeout: float = 30,
          methods: tuple[str, ...] = ("GetJob", "ListJobs")) -> dict[str, Any]:
    """`clients` threads x `calls` taking turns over `methods` (GetJob, ListJobs, or Health: the
    health Check, which grpc's own servicer answers with a constant): latencies (ms) and errors
    (a client stops after MAX_ERRORS of them)."""
    from launcher.rpc.client import RankitectClient

    latencies: dict[str, list[float]] = {m: [] for m in methods}
    errors: list[str] = []
    lock = threading.Lock()
    start = threading.Barrier(clients)

    def client_thread() -> None:
        failed = 0
        with RankitectClient(address, token=token, timeout=timeout) as client:
            try:
                client.health()  # connect before the clock starts
            except Exception as exc:  # noqa: BLE001 (a starved server: counted, and the clients go on)
                failed += 1
                with lock:
                    errors.append(f"health: {_status(exc)}")
            start.wait()
            for k in range(calls):
                if failed >= MAX_ERRORS:
                    break
                method = methods[k % len(methods)]
                began = time.perf_counter()
                try:
                    if method == "GetJob":
                        client.get_job(job_id)
                    elif method == "ListJobs":
                        list(client.list_jobs())
                    else:
                        client.health()
                except Exception as exc:  # noqa: BLE001 (counted and shown)
                    failed += 1
                    with lock:
                        errors.append(f"{method}: {_status(exc)}")
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
    every = [ms for values in latencies.values() for ms in values]
    return {"calls": len(every), "errors": errors, "wall": wall,
            **{f"{m}_p50": _percentile(v, 0.5) for m, v in latencies.items()},
            **{f"{m}_p99": _percentile(v, 0.99) for m, v in latencies.items()},
            "all_p50": _percentile(every, 0.5), "all_p99": _percentile(every, 0.99),
            "mean": statistics.fmean(every) if every else float("nan")}


class _Streams:
    """`with_token` WatchJob streams of `job_id` and `without_token` health Watch streams,
    each on a connection of its own, opened at once and read to their end in threads;
    `outcome` counts per kind how each began: OK (its first message came) or the status it
    was refused with ("no answer": neither within STREAM_ANSWER_S). `close()` cancels them."""

    def __init__(self, address: str, token: str, job_id: str, with_token: int, without_token: int) -> None:
        import grpc
        from grpc_health.v1 import health_pb2, health_pb2_grpc

        from launcher.rpc.gen import search_pb2 as spb
        from launcher.rpc.gen import search_pb2_grpc

        self.calls: list[Any] = []
        self.channels: list[Any] = []
        self.outcome: dict[str, Counter] = {"WatchJob": Counter(), "Health/Watch": Counter()}
        self._lock = threading.Lock()
        answered: list[threading.Event] = []
        for kind in ["WatchJob"] * with_token + ["Health/Watch"] * without_token:
            channel = grpc.insecure_channel(address, options=[("grpc.use_local_subchannel_pool", 1)])
            if kind == "WatchJob":
                call = search_pb2_grpc.SearchServiceStub(channel).WatchJob(
                    spb.WatchJobRequest(job_id=job_id), metadata=(("authorization", f"Bearer {token}"),))
            else:
                call = health_pb2_grpc.HealthStub(channel).Watch(health_pb2.HealthCheckRequest())
            self.channels.append(channel)
            self.calls.append(call)
            answered.append(threading.Event())
            threading.Thread(target=self._read, args=(kind, call, answered[-1]), daemon=True).start()
        deadline = time.monotonic() + STREAM_ANSWER_S
        for event in answered:
            event.wait(max(0.0, deadline - time.monotonic()))
        with self._lock:
            for kind, event in zip(["WatchJob"] * with_token + ["Health/Watch"] * without_token, answered):
                if not event.is_set():
                    self.outcome[kind]["no answer"] += 1

    def _read(self, kind: str, call: Any, answered: threading.Event) -> None:
        first = True
        try:
            for _ in call:
                if first:
                    self._count(kind, "OK", answered)
                    first = False
        except Exception as exc:  # noqa: BLE001 (grpc.RpcError: refused, or cancelled at close)
            if first:
                self._count(kind, _status(exc), answered)

    def _count(self, kind: str, what: str, answered: threading.Event) -> None:
        with self._lock:
            if not answered.is_set():  # not yet counted as "no answer"
                self.outcome[kind][what] += 1
            answered.set()

    def close(self) -> None:
        for call in self.calls:
            call.cancel()
        for channel in self.channels:
            channel.close()


def _chain(n: int) -> dict[str, Any]:
    """The JSON form of a chain of `n` mlp nodes ending in a logit (n + 1 nodes)."""
    nodes = [{"id": "n0", "block": "mlp", "inputs": ["dense"], "params": {}}]
    nodes += [{"id": f"n{i}", "block": "mlp", "inputs": [f"n{i - 1}"], "params": {}} for i in range(1, n)]
    nodes.append({"id": "logit", "block": "fc", "inputs": [f"n{n - 1}"], "params": {"width": 1, "activation": "none"}})
    return {"name": f"chain{n}", "nodes": nodes}


def _validate_times(client: Any, dataset: Path) -> list[dict[str, Any]]:
    """ValidateArchitecture of mlp chains of growing length against `dataset`'s schema: the
    wall of each call (ms) and how it was answered (valid, its problem count, or the refusal)."""
    from rankitect.arch.graph import MAX_NODES

    rows = []
    for n in (1_000, 2_000, MAX_NODES - 1, 20_000):
        arch = _chain(n)
        began = time.perf_counter()
        try:
            problems = client.validate_architecture(arch, dataset=str(dataset))
            answer = "valid" if not problems else f"{len(problems)} problems"
        except Exception as exc:  # noqa: BLE001 (the refusal past the node limit)
            answer = f"refused {_status(exc)}: {getattr(exc, 'details', lambda: '')()[:90]}"
        rows.append({"nodes": n + 1, "ms": (time.perf_counter() - began) * 1e3, "answer": answer})
    return rows


def history_best(data: Path, config: dict[str, Any]) -> dict[str, Any]:
    """A finished job's best trial as the driver stores it (result.json's form): a sampled
    member of the bench's space with its architecture, so that ListJobs converts what a real
    store holds."""
    import random

    from rankitect.data.dataset import Dataset
    from rankitect.space import make_space

    space = make_space(config["space"]["name"], Dataset.open(str(data)).schema,
                       {k: v for k, v in config["space"].items() if k != "name"})
    choices = space.sample(random.Random(0))
    return {"number": 3, "status": "complete", "arch": space.decode(choices).to_dict(), "choices": dict(choices),
            "metrics": {"ne": 0.8123, "logloss": 0.4567, "auc": 0.7345, "flops_per_example": 12_345},
            "test_metrics": {"ne": 0.8156, "auc": 0.7301}, "seconds": 3.2, "wall_seconds": 3.4, "attempts": 1}


def measure(work: Path, clients: int, calls: int, trials: int, streams: int) -> dict[str, Any]:
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
    best = json.dumps(history_best(data, config))
    for _ in range(HISTORY_JOBS):
        old, _ = store.create(OWNER, None, yaml.safe_dump(config), "history", "random on nasrec", "random", 8)
        store.transition(old.job_id, RUNNING, "started")
        store.update(old.job_id, trials_done=8, best_json=best)
        store.transition(old.job_id, SUCCEEDED, "succeeded")
    store.close()
    token = f"bench-{secrets.token_hex(16)}"
    (work / "tokens").write_text(f"{token} {OWNER}\n")
    server = subprocess.Popen([sys.executable, "-m", "launcher.cli", "serve", "--port", "0", "--allow-root",
                               str(work), "--runs-dir", str(work / "runs"), "--token-file", str(work / "tokens")],
                              stdout=subprocess.PIPE, stderr=subprocess.DEVNULL, text=True,
                              env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        address = server.stdout.readline().split()[4]
        with RankitectClient(address, token=token, timeout=30) as client:
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
            busy = _load(address, token, job.job_id, clients, calls)
            state_during = client.get_job(job.job_id)
            print(f"opening {streams} streams ({streams // 2} without a token)", flush=True)
            opened = _Streams(address, token, job.job_id, streams - streams // 2, streams // 2)
            try:
                with_streams = _load(address, token, job.job_id, clients, calls, timeout=STREAMS_CALL_TIMEOUT_S)
                try:  # the server's answer while the streams are still open
                    state_streams = spb.JobState.Name(client.get_job(job.job_id).state)
                except Exception as exc:  # noqa: BLE001 (a starved server)
                    state_streams = f"not told (GetJob: {_status(exc)})"
            finally:
                opened.close()
            watcher.join()
            final = client.get_job(job.job_id)
            replay = list(client.watch_job(job.job_id))
            idle = _load(address, token, job.job_id, clients, calls)
            floor = _load(address, token, job.job_id, clients, calls, methods=("Health",))
            validate = _validate_times(client, data)
    finally:
        server.terminate()
        server.wait(120)
    numbers = [e.number for e in watched]
    return {"busy": busy, "streams": with_streams, "validate": validate, "idle": idle, "floor": floor,
            "opened": opened.outcome,
            "state_at_streams_end": state_streams,
            "trials_done_at_load_end": state_during.progress.trials_done,
            "state_at_load_end": state_during.state, "final_state": final.state, "last_event": final.last_event,
            "watched": len(watched), "consecutive": numbers == list(range(1, final.last_event + 1)),
            "same_as_replay": [e.SerializeToString(deterministic=True) for e in watched]
            == [e.SerializeToString(deterministic=True) for e in replay],
            "kinds": {k: sum(1 for e in watched if e.WhichOneof("kind") == k)
                      for k in ("state", "trial", "best", "pareto", "progress", "log")}}


def report(out: dict[str, Any], clients: int, calls: int) -> None:
    from launcher.rpc.gen import search_pb2 as spb

    rows = []
    opened_count = sum(sum(c.values()) for c in out["opened"].values())
    titles = {"busy": "while the search runs", "streams": f"... and {opened_count} streams opened",
              "idle": "server idle", "floor": "idle, health Check only"}
    for name in ("busy", "streams", "idle", "floor"):
        r = out[name]
        per_method = [f"{r[f'{m}_{q}']:.2f}" if f"{m}_{q}" in r else "-"
                      for m in ("GetJob", "ListJobs") for q in ("p50", "p99")]
        rows.append([titles[name], r["calls"], len(r["errors"]), *per_method,
                     f"{r['all_p50']:.2f}", f"{r['all_p99']:.2f}", f"{r['calls'] / r['wall']:,.0f}"])
    print_table(f"{clients} clients x {calls} calls (GetJob / ListJobs alternating), latency in ms",
                ["", "calls", "errors", "GetJob p50", "p99", "ListJobs p50", "p99", "all p50", "all p99", "calls/s"],
                rows)
    busy, streams, idle = out["busy"], out["streams"], out["idle"]
    print(f"under load / idle: p50 {busy['all_p50'] / idle['all_p50']:.2f}x, p99 {busy['all_p99'] / idle['all_p99']:.2f}x;"
          f" the search was still {spb.JobState.Name(out['state_at_load_end'])} with "
          f"{out['trials_done_at_load_end']} trials done when the load ended")
    print(f"goal p99 < 20 ms while the search runs: {busy['all_p99']:.2f} ms "
          f"({'met' if busy['all_p99'] < 20 else 'NOT met'})")
    floor = out["floor"]
    print(f"the floor: a health Check (grpc's own servicer, a constant reply) from the same {clients} clients on the idle "
          f"server: p50 {floor['all_p50']:.2f} ms, p99 {floor['all_p99']:.2f} ms, {floor['calls'] / floor['wall']:,.0f} "
          f"calls/s; idle GetJob/ListJobs p99 = {idle['all_p99'] / floor['all_p99']:.2f}x the floor (closed loop: "
          f"latency ~ clients / calls per second)")
    opened = "; ".join(f"{kind}: " + ", ".join(f"{n} {what}" for what, n in sorted(c.items()))
                       for kind, c in out["opened"].items())
    ratio = streams["all_p99"] / idle["all_p99"]
    print(f"streams opened ({opened}); unary calls meanwhile: {len(streams['errors'])} errors (goal 0), "
          f"p99 {streams['all_p99']:.2f} ms = {ratio:.2f}x the idle server's (goal <= 3x: "
          f"{'met' if ratio <= 3 and not streams['errors'] else 'NOT met'}); the search was "
          f"{out['state_at_streams_end']} when it ended")
    for name in ("busy", "streams", "idle", "floor"):
        if out[name]["errors"]:
            counts = Counter(out[name]["errors"])
            print(f"  {titles[name]}: errors " + ", ".join(f"{n} x {what}" for what, n in counts.most_common()))
    print(f"WatchJob: {out['watched']} events received of {out['last_event']} stored "
          f"({out['kinds']}); numbers 1..{out['last_event']} without a gap: {out['consecutive']}; "
          f"identical to a replay of the stored events: {out['same_as_replay']}; "
          f"job {spb.JobState.Name(out['final_state'])}")
    print_table("ValidateArchitecture of a chain of mlp nodes (server idle)", ["nodes", "ms", "answer"],
                [[f"{r['nodes']:,}", f"{r['ms']:.0f}", r["answer"]] for r in out["validate"]])
    largest = out["validate"][-1]
    print(f"goal: a {largest['nodes']:,}-node ValidateArchitecture answered or refused in under 1 s: "
          f"{largest['ms']:.0f} ms ({'met' if largest['ms'] < 1000 else 'NOT met'})")


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    parser.add_argument("--clients", type=int, default=32)
    parser.add_argument("--calls", type=int, default=50)
    parser.add_argument("--trials", type=int, default=8)
    parser.add_argument("--streams", type=int, default=64, help="streams opened (half without a token)")
    args = parser.parse_args()
    with tempfile.TemporaryDirectory(prefix="rk-bench-rpc-") as work:
        out = measure(Path(work), args.clients, args.calls, args.trials, args.streams)
    report(out, args.clients, args.calls)


if __name__ == "__main__":
    main()
