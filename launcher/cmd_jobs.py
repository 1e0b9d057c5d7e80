"""Clients of a `rankitect serve`: submit, jobs, watch, cancel, resume, result, download.

Each takes --server HOST:PORT and --token-file (or $RANKITECT_TOKEN), --tls-ca for TLS. A
refused call prints `rankitect: HOST:PORT: STATUS: detail` and exits 2 when the call was
the caller's mistake (INVALID_ARGUMENT, NOT_FOUND, FAILED_PRECONDITION, PERMISSION_DENIED,
UNAUTHENTICATED, ...), 1 otherwise (UNAVAILABLE, RESOURCE_EXHAUSTED, INTERNAL).
"""

from __future__ import annotations

import argparse
import datetime as dt
import json
import shutil
import sys
import tarfile
import tempfile
from pathlib import Path
from typing import Any

from launcher.jobs.store import STATES
from rankitect.errors import UserError


def add_parser(sub: argparse._SubParsersAction) -> None:
    from launcher.rpc.cli_args import add_client_args

    def command(name: str, help_text: str, run: Any, job: bool = True) -> argparse.ArgumentParser:
        p = sub.add_parser(name, help=help_text)
        if job:
            p.add_argument("job_id", metavar="JOB", help="the job id, e.g. job-000001")
        add_client_args(p, required=True)
        p.set_defaults(run=_rpc(run))
        return p

    p = command("submit", "submit a search config to a `rankitect serve` (prints the job id last)", run_submit,
                job=False)
    p.add_argument("--config", required=True, type=Path, help="search config (YAML), as `rankitect search` takes")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key on the server (repeatable)")
    p.add_argument("--request-id", default=None,
                   help="makes a retry safe: the same id and config give the same job (default: none)")
    p.add_argument("--validate-only", action="store_true", help="check the config on the server, create nothing")
    p = command("jobs", "list your jobs on a `rankitect serve`: id, state, searcher, trials, best NE", run_jobs,
                job=False)
    p.add_argument("--state", dest="states", action="append", default=[], choices=STATES,
                   help="only jobs in this state (repeatable)")
    p = command("watch", "follow a job's events until it ends (exit 0 when it succeeded)", run_watch)
    p.add_argument("--from", dest="from_event", type=int, default=0, metavar="N", help="start at event N")
    command("cancel", "cancel a queued or running job (its finished trials are kept)", run_cancel)
    command("resume", "queue a cancelled or failed job again; it continues from its checkpoint", run_resume)
    p = command("result", "a job's Pareto front, best trial and baselines", run_result)
    p.add_argument("--json", action="store_true", help="print the job's result.json")
    p = command("download", "download a succeeded job's exported model into a folder", run_download)
    p.add_argument("--out", required=True, type=Path, metavar="DIR", help="folder to write the artifact into")
    p.add_argument("--force", action="store_true", help="replace DIR if it exists")


def _rpc(run: Any) -> Any:
    def call(args: argparse.Namespace) -> int:
        from launcher.rpc.cli_args import client_from_args
        from launcher.rpc.errors import rpc_command

        def with_client(a: argparse.Namespace) -> int:
            with client_from_args(a) as client:
                return run(a, client)

        return rpc_command(with_client)(args)

    return call


def _when(stamp: Any) -> str:
    if not stamp.seconds and not stamp.nanos:
        return "-"
    return dt.datetime.fromtimestamp(stamp.seconds, dt.timezone.utc).strftime("%Y-%m-%d %H:%M:%SZ")


def _state(value: int) -> str:
    from launcher.rpc.job_convert import state_from_proto

    return state_from_proto(value)


def job_line(job: Any) -> str:
    """JOB  STATE  SEARCHER  done/total  best NE  created."""
    best = f"{job.best.metrics.ne:.4f}" if job.HasField("best") else "-"
    trials = f"{job.progress.trials_done}/{job.progress.trials_total or '?'}"
    return (f"{job.job_id:<12} {_state(job.state):<10} {job.searcher:<10} {trials:>7}  best NE {best:<7} "
            f"created {_when(job.created_at)}")


def run_submit(args: argparse.Namespace, client: Any) -> int:
    try:
        text = args.config.read_text()
    except (OSError, UnicodeDecodeError) as exc:
        raise UserError(f"--config {args.config}: cannot read it: {getattr(exc, 'strerror', None) or exc}") from None
    job, created = client.submit_search(text, args.overrides, args.request_id, args.validate_only)
    if args.validate_only:
        print(f"config is valid: {job.name}, {job.progress.trials_total} trials; nothing submitted")
        return 0
    print(f"{'submitted' if created else 'already submitted (same request id and config)'}: {job_line(job)}")
    print(f"follow it: rankitect watch {job.job_id} --server {args.server}")
    print(job.job_id)
    return 0


