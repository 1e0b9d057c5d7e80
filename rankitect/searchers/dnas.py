"""Differentiable search (DNAS) with a FLOPs-aware loss, one supernet per lambda.

For each lambda in `searcher.lambdas` a worker trains the space's mixed-op supernet:

    loss = logloss + lambda * E[FLOPs per example] / reference FLOPs

the expectation taken over the choices' (Gumbel-)softmax probabilities with every candidate's
FLOPs from the registry; the reference is the FLOPs of the space's largest architecture, so
lambda = 1 trades one nat of log-loss against the whole largest model. The temperature falls
exponentially from `temperature[0]` to `temperature[1]` over the steps, of which there are
`epochs` passes over the train dates, more when those give under `min_steps` (a small table's
epoch is a few dozen batches: too few logit updates to leave uniform).

mode "alternating" (DARTS first order): every k-th training batch (k = 1 / arch_fraction) is
held out of the weight updates and used to update the architecture logits only; "joint":
both from the same batch. Architecture updates start after `warmup_fraction` of the steps.

Each lambda derives one architecture (argmax; `threshold` drops a layer whose module is less
likely than it). The proposals are the distinct derived architectures, each trained from
scratch as one trial; trials carry the lambdas that derived them.
"""

from __future__ import annotations

import math
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F

from rankitect.cost import cost_of
from rankitect.data.dataset import Dataset
from rankitect.errors import ConfigError
from rankitect.searchers.base import SearcherOptions, register_searcher
from rankitect.searchers.planned import (
    PlannedSearcher,
    PlanningContext,
    PlanningJob,
    Proposal,
    add_lambda_proposal,
)
from rankitect.searchers.supernet_train import (
    EpochCheckpoint,
    JobProgress,
    read_json,
    scale_lr,
    train_steps,
    write_json,
)
from rankitect.space import SearchSpace
from rankitect.test_gate import wait_at_gate
from rankitect.train.config import TrainConfig
from rankitect.train.optimizers import model_optimizer, tables_frozen

MODES = ("alternating", "joint")


@dataclass(frozen=True)
class DnasOptions(SearcherOptions):
    lambdas: tuple[float, ...] = (0.0, 0.01, 0.1)
    epochs: int = 1  # supernet training passes over the train dates
    min_steps: int = 400  # more passes when `epochs` give fewer steps (small tables: enough logit updates)
    mode: str = "alternating"
    arch_fraction: float = 0.2  # alternating: share of the batches held out for logit updates
    arch_lr: float = 0.01  # Adam on the architecture logits
    warmup_fraction: float = 0.2  # steps that train the weights only
    gumbel: bool = False
    temperature: tuple[float, ...] = (1.0, 0.2)  # (start, end), exponential decay
    threshold: float = 0.0
    normalize: bool = False  # candidates' outputs scaled to unit RMS before mixing (see the space's supernet)

    def check(self) -> None:
        super().check()
        if not self.lambdas or any(not (math.isfinite(v) and v >= 0) for v in self.lambdas):
            raise ConfigError(f"searcher.lambdas: must be a non-empty list of finite values >= 0, got "
                              f"{list(self.lambdas)}")
        self.require_at_least("epochs", 1)
        self.require_at_least("min_steps", 0)
        self.require_one_of("mode", MODES)
        if not 0 < self.arch_fraction < 1:
            raise ConfigError(f"searcher.arch_fraction: must be in (0, 1), got {self.arch_fraction}")
        if not self.arch_lr > 0:
            raise ConfigError(f"searcher.arch_lr: must be > 0, got {self.arch_lr}")
        if not 0 <= self.warmup_fraction < 1:
            raise ConfigError(f"searcher.warmup_fraction: must be in [0, 1), got {self.warmup_fraction}")
        if len(self.temperature) != 2 or not all(t > 0 for t in self.temperature):
            raise ConfigError(f"searcher.temperature: must be [start, end], both > 0, got "
                              f"{list(self.temperature)}")
        if not 0 <= self.threshold < 1:
            raise ConfigError(f"searcher.threshold: must be in [0, 1), got {self.threshold}")


def temperature_at(step: int, total: int, start: float, end: float) -> float:
    """Exponential decay from `start` (step 0) to `end` (last step)."""
    return start * (end / start) ** (step / max(total - 1, 1))


