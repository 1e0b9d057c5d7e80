"""`rankitect launch`: run `rankitect search` as a job on a Ray cluster, through Ray's Jobs API.

    rankitect launch --cluster http://HEAD:8265 --config FILE.yaml [--out DIR] [--set K=V ...]
    rankitect launch --cluster http://HEAD:8265 --follow JOB_ID | --stop JOB_ID

How a search travels:

- Checked here first. The config is loaded with its `--set` overrides and parsed as
  `rankitect search` would; when the dataset is visible from this machine the whole plan is
  checked (dates, space options, baselines), otherwise the searcher and the space name only.
  A bad config exits 2 before the cluster is contacted, so nothing is submitted.
- Paths. The job runs in an ephemeral copy of the working dir on the cluster, so a relative
  `data.path` and the run folder (`--out`, else the config's `out`, else runs/<config name>)
  are made absolute here, against the current directory, and printed; URIs (`://`) go as
  given. On a cluster of several machines both must be on storage every node sees.
  Architecture JSON files named in `baselines` are read relative to the job's working dir
  (they travel with it), so launch from the folder they are relative to.
- The working dir (`--working-dir`, default the current one) is shipped as the job's
  runtime_env `working_dir`, without EXCLUDES (virtual envs, git, run folders, caches,
  parquet), without the dataset or run folder when they lie inside it, and without what its
  .gitignore/.rayignore name (Ray's rule). Ray refuses a package of 512 MiB or more (its gRPC
  message limit, RAY_max_grpc_message_size) and warns above half of that.
- The resolved config (overrides applied, paths absolute) is not written into the user's
  folder: it travels as YAML in the job's env var RANKITECT_LAUNCH_CONFIG, and the entrypoint
  writes it into the job's copy of the working dir, under a name holding the job id, before
  running the search. No .gitignore can drop it, two launches never share it, and the Ray
  dashboard shows each job's exact config.
- The driver is `python -m launcher.cli search ... --address auto`, run by the cluster's
  `python` (the shipped dir first on its path, so the repo's code runs; otherwise the installed
  rankitect). In a job the supervisor sets RAY_ADDRESS to the cluster's GCS address, which
  `ray.init("auto")` reads: the search attaches to the cluster it runs in and starts no Ray of
  its own. The job inherits the environment of the cluster's processes (a loopback cluster
  started with RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 passes it on), so nothing is forced here.
- Following polls the job's status and whole log every second and prints what is new (it
  survives a dashboard that drops a request or restarts, unlike one websocket). The search
  draws its progress bar into the log (`search --progress`). Exit 0 when the job SUCCEEDED,
  1 when it FAILED or was STOPPED; Ctrl-C detaches (130) and leaves the job running.
- `--stop` has Ray send the driver SIGINT (RAY_JOB_STOP_SIGNAL, SIGKILL after
  STOP_GRACE_SECONDS), so the search saves result.json as after a Ctrl-C; launching the same
  config with the same --out continues it.
"""

from __future__ import annotations

import argparse
import logging
import os
import re
import secrets
import shlex
import sys
import time
from collections.abc import Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from pathlib import Path
from typing import TYPE_CHECKING, Any
from urllib.parse import urlsplit

from rankitect.errors import UserError
from rankitect.experiment.ray_env import auth_environment

if TYPE_CHECKING:
    from ray.job_submission import JobSubmissionClient

    from rankitect.experiment.config import SearchConfig

EXCLUDES = (".git", ".venv", "venv", "/.lockenv", "/.demo", "/runs", "/bench_out", "__pycache__", "*.pyc",
            ".pytest_cache", ".ruff_cache", ".mypy_cache", "*.egg-info", ".ipynb_checkpoints",
            "*.parquet")
CONFIG_ENV = "RANKITECT_LAUNCH_CONFIG"
TERMINAL = ("SUCCEEDED", "FAILED", "STOPPED")
POLL_SECONDS = 1.0
LOST_AFTER_SECONDS = 120.0  # following gives up after the dashboard failed this long in a row
STOP_WAIT_SECONDS = 60.0
STOP_GRACE_SECONDS = 30  # from the stop's SIGINT to Ray's SIGKILL
EXIT_DETACHED = 130


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("launch", help="run a search as a job on a Ray cluster (Ray Jobs API)",
                       description="Submit `rankitect search` to a Ray cluster as a job and follow its log; "
                                   "or follow / stop a submitted job.")
    p.add_argument("--cluster", required=True, metavar="URL", help="the Ray dashboard, e.g. http://HEAD:8265")
    what = p.add_mutually_exclusive_group(required=True)
    what.add_argument("--config", type=Path, help="search config (YAML): submit a new search")
    what.add_argument("--follow", metavar="JOB_ID", help="print a submitted job's log until it ends")
    what.add_argument("--stop", metavar="JOB_ID", help="stop a submitted job (its run can be continued)")
    p.add_argument("--out", type=Path, default=None,
                   help="run folder, as the cluster sees it (default: the config's out, or "
                        "runs/<config name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set budget.trials=10 (repeatable)")
    p.add_argument("--force", action="store_true", help="start over, replacing the run folder")
    p.add_argument("--working-dir", type=Path, default=None,
                   help="folder shipped as the job's working dir (default: the current one)")
    p.add_argument("--no-follow", action="store_true", help="print the job id and return once submitted")
    p.set_defaults(run=run_launch)