def run_jobs(args: argparse.Namespace, client: Any) -> int:
    from launcher.rpc.job_convert import state_to_proto

    for job in client.list_jobs(states=[state_to_proto(s) for s in args.states]):
        print(job_line(job))
    return 0


def event_line(event: Any) -> str:
    """One line of `rankitect watch` for a JobEvent."""
    from launcher.rpc.gen import search_pb2 as spb

    kind = event.WhichOneof("kind")
    head = f"#{event.number:<4} {_when(event.time)[11:19]}"
    if kind == "state":
        return f"{head} {_state(event.state.state)}: {event.state.message}"
    if kind == "trial":
        t, p = event.trial.trial, event.trial.progress
        status = spb.TrialStatus.Name(t.status).removeprefix("TRIAL_STATUS_").lower()
        complete = t.status == spb.TRIAL_STATUS_COMPLETE
        score = f"valid NE {t.metrics.ne:.4f}, {t.metrics.flops_per_example:,} FLOPs/ex" if complete else t.error
        return f"{head} trial {t.number} {status}: {score} ({p.trials_done}/{p.trials_total})"
    if kind == "best":
        t = event.best.trial
        return f"{head} new best: trial {t.number}, valid NE {t.metrics.ne:.4f}, test NE {t.test_metrics.ne:.4f}"
    if kind == "pareto":
        points = ", ".join(f"{f'#{t.number}' if t.number >= 0 else t.name} ({t.metrics.ne:.4f}, "
                           f"{t.metrics.flops_per_example:,})" for t in event.pareto.points)
        return f"{head} front (NE, FLOPs): {points}"
    if kind == "progress":
        p = event.progress
        return f"{head} {p.phase}: {p.done}/{p.total} {p.unit}" if p.total else f"{head} phase {p.phase}"
    return f"{head} [{event.log.source}] {event.log.text}"


def run_watch(args: argparse.Namespace, client: Any) -> int:
    if args.from_event < 0:
        raise UserError(f"--from {args.from_event}: must be >= 0")
    for event in client.watch_job(args.job_id, from_event=args.from_event):
        print(event_line(event), flush=True)
    job = client.get_job(args.job_id)
    state = _state(job.state)
    print(f"{job.job_id} {state}" + (f": {job.error}" if job.error else ""))
    return 0 if state == "SUCCEEDED" else 1


def run_cancel(args: argparse.Namespace, client: Any) -> int:
    print(job_line(client.cancel_job(args.job_id)))
    return 0


def run_resume(args: argparse.Namespace, client: Any) -> int:
    print(job_line(client.resume_job(args.job_id)))
    return 0


def run_result(args: argparse.Namespace, client: Any) -> int:
    from rankitect.experiment.report import report_lines

    reply = client.get_result(args.job_id)
    result = json.loads(reply.result_json)
    if args.json:
        print(json.dumps(result, indent=2))
        return 0
    print(f"{reply.job_id} {_state(reply.state)}")
    print("\n".join(report_lines(result)))
    return 0


def run_download(args: argparse.Namespace, client: Any) -> int:
    out = args.out
    if out.exists() and not args.force:
        raise UserError(f"--out {out}: exists; use --force to replace it")
    from rankitect.export.artifact import check_target

    check_target(out, force=True)  # even with --force, only an earlier export is replaced
    try:
        out.parent.mkdir(parents=True, exist_ok=True)
        scratch_dir = tempfile.TemporaryDirectory(prefix=".rankitect-download-", dir=out.parent)
    except OSError as exc:  # a file as a parent, a read-only or virtual file system
        raise UserError(f"--out {out}: cannot write there ({exc.strerror or exc})") from None
    with scratch_dir as scratch:
        archive = Path(scratch) / "model.tar.gz"
        info = client.download_artifact(args.job_id, archive)
        unpacked = Path(scratch) / "unpacked"
        with tarfile.open(archive, "r:gz") as tar:
            tar.extractall(unpacked, filter="data")
        folders = list(unpacked.iterdir())
        if len(folders) != 1 or not folders[0].is_dir():
            raise UserError(f"{info.name}: expected one folder in the archive, got {[f.name for f in folders]}")
        if out.exists():
            shutil.rmtree(out)
        folders[0].replace(out)
    print(f"{out}: {info.name} ({info.size:,} bytes, sha256 {info.sha256[:16]}...); serve it with "
          f"python {out / 'rankitect_serving.py'} {out} ROWS.jsonl", file=sys.stdout)
    return 0
