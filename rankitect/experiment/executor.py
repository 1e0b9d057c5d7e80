"""Ray, in one place for the searchers: the connection, and a pool of trial workers.

`ray_session(address)` connects to a cluster, or starts a local Ray kept on 127.0.0.1 and
stops it afterwards. `TrialPool` keeps one actor per slot and runs two kinds of jobs on it:
trials (a TrialSpec) and calls (a module-level function with keyword arguments, e.g. one
supernet training of a one-shot or differentiable search). A job whose actor dies is run
again on a fresh actor, under the same id, up to `max_retries` times.

Ray is imported only inside these functions. For a local Ray (or one on 127.0.0.1),
RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 must be in the environment before the import, or Ray
rewrites 127.0.0.1 to the machine's outward address and cannot reach its own loopback
cluster: the entry points (the CLI, `rankitect.search`, the job driver) call
`ray_env.loopback_environment` first; nothing here changes the environment.
"""

from __future__ import annotations

import os
import sys
import time
from collections.abc import Callable, Iterator
from contextlib import contextmanager
from dataclasses import dataclass
from typing import Any

from rankitect.errors import UserError
from rankitect.experiment.ray_env import free_port, is_loopback, local_ray_folder
from rankitect.experiment.trial import TrialOutcome, TrialSpec, run_trial

LOCAL_OBJECT_STORE_BYTES = 512 * 1024**2



@contextmanager
def ray_session(address: str | None = None, dashboard: bool = False) -> Iterator[None]:
    """Connected to `address` (or an already initialized Ray), or to a local Ray started here;
    `dashboard`: that local Ray runs its dashboard on 127.0.0.1 (a free port), whose URL goes
    to stderr (a cluster at `address` has its own)."""
    import ray

    if ray.is_initialized():
        yield
        return
    try:
        if address:
            extra = {"_node_ip_address": "127.0.0.1"} if is_loopback(address) else {}
            ray.init(address=address, logging_level="WARNING", log_to_driver=False, **extra)
        else:
            shown = {"include_dashboard": True, "dashboard_host": "127.0.0.1", "dashboard_port": free_port()} \
                if dashboard else {"include_dashboard": False}
            context = ray.init(_node_ip_address="127.0.0.1", logging_level="WARNING",
                               object_store_memory=LOCAL_OBJECT_STORE_BYTES, log_to_driver=False,
                               _temp_dir=str(local_ray_folder()), **shown)
            if dashboard:
                print(f"Ray dashboard: http://{context.dashboard_url} (tasks are named by trial, baseline, "
                      f"lambda and shard)", file=sys.stderr, flush=True)
    except (ConnectionError, ValueError, RuntimeError) as exc:
        raise UserError(f"cannot connect to Ray at {address or 'a new local instance'}: {exc}") from None
    try:
        yield
    finally:
        ray.shutdown()