@dataclass(frozen=True)
class Submission:
    """A checked search, ready to submit: everything the job needs, paths resolved."""

    job_id: str
    config_yaml: str
    out: str
    working_dir: Path
    excludes: tuple[str, ...]
    force: bool

    @property
    def config_file(self) -> str:
        return f".launch-{self.job_id}.yaml"

    def search_command(self) -> str:
        argv = ["python", "-m", "launcher.cli", "search", "--config", self.config_file, "--out",
                self.out, "--address", "auto", "--progress"]
        return shlex.join(argv + (["--force"] if self.force else []))

    def entrypoint(self) -> str:
        """Write the config (from the env) into the job's copy of the working dir, then search."""
        return f'printf "%s" "${CONFIG_ENV}" > {shlex.quote(self.config_file)} && {self.search_command()}'


def run_launch(args: argparse.Namespace) -> int:
    """Submit (and follow), follow, or stop; the exit code."""
    cluster = check_cluster_url(args.cluster)
    submission = None
    if args.config is not None:
        submission = prepare(args)  # before the cluster is contacted: a bad config submits nothing
    else:
        given = {"--out": args.out, "--set": args.overrides, "--force": args.force,
                 "--working-dir": args.working_dir, "--no-follow": args.no_follow}
        extra = [flag for flag, value in given.items() if value]
        if extra:
            raise UserError(f"{extra[0]}: goes with --config only")
    client = connect(cluster)
    if args.stop:
        return stop(client, cluster, args.stop)
    if args.follow:
        return follow(client, cluster, args.follow)
    assert submission is not None
    job_id = submit(client, cluster, submission)
    if args.no_follow:
        print(_how_to(cluster, job_id), file=sys.stderr)
        print(job_id)
        return 0
    try:
        _say("following its log (Ctrl-C detaches; the job keeps running)")
        return follow(client, cluster, job_id, known=True)
    except KeyboardInterrupt:  # between the submission and the log
        return _detached(cluster, job_id)


def check_cluster_url(value: str) -> str:
    """`value` without a trailing slash; UserError unless it is an http(s) URL with a host."""
    parts = urlsplit(value)
    if parts.scheme not in ("http", "https") or not parts.hostname:
        raise UserError(f"--cluster {value!r}: must be the Ray dashboard's http(s) URL, "
                        f"e.g. http://HEAD:8265")
    return value.rstrip("/")


def prepare(args: argparse.Namespace) -> Submission:
    """Load, override, check the config; resolve paths; ConfigError/UserError if anything is off."""
    import yaml

    from launcher.config_file import load_config
    from rankitect.errors import ConfigError
    from rankitect.experiment.config import SearchConfig

    raw = load_config(args.config, args.overrides)
    out = args.out or raw.get("out") or Path("runs") / args.config.stem
    if not isinstance(out, (str, Path)):
        raise ConfigError(f"out: must be a folder path, got {out!r}")
    config = SearchConfig.from_dict(raw)
    data, out = _absolute(config.data.path), _absolute(str(out))
    raw["data"]["path"], raw["out"] = data, out
    check_plan(SearchConfig.from_dict(raw), out)
    working_dir = (args.working_dir or Path(".")).resolve()
    if not working_dir.is_dir():
        raise UserError(f"--working-dir {args.working_dir}: not a folder")
    excludes = EXCLUDES + tuple(x for x in (_inside(working_dir, data), _inside(working_dir, out)) if x)
    stem = re.sub(r"[^A-Za-z0-9_-]+", "-", args.config.stem)[:40] or "search"
    job_id = f"rankitect-{stem}-{time.strftime('%Y%m%d-%H%M%S')}-{secrets.token_hex(3)}"
    _say(f"config {args.config}: ok ({config.searcher.name} over {config.space.name}, "
         f"{config.budget.trials} trials)")
    _say(f"the cluster reads data from {data} and writes the run to {out}")
    _say("(on a cluster of several machines both must be on storage that every node sees)")
    return Submission(job_id, yaml.safe_dump(raw, sort_keys=False), out, working_dir, excludes, args.force)


