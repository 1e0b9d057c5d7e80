"""One-shot search: train a weight-sharing supernet once, search it with inherited weights.

Planning runs two jobs on the Ray workers:
1. `train_supernet`: `supernet_epochs` passes over the train dates. Each step trains sampled
   paths of the supernet on one batch (the embedding lookup is shared by the paths):
   "uniform" one random path; "sandwich" the largest, the smallest and `sandwich_random`
   random ones, gradients of their mean loss. With `delayed_shrinking` = f, the first f of the
   steps train the largest path alone (once-for-all's progressive shrinking, simplified).
   Uniform is the default: in a space of categorical modules the largest path is one module
   per layer (full-rank dcn in `interactions`), so the sandwich rule trains those modules at
   every step and the supernet then ranks the paths that use them too high (measured in
   benchmarks/bench_nas.py: its picks were the largest architectures and retrained worse).
2. `search_supernet`: evaluates `budget.trials` distinct sub-architectures by their NE on up
   to `eval_rows` validation rows with inherited weights (after `finetune_steps` Adam steps of
   the standalone model when > 0), proposed by one of the sampling searchers (`search`: evolution,
   random or tpe; the same classes a sampling search runs, on an in-memory study). Candidates
   over `budget.max_flops` are told pruned unevaluated.

Proposals: the `top_k` best (by Pareto rank on supernet NE and FLOPs when FLOPs is an
objective, then supernet NE), plus `calibration` other evaluated ones drawn at random: all are
trained from scratch, and result.json's planning.agreement gives the Kendall tau between the
supernet's NE and the trained NE over them (is the supernet's ranking to be trusted?).
"""

from __future__ import annotations

import random
import time
from collections.abc import Callable, Mapping
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import optuna
import torch
import torch.nn.functional as F

from rankitect.cost import cost_of
from rankitect.data.dataset import Dataset
from rankitect.errors import ConfigError, UserError
from rankitect.model import build_model
from rankitect.searchers.base import (
    Searcher,
    SearcherOptions,
    make_searcher,
    register_searcher,
    searcher_class,
)
from rankitect.searchers.evolution import EvolutionOptions
from rankitect.searchers.pareto import pareto_ranks
from rankitect.searchers.planned import PlannedSearcher, PlanningContext, PlanningJob, Proposal, choices_key
from rankitect.searchers.proxies import warm_up
from rankitect.searchers.screen import CostScreen
from rankitect.searchers.supernet_train import (
    EpochCheckpoint,
    EvalSet,
    JobProgress,
    read_json,
    scale_lr,
    train_steps,
    write_json,
)
from rankitect.space import Choices, SearchSpace
from rankitect.train.config import TrainConfig
from rankitect.train.optimizers import model_optimizer

SAMPLING = ("sandwich", "uniform")
SEARCH = ("evolution", "random", "tpe")
MAX_REPEATS_IN_A_ROW = 500


@dataclass(frozen=True)
class OneShotOptions(SearcherOptions):
    """Defaults measured by benchmarks/bench_supernet_rank.py (nasrec, 60 paths scored, 20
    retrained): 20 supernet epochs and 50 fine-tuning steps rank the retrained paths with Kendall
    tau +0.60 on adult and +0.51 on the synthetic data; without fine-tuning +0.12 and +0.24, and
    with 4 epochs and fine-tuning +0.43 on the synthetic data."""

    supernet_epochs: int = 20
    sampling: str = "uniform"
    sandwich_random: int = 2  # random paths per step besides the largest and the smallest
    delayed_shrinking: float = 0.0  # share of the steps that train the largest path alone
    search: str = "evolution"
    population: int = 16  # evolution
    sample_size: int = 4  # evolution
    eval_rows: int = 20_000  # validation rows that score a path with inherited weights
    finetune_steps: int = 50
    top_k: int = 3
    calibration: int = 0  # more evaluated paths trained from scratch, for the Kendall tau

    def check(self) -> None:
        super().check()
        self.require_at_least("supernet_epochs", 1)
        self.require_one_of("sampling", SAMPLING)
        self.require_at_least("sandwich_random", 0)
        if not 0 <= self.delayed_shrinking < 1:
            raise ConfigError(f"searcher.delayed_shrinking: must be in [0, 1), got {self.delayed_shrinking}")
        self.require_one_of("search", SEARCH)
        self.require_at_least("population", 2)
        if not 1 <= self.sample_size <= self.population:
            raise ConfigError(f"searcher.sample_size: must be in [1, population={self.population}], "
                              f"got {self.sample_size}")
        self.require_at_least("eval_rows", 1)
        self.require_at_least("finetune_steps", 0)
        self.require_at_least("top_k", 1)
        self.require_at_least("calibration", 0)