def train_dnas(data_path: str, space: SearchSpace, train_dates: tuple[str, ...], train: TrainConfig,
               opts: DnasOptions, lam: float, seed: int, out_file: str,
               progress_file: str | None = None) -> dict[str, Any]:
    """Train one mixed-op supernet with FLOPs weight `lam`; its derived architecture and the
    final choice probabilities. Reuses `out_file` when an earlier run finished it, and
    continues from the last finished epoch otherwise."""
    done = read_json(Path(out_file))
    if done is not None:
        return done
    started = time.perf_counter()
    dataset = Dataset.shared(data_path)
    torch.manual_seed(seed)
    net = space.mixed_supernet(opts.normalize)
    reference = float(cost_of(space.decode(space.largest()), dataset.schema).flops)
    weights = model_optimizer(net, train, torch.device("cpu"), exclude=list(net.arch_parameters()))
    arch = torch.optim.Adam(list(net.arch_parameters()), lr=opts.arch_lr, betas=(0.5, 0.999))
    period = max(2, round(1 / opts.arch_fraction))
    losses: list[float] = []
    checkpoint = EpochCheckpoint(Path(out_file).with_suffix(".ckpt"))
    parts = {"model": net, "weights": weights, "arch": arch}
    start, extra = checkpoint.resume(parts)
    if extra:
        torch.set_rng_state(extra["torch_rng"])  # Gumbel noise continues as in a straight run
        losses = extra["losses"]
    progress = JobProgress(progress_file, f"dnas lambda={lam:g}")
    net.train()
    for step in train_steps(dataset, train_dates, train, opts.epochs, seed, start_epoch=start, min_steps=opts.min_steps):
        warm = step.index < opts.warmup_fraction * step.total
        tau = temperature_at(step.index, step.total, *opts.temperature)
        arch_step = not warm and (opts.mode == "joint" or step.index % period == 0)
        weight_step = opts.mode == "joint" or warm or step.index % period != 0
        batch = step.batch
        with tables_frozen(net, not weight_step):  # fused tables update in any backward through them
            loss = F.binary_cross_entropy_with_logits(net(batch.dense, batch.sparse, tau, opts.gumbel),
                                                      batch.labels)
        losses.append(loss.item())
        if arch_step:
            loss = loss + lam * net.expected_flops(tau) / reference
        scale_lr(weights, step.lr_factor)
        weights.zero_grad(set_to_none=True)
        arch.zero_grad(set_to_none=True)
        loss.backward()
        if weight_step:
            weights.step()
        if arch_step:
            arch.step()
        if step.ends_epoch:  # saved before the progress that reports the epoch done
            checkpoint.save(step.epoch + 1, parts, torch_rng=torch.get_rng_state(), losses=losses)
        progress.update(step.index + 1, step.total, force=step.ends_epoch)
        if step.ends_epoch:
            wait_at_gate(f"{Path(out_file).stem}-epoch {step.epoch + 1}")  # a test's hold point
    choices = net.derive(opts.threshold)
    probabilities = net.probabilities()
    with torch.no_grad():
        expected = float(net.expected_flops(1.0))
    tail = losses[-max(1, len(losses) // 10):]
    result = {"lambda": lam, "choices": choices,
              "flops": cost_of(space.decode(choices), dataset.schema).flops,
              "expected_flops": expected, "reference_flops": reference, "supernet_flops": net.full_flops(),
              "train_logloss_last_tenth": sum(tail) / len(tail), "steps": len(losses),
              "probabilities": {name: {str(k): v for k, v in p.items()} for name, p in probabilities.items()},
              "option_probabilities": {c.name: [probabilities[c.name][o] for o in c.options]
                                       for c in space.choices() if c.name in probabilities},
              "seconds": time.perf_counter() - started, "resumed_at_epoch": start}
    write_json(Path(out_file), result)
    checkpoint.remove()
    return result


def dnas_job(context: PlanningContext, space: SearchSpace, options: DnasOptions, seed: int, lam: float,
             dates: tuple[str, ...], folder: str, name: str, label: str) -> PlanningJob:
    """The `train_dnas` job of one supernet on `dates`, writing RUN/planning/`folder`/`name`.json."""
    (context.folder / folder).mkdir(exist_ok=True)
    return PlanningJob(label, train_dnas, {
        "data_path": context.data_path, "space": space, "train_dates": dates, "train": context.train,
        "opts": options, "lam": lam, "seed": seed, "out_file": str(context.folder / folder / f"{name}.json"),
        "progress_file": context.progress_file(name)})


@register_searcher
class Dnas(PlannedSearcher):
    name = "dnas"
    Options = DnasOptions
    needs_supernet = "mixed"

    def plan_key(self, context: PlanningContext) -> dict[str, Any]:
        return {}  # budget.trials does not apply: one trial per distinct derived architecture

    def propose(self, context: PlanningContext) -> tuple[list[Proposal], dict[str, Any]]:
        opts = self.options
        jobs = {i: dnas_job(context, self.space, opts, self.seed, lam, context.train_dates, "dnas", f"lambda_{i}",
                            f"dnas lambda={lam:g}") for i, lam in enumerate(opts.lambdas)}
        context.log(f"training {len(jobs)} mixed-op supernets (lambdas {list(opts.lambdas)})")
        results = context.run_jobs(jobs)
        runs = [results[i] for i in jobs]
        proposals: dict[str, Proposal] = {}
        for run in runs:
            add_lambda_proposal(proposals, self.space.check_choices(run["choices"]), run["lambda"],
                                {"derived_flops": run["flops"], "expected_flops": run["expected_flops"]})
        summary = {"searcher": "dnas",
                   "lambdas": [{k: r[k] for k in ("lambda", "flops", "expected_flops", "reference_flops",
                                                  "train_logloss_last_tenth", "steps", "seconds", "choices",
                                                  "probabilities")} for r in runs]}
        return list(proposals.values()), summary