def check_plan(config: SearchConfig, out: str) -> None:
    """The checks `rankitect search` makes before it starts, as far as they can be made here.

    With the dataset visible from this machine: all of them (dates, space options, baselines).
    Otherwise the searcher (name, options) and the space name; the cluster checks the rest.
    """
    from rankitect.experiment.plan import plan_search
    from rankitect.searchers.base import searcher_options
    from rankitect.space import get_space

    if "://" not in config.data.path and Path(config.data.path).is_dir():
        plan_search(config, Path(out))
        return
    _say(f"note: {config.data.path} is not visible from here; the data, dates and space options are "
         f"checked on the cluster")
    searcher_options(config.searcher.name, config.searcher.options, config.directions)
    get_space(config.space.name)


def connect(cluster: str) -> JobSubmissionClient:
    """A JobSubmissionClient for `cluster`; UserError naming --cluster when there is no dashboard."""
    _probe(cluster)
    os.environ.setdefault("RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER", "0")  # before Ray is imported, as elsewhere
    auth_environment(cluster)  # a token in RAY_AUTH_TOKEN / RAY_AUTH_TOKEN_PATH goes with every call
    from ray.exceptions import AuthenticationError
    from ray.job_submission import JobSubmissionClient

    try:
        with _quiet_ray_logs():
            return JobSubmissionClient(cluster)
    except AuthenticationError as exc:
        given = "the token given was refused" if os.environ.get("RAY_AUTH_MODE") == "token" else "no token was given"
        raise UserError(f"--cluster {cluster}: the cluster wants Ray's token and {given}: set RAY_AUTH_TOKEN or "
                        f"RAY_AUTH_TOKEN_PATH to the cluster's token ({_first_line(exc)})") from None
    except (OSError, RuntimeError, ValueError) as exc:
        raise UserError(f"--cluster {cluster}: no Ray Jobs API there: {_first_line(exc)}") from None


def submit(client: JobSubmissionClient, cluster: str, sub: Submission) -> str:
    """Upload the working dir and submit the search; returns the job id."""
    env_vars = {CONFIG_ENV: sub.config_yaml, "RAY_JOB_STOP_SIGNAL": "SIGINT",
                "RAY_JOB_STOP_WAIT_TIME_S": str(STOP_GRACE_SECONDS)}
    runtime_env = {"working_dir": str(sub.working_dir), "excludes": list(sub.excludes), "env_vars": env_vars}
    inside = "".join(f", {x}" for x in sub.excludes[len(EXCLUDES):])
    _say(f"shipping {sub.working_dir} as the job's working dir (without virtual envs, .git, run folders, "
         f"caches, parquet files, what its .gitignore names{inside})")
    try:
        with _quiet_ray_logs():
            job_id = client.submit_job(entrypoint=sub.entrypoint(), submission_id=sub.job_id,
                                       runtime_env=runtime_env,
                                       metadata={"rankitect": "search", "out": sub.out})
    except (OSError, RuntimeError, ValueError) as exc:
        raise UserError(f"--cluster {cluster}: the job was not submitted: {exc}") from None
    _say(f"submitted job {job_id}: {sub.search_command()}")
    return str(job_id)


def follow(client: JobSubmissionClient, cluster: str, job_id: str, known: bool = False) -> int:
    """Print the job's log as it grows until the job ends: 0 if it SUCCEEDED, else 1; 130 on Ctrl-C."""
    if not known:
        _say(f"job {job_id}: {job_status(client, cluster, job_id)}")
    printed, failing_since, status, ends_with_newline = 0, None, "PENDING", True
    try:
        while True:
            try:
                status = _value(client.get_job_status(job_id))
                logs = client.get_job_logs(job_id)  # after the status: a finished job's log is complete
                failing_since = None
            except (OSError, RuntimeError) as exc:
                failing_since = failing_since or time.monotonic()
                if time.monotonic() - failing_since > LOST_AFTER_SECONDS:
                    _say(f"lost the dashboard at {cluster}: {_first_line(exc)}")
                    print(_how_to(cluster, job_id), file=sys.stderr)
                    return 1
                time.sleep(POLL_SECONDS)
                continue
            if len(logs) < printed:  # never seen; the log does not shrink
                printed = 0
            if len(logs) > printed:
                sys.stdout.write(logs[printed:])
                sys.stdout.flush()
                ends_with_newline, printed = logs.endswith("\n"), len(logs)
            if status in TERMINAL:
                break
            time.sleep(POLL_SECONDS)
    except KeyboardInterrupt:
        print(flush=True)
        return _detached(cluster, job_id)
    if not ends_with_newline:
        print(flush=True)
    _say(_final_line(client, job_id, status))
    return 0 if status == "SUCCEEDED" else 1