# -- job 1: supernet training -----------------------------------------------------------------
def sampled_paths(space: SearchSpace, opts: OneShotOptions, step: int, total: int,
                  rng: random.Random) -> list[Choices]:
    """The paths trained at `step` of `total`."""
    if step < opts.delayed_shrinking * total:
        return [space.largest()]
    if opts.sampling == "uniform":
        return [space.sample(rng)]
    return [space.largest(), space.smallest(), *(space.sample(rng) for _ in range(opts.sandwich_random))]


def train_supernet(data_path: str, space: SearchSpace, train_dates: tuple[str, ...], train: TrainConfig,
                   opts: OneShotOptions, seed: int, out_file: str, max_steps: int | None = None,
                   progress_file: str | None = None) -> dict[str, Any]:
    """Train the space's weight-sharing supernet for `supernet_epochs` (or `max_steps` steps);
    its state_dict goes to `out_file` (.pt) and a summary beside it (.json). Reuses both when
    an earlier run finished them, and continues from the last finished epoch otherwise."""
    summary_file = Path(out_file).with_suffix(".json")
    done = read_json(summary_file)
    if done is not None and Path(out_file).is_file():
        return done
    started = time.perf_counter()
    dataset = Dataset.shared(data_path)
    torch.manual_seed(seed)
    net = space.supernet()
    optimizer = model_optimizer(net, train, torch.device("cpu"))
    rng = random.Random(seed)
    losses: list[float] = []
    checkpoint = EpochCheckpoint(Path(out_file).with_suffix(".ckpt"))
    parts = {"model": net, "optimizer": optimizer}
    start, extra = checkpoint.resume(parts)
    if extra:
        rng.setstate(extra["rng"])
        losses = extra["losses"]
    progress = JobProgress(progress_file, "supernet training")
    net.train()
    epochs = opts.supernet_epochs if max_steps is None else None
    for step in train_steps(dataset, train_dates, train, epochs, seed, max_steps, start_epoch=start):
        batch = step.batch
        embedded = net.embed(batch.sparse)  # (B, F, E), shared by the paths
        paths = sampled_paths(space, opts, step.index, step.total, rng)
        loss = sum(F.binary_cross_entropy_with_logits(net.interact(batch.dense, embedded, p), batch.labels)
                   for p in paths) / len(paths)
        scale_lr(optimizer, step.lr_factor)
        optimizer.zero_grad(set_to_none=True)
        loss.backward()
        optimizer.step()
        losses.append(loss.item())
        if step.ends_epoch:  # saved before the progress that reports the epoch done
            checkpoint.save(step.epoch + 1, parts, rng=rng.getstate(), losses=losses)
        progress.update(step.index + 1, step.total, force=step.ends_epoch)
    torch.save(net.state_dict(), out_file)
    tail = losses[-max(1, len(losses) // 10):]
    summary = {"steps": len(losses), "train_logloss_last_tenth": sum(tail) / max(len(tail), 1),
               "seconds": time.perf_counter() - started, "resumed_at_epoch": start}
    write_json(summary_file, summary)
    checkpoint.remove()
    return summary


def load_supernet(space: SearchSpace, path: str) -> torch.nn.Module:
    net = space.supernet()
    net.load_state_dict(torch.load(path, weights_only=True))
    return net.eval()


# -- job 2: search with inherited weights ------------------------------------------------------
class PathScorer:
    """Validation NE of supernet paths with inherited weights (optionally fine-tuned)."""

    def __init__(self, net: Any, space: SearchSpace, evalset: EvalSet, finetune: int,
                 finetune_batches: list[Any], lr: float, seed: int) -> None:
        self.net, self.space, self.evalset = net, space, evalset
        self.finetune, self.finetune_batches, self.lr, self.seed = finetune, finetune_batches, lr, seed
        with torch.no_grad():
            self.embedded = [net.embed(b.sparse) for b in evalset.batches]  # each (B, F, E)

    def __call__(self, choices: Choices) -> float:
        if self.finetune:
            model = build_model(self.space.decode(choices), self.space.schema)
            model.load_state_dict(self.net.inherit(choices))
            warm_up(model, self.finetune_batches, self.finetune, self.lr, self.seed)
            model.eval()
            with torch.no_grad():
                return self.evalset.ne([model(b.dense, b.sparse) for b in self.evalset.batches])
        with torch.no_grad():
            return self.evalset.ne([self.net.interact(b.dense, e, choices)
                                    for b, e in zip(self.evalset.batches, self.embedded)])


def strategy(space: SearchSpace, opts: OneShotOptions, use_flops: bool, seed: int) -> Searcher:
    """The sampling searcher `opts.search` (evolution, random or TPE; multi-objective on supernet
    NE and FLOPs when `use_flops`) over `space`, on an in-memory study."""
    directions = ["minimize", "minimize"] if use_flops else ["minimize"]
    options = EvolutionOptions(population=opts.population, sample_size=opts.sample_size) \
        if opts.search == "evolution" else searcher_class(opts.search).Options()
    study = optuna.create_study(directions=directions)
    return make_searcher(opts.search, options, space, directions, seed, study)


def search_paths(searcher: Searcher, score: Callable[[Choices], float], budget: int,
                 max_flops: int | None, max_params: int | None = None) -> list[dict[str, Any]]:
    """Records {choices, supernet_ne, flops} of up to `budget` distinct paths the searcher asks
    for, in order. Each path is scored once: one asked again, or one over `max_flops` or
    `max_params`, is told pruned (a repeat must not weigh twice in evolution's population). Stops early when
    `MAX_REPEATS_IN_A_ROW` asks in a row bring nothing new (the space holds fewer distinct
    paths than the budget)."""
    space, screen = searcher.space, CostScreen(max_flops, max_params)
    seen: set[str] = set()
    records: list[dict[str, Any]] = []
    repeats = 0
    while len(records) < budget and repeats <= MAX_REPEATS_IN_A_ROW:
        candidate = searcher.ask()
        key = choices_key(candidate.choices)
        repeats = repeats + 1 if key in seen else 0
        record = None
        if key not in seen:
            seen.add(key)
            cost = cost_of(space.decode(candidate.choices), space.schema)
            if screen.admits(cost):
                record = {"choices": dict(candidate.choices), "supernet_ne": score(candidate.choices), "flops": cost.flops}
                records.append(record)
        if record is None:
            searcher.tell(candidate.number, None, "pruned")
        else:
            searcher.tell(candidate.number, list(_minimized(record, len(searcher.directions) > 1)))
    return records


def _minimized(record: Mapping[str, Any], use_flops: bool) -> tuple[float, ...]:
    return (record["supernet_ne"], float(record["flops"])) if use_flops else (record["supernet_ne"],)


def search_supernet(data_path: str, space: SearchSpace, supernet_file: str, train_dates: tuple[str, ...],
                    valid_dates: tuple[str, ...], train: TrainConfig, opts: OneShotOptions, budget: int,
                    max_flops: int | None, use_flops: bool, seed: int, out_file: str,
                    max_params: int | None = None) -> dict[str, Any]:
    """Evaluate up to `budget` distinct paths with inherited weights; all records, in order."""
    done = read_json(Path(out_file))
    if done is not None:
        return done
    started = time.perf_counter()
    dataset = Dataset.shared(data_path)
    net = load_supernet(space, supernet_file)
    evalset = EvalSet.load(dataset, valid_dates, opts.eval_rows)
    finetune_batches = []
    if opts.finetune_steps:
        finetune_batches = [s.batch for s, _ in zip(train_steps(dataset, train_dates, train, 1, seed + 1),
                                                     range(opts.finetune_steps))]
    scorer = PathScorer(net, space, evalset, opts.finetune_steps, finetune_batches, train.lr, seed)
    records = search_paths(strategy(space, opts, use_flops, seed), scorer, budget, max_flops, max_params)
    result = {"records": records, "eval_rows": sum(len(b) for b in evalset.batches),
              "seconds": time.perf_counter() - started}
    write_json(Path(out_file), result)
    return result


def select(records: list[dict[str, Any]], top_k: int, calibration: int, use_flops: bool,
           rng: random.Random) -> list[tuple[dict[str, Any], str]]:
    """(record, role) of the top_k best and `calibration` random others."""
    points = [_minimized(r, use_flops) for r in records]
    ranks = pareto_ranks(points) if use_flops else [0] * len(records)
    order = sorted(range(len(records)), key=lambda i: (ranks[i], records[i]["supernet_ne"], i))
    extra = select_random_others(order[top_k:], calibration, rng)
    return [(records[i], "top_k") for i in order[:top_k]] + [(records[i], "calibration") for i in extra]


def select_random_others(rest: list[int], count: int, rng: random.Random) -> list[int]:
    """`count` of the indices `rest` at random (all when fewer), in increasing order."""
    pool = sorted(rest)
    return sorted(rng.sample(pool, min(count, len(pool))))


@register_searcher
class OneShot(PlannedSearcher):
    name = "oneshot"
    Options = OneShotOptions
    needs_supernet = "weight_sharing"

    def propose(self, context: PlanningContext) -> tuple[list[Proposal], dict[str, Any]]:
        opts = self.options
        common = {"data_path": context.data_path, "space": self.space, "train_dates": context.train_dates,
                  "train": context.train, "opts": opts, "seed": self.seed}
        supernet_file = str(context.folder / "supernet.pt")
        context.log(f"training the supernet ({opts.supernet_epochs} epochs, {opts.sampling} sampling)")
        trained = context.run_jobs({"train": PlanningJob("supernet training", train_supernet, {
            **common, "out_file": supernet_file, "progress_file": context.progress_file("supernet training")})})
        use_flops = "flops" in context.objectives
        context.log(f"evaluating {context.budget_trials} sub-architectures with inherited weights ({opts.search})")
        searched = context.run_jobs({"search": PlanningJob("supernet search", search_supernet, {
            **common, "supernet_file": supernet_file, "valid_dates": context.valid_dates,
            "budget": context.budget_trials, "max_flops": context.max_flops, "max_params": context.max_params,
            "use_flops": use_flops,
            "out_file": str(context.folder / f"search_{context.budget_trials}.json")})})["search"]
        records = searched["records"]
        if not records:
            raise UserError("the supernet search evaluated no architecture")
        picked = select(records, opts.top_k, opts.calibration, use_flops, random.Random(self.seed))
        proposals = [Proposal(r["choices"], {"supernet_ne": r["supernet_ne"], "supernet_flops": r["flops"],
                                             "role": role}) for r, role in picked]
        summary = {"searcher": "oneshot", "score_key": "supernet_ne", "supernet": trained["train"],
                   "search": {"evaluated": len(records), "eval_rows": searched["eval_rows"],
                              "seconds": searched["seconds"],
                              "best_supernet_ne": min(r["supernet_ne"] for r in records)}}
        return proposals, summary