def cluster_slots(cpus_per_trial: int, gpus_per_trial: float) -> int:
    """How many trials the connected cluster runs at once."""
    import ray

    resources = ray.cluster_resources()
    slots = int(resources.get("CPU", 1) // cpus_per_trial)
    if gpus_per_trial > 0:
        slots = min(slots, int(resources.get("GPU", 0) // gpus_per_trial))
    if slots < 1:
        raise UserError(f"the Ray cluster ({resources.get('CPU', 0)} CPUs, {resources.get('GPU', 0)} GPUs) "
                        f"cannot fit one trial of {cpus_per_trial} CPUs and {gpus_per_trial} GPUs")
    return slots


class TrialWorker:
    """Runs trials in one process (a Ray actor), with torch limited to the CPUs it holds.
    `label` says whose worker it is (Ray's state API and dashboard show the actor's repr); each
    call on it carries the name of what it runs ("trial 7", "baseline dlrm", "lambda=0.1 shard
    2/3"), Ray's task name."""

    def __init__(self, threads: int, label: str = "") -> None:
        import torch

        torch.set_num_threads(threads)
        self.threads, self.label = threads, label

    def __repr__(self) -> str:
        return f"TrialWorker({self.label or 'rankitect'}, {self.threads} CPUs)"

    def run(self, spec: TrialSpec) -> TrialOutcome:
        return run_trial(spec)

    def call(self, fn: Callable[..., Any], kwargs: dict[str, Any]) -> Any:
        """fn(**kwargs); a dict result gains "worker": the Ray node id, host and pid it ran on."""
        import socket

        import ray

        result = fn(**kwargs)
        if isinstance(result, dict):
            result = {**result, "worker": {"node_id": ray.get_runtime_context().get_node_id(),
                                           "host": socket.gethostname(), "pid": os.getpid()}}
        return result


@dataclass(frozen=True)
class CallFailed:
    """What `TrialPool.wait` gives for a call job that raised or whose worker kept dying."""

    error: str


_remote_worker: Any = None


def _worker_class() -> Any:
    global _remote_worker
    if _remote_worker is None:
        import ray

        _remote_worker = ray.remote(TrialWorker)
    return _remote_worker


@dataclass
class _Job:
    job_id: Any
    spec: TrialSpec | None  # None for a call job
    call: tuple[Callable[..., Any], dict[str, Any]] | None = None
    attempts: int = 0
    submitted: float = 0.0
    label: str = ""  # the Ray task's name: what the call runs


class TrialPool:
    """Runs TrialSpecs on up to `size` actors. Not thread-safe. `label` names the actors (e.g.
    "search runs/tpe": what the pool's workers belong to, in Ray's views)."""

    def __init__(self, size: int, cpus: int, gpus: float, max_retries: int, label: str = "") -> None:
        self.size, self.cpus, self.gpus, self.max_retries, self.label = size, cpus, gpus, max_retries, label
        self._idle: list[Any] = []
        self._actors = 0
        self._running: dict[Any, tuple[_Job, Any]] = {}  # ObjectRef -> (job, actor)

    @property
    def free(self) -> int:
        return self.size - len(self._running)

    @property
    def busy(self) -> int:
        return len(self._running)

    def _actor(self) -> Any:
        if self._idle:
            return self._idle.pop()
        self._actors += 1
        return _worker_class().options(num_cpus=self.cpus, num_gpus=self.gpus).remote(self.cpus, self.label)

    def submit(self, job_id: Any, spec: TrialSpec) -> None:
        if self.free < 1:
            raise RuntimeError("TrialPool.submit with no free slot")
        self._start(_Job(job_id, spec, submitted=time.perf_counter(), label=spec.name))

    def submit_call(self, job_id: Any, fn: Callable[..., Any], task_name: str = "", **kwargs: Any) -> None:
        """Run `fn(**kwargs)` on a worker, a Ray task named `task_name` (default: the function's
        name); `fn` must be importable (defined at module level)."""
        if self.free < 1:
            raise RuntimeError("TrialPool.submit_call with no free slot")
        self._start(_Job(job_id, None, (fn, kwargs), submitted=time.perf_counter(), label=task_name or fn.__name__))

    def _start(self, job: _Job) -> None:
        actor = self._actor()
        job.attempts += 1
        method = actor.run if job.call is None else actor.call
        args = (job.spec,) if job.call is None else job.call
        ref = method.options(name=job.label).remote(*args)
        self._running[ref] = (job, actor)

    def wait(self, timeout: float | None = None) -> list[tuple[Any, Any, int]]:
        """Finished jobs as (job_id, result, attempts); a dead worker's job is restarted.

        A trial's result is its TrialOutcome, whose `wall_seconds` is the time from submit to
        result, retries included. A call's result is what the function returned, or CallFailed.
        """
        import ray
        from ray.exceptions import GetTimeoutError, RayActorError, RayTaskError

        if not self._running:
            return []
        done, _ = ray.wait(list(self._running), num_returns=1, timeout=timeout)
        finished = []
        for ref in done:
            job, actor = self._running.pop(ref)
            try:
                outcome = ray.get(ref)
                self._idle.append(actor)
            except RayActorError as exc:
                if job.attempts <= self.max_retries:
                    self._start(job)
                    continue
                error = f"worker died {job.attempts} times; last: {str(exc).splitlines()[0]}"
                outcome = TrialOutcome(status="failed", error=error) if job.call is None else CallFailed(error)
            except (RayTaskError, GetTimeoutError) as exc:
                self._idle.append(actor)
                error = str(exc).splitlines()[-1][:2000]
                outcome = TrialOutcome(status="failed", error=error) if job.call is None else CallFailed(error)
            if isinstance(outcome, TrialOutcome):
                outcome.wall_seconds = time.perf_counter() - job.submitted
            finished.append((job.job_id, outcome, job.attempts))
        return finished

    def shutdown(self) -> None:
        import ray

        for job, actor in self._running.values():
            ray.kill(actor)
        for actor in self._idle:
            ray.kill(actor)
        self._running.clear()
        self._idle.clear()