def stop(client: JobSubmissionClient, cluster: str, job_id: str) -> int:
    """Ask the cluster to stop the job and wait (a while) until it has; 0 unless the job is unknown."""
    status = job_status(client, cluster, job_id)
    if status in TERMINAL:
        _say(f"job {job_id} already {status}; nothing to stop")
        return 0
    try:
        client.stop_job(job_id)
    except (OSError, RuntimeError) as exc:
        raise UserError(f"--stop {job_id}: {_first_line(exc)}") from None
    deadline = time.monotonic() + STOP_WAIT_SECONDS
    while status not in TERMINAL and time.monotonic() < deadline:
        time.sleep(0.5)
        status = job_status(client, cluster, job_id)
    if status not in TERMINAL:
        _say(f"stop requested; job {job_id} is still {status}")
        return 0
    _say(f"job {job_id} {status}; launch the same config with the same --out to continue its search")
    return 0


def job_status(client: JobSubmissionClient, cluster: str, job_id: str) -> str:
    """The job's status; UserError if the cluster does not know the job."""
    try:
        return _value(client.get_job_status(job_id))
    except RuntimeError as exc:
        if "does not exist" in str(exc) or "404" in str(exc):
            raise UserError(f"job {job_id!r}: no such job on {cluster} "
                            f"(`ray job list --address {cluster}` lists them)") from None
        raise UserError(f"--cluster {cluster}: {_first_line(exc)}") from None
    except OSError as exc:
        raise UserError(f"--cluster {cluster}: {_first_line(exc)}") from None


def _final_line(client: JobSubmissionClient, job_id: str, status: str) -> str:
    line = f"job {job_id} {status}"
    if status == "SUCCEEDED":
        return line
    try:
        info = client.get_job_info(job_id)
    except (OSError, RuntimeError):
        return line
    if info.driver_exit_code is not None and status == "FAILED":
        return f"{line}: the search exited with code {info.driver_exit_code} (its log is above)"
    return f"{line}: {_first_line(info.message)}" if info.message else line


def _probe(cluster: str) -> None:
    """UserError naming --cluster when nothing answers HTTP there (in seconds, not TCP's minutes)."""
    import urllib.error
    import urllib.request

    try:
        with urllib.request.urlopen(f"{cluster}/api/version", timeout=10):
            pass
    except urllib.error.HTTPError:
        return  # something answers (a proxy asking for credentials?): the Jobs client tells the rest
    except (OSError, ValueError) as exc:
        reason = getattr(exc, "reason", exc)
        raise UserError(f"--cluster {cluster}: cannot reach the Ray dashboard ({reason}); is the head up, "
                        f"with the dashboard on, and is the port right (8265 by default)?") from None


@contextmanager
def _quiet_ray_logs() -> Iterator[None]:
    """Ray's INFO lines about packaging (and its notes on default excludes) off while it uploads."""
    levels = {"ray": logging.WARNING, "ray.dashboard.modules.dashboard_sdk": logging.WARNING,
              "ray._private.runtime_env.working_dir": logging.ERROR}
    saved = {name: logging.getLogger(name).level for name in levels}
    for name, level in levels.items():
        logging.getLogger(name).setLevel(max(level, logging.getLogger(name).level))
    try:
        yield
    finally:
        for name, level in saved.items():
            logging.getLogger(name).setLevel(level)


def _absolute(path: str) -> str:
    return path if "://" in path else os.path.abspath(os.path.expanduser(path))


def _inside(root: Path, path: str) -> str:
    """`/rel/path` (an exclude anchored at the working dir) when `path` lies inside `root`, else ""."""
    if "://" in path:
        return ""
    try:
        rel = Path(os.path.realpath(path)).relative_to(root)
    except ValueError:
        return ""
    return f"/{rel.as_posix()}" if rel.parts else ""


def _detached(cluster: str, job_id: str) -> int:
    _say(f"detached; job {job_id} keeps running on the cluster")
    print(_how_to(cluster, job_id), file=sys.stderr)
    return EXIT_DETACHED


def _how_to(cluster: str, job_id: str) -> str:
    return (f"  follow it: rankitect launch --cluster {cluster} --follow {job_id}\n"
            f"  stop it:   rankitect launch --cluster {cluster} --stop {job_id}")


def _value(status: Any) -> str:
    return str(getattr(status, "value", status))


def _first_line(exc: object) -> str:
    text = str(exc).strip()
    return text.splitlines()[0] if text else type(exc).__name__


def _say(text: str) -> None:
    print(f"rankitect: {text}", file=sys.stderr, flush=True)
