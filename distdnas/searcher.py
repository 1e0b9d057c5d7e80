"""`distdnas`: DNAS spread over data-date shards, one Ray worker job per (lambda, shard).

The train dates are cut into shards of `dates_per_shard` consecutive dates (the last shard
may be shorter). For every lambda and shard, a worker trains the space's mixed-op supernet
with the cost-aware loss of `dnas` on that shard's dates only (the worker reads them from the
dataset path itself) and returns its choice probabilities, its training log-loss and its step
count. Per lambda, `aggregation` ("mean" or "vote", see distdnas.aggregate) turns the shards'
weights into one architecture; distinct architectures are retrained from scratch on all the
train dates as trials, one Pareto point per lambda.

RUN/planning/distdnas/ keeps each finished shard: a search run again skips them.
"""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

from distdnas.aggregate import AGGREGATIONS, aggregate
from rankitect.searchers.base import register_searcher
from rankitect.searchers.dnas import Dnas, DnasOptions, dnas_job
from rankitect.searchers.planned import PlanningContext, Proposal, add_lambda_proposal

SHARD_KEYS = ("lambda", "flops", "expected_flops", "train_logloss_last_tenth", "steps", "seconds", "choices")


@dataclass(frozen=True)
class DistDnasOptions(DnasOptions):
    """DnasOptions, with defaults for a shard's few steps: "joint" updates the logits on every
    batch and arch_lr 0.05 lets them move. On 50k-row days (bench_distdnas) the "dnas"
    defaults (alternating, 0.01) left them within 0.02 of uniform, so the days' argmaxes were
    noise. `normalize` puts the candidates on one scale: without it every day's first layer
    chose dcn (its cross passes its input through) over dot, which fits the planted pairs
    better on the full data; with it, and 3 passes over the shard, all six days chose dot
    first. With 1 pass every day chose dcn (dot's products of young embeddings had not paid
    off yet); with 5 passes dcn again, by a hair (lambda 0; the logits follow the training
    loss, which rewards what fits a day's rows closest)."""

    epochs: int = 3  # passes over the shard's dates
    min_steps: int = 0  # a shard's passes are `epochs`, whatever its size
    mode: str = "joint"
    arch_lr: float = 0.05
    normalize: bool = True
    dates_per_shard: int = 1
    aggregation: str = "mean"

    def check(self) -> None:
        super().check()
        self.require_at_least("dates_per_shard", 1)
        self.require_one_of("aggregation", AGGREGATIONS)


def shard_dates(dates: tuple[str, ...], per_shard: int) -> list[tuple[str, ...]]:
    """Consecutive groups of `per_shard` dates, in date order."""
    ordered = sorted(dates)
    return [tuple(ordered[i:i + per_shard]) for i in range(0, len(ordered), per_shard)]


@register_searcher
class DistDnas(Dnas):
    """DNAS per (lambda, shard); one trial per distinct aggregated architecture (budget.trials
    does not apply, as for `dnas`)."""

    name = "distdnas"
    Options = DistDnasOptions

    def propose(self, context: PlanningContext) -> tuple[list[Proposal], dict[str, Any]]:
        opts = self.options
        shards = shard_dates(context.train_dates, opts.dates_per_shard)
        jobs = {(i, j): dnas_job(context, self.space, opts, self.seed, lam, dates, "distdnas", f"lambda_{i}_shard_{j}",
                                 f"lambda={lam:g} shard {j + 1}/{len(shards)}")
                for i, lam in enumerate(opts.lambdas) for j, dates in enumerate(shards)}
        context.log(f"training {len(jobs)} shard supernets ({len(shards)} shards x {len(opts.lambdas)} lambdas) "
                    f"on {context.workers} workers")
        results = context.run_jobs(jobs)
        proposals: dict[str, Proposal] = {}
        per_lambda = []
        for i, lam in enumerate(opts.lambdas):
            runs = [results[i, j] for j in range(len(shards))]
            choices, weights = aggregate(self.space, [r["option_probabilities"] for r in runs], opts.aggregation,
                                         opts.threshold)
            per_lambda.append({"lambda": lam, "choice": choices, "aggregated_weights": weights,
                               "shards": [{"dates": list(dates), "weights": r["probabilities"],
                                           "choice": r["choices"], "worker": r.get("worker"),
                                           **{k: r[k] for k in SHARD_KEYS}}
                                          for dates, r in zip(shards, runs)]})
            add_lambda_proposal(proposals, choices, lam)
        summary = {"searcher": "distdnas", "aggregation": opts.aggregation, "shards_per_lambda": len(shards),
                   "supernet_flops": runs[0]["supernet_flops"], "lambdas": per_lambda}
        return list(proposals.values()), summary
