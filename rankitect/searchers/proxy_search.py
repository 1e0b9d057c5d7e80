"""Proxy search: score many candidates without training them, train only the best few.

Planning samples `budget.trials` distinct candidates (uniformly; those over
`budget.max_flops` are skipped), scores each by the zero-cost proxy `searcher.proxy` on
`batches` training batches, split over the Ray workers, and proposes the `top_k` highest
scores (plus `calibration` random others, to measure the proxy's agreement with training).

Scoring a candidate: a fresh standalone model (torch seed = the search seed), warmed up by
`warmup_steps` Adam steps when > 0. For a space with a weight-sharing supernet and
`warmup_steps` > 0, SiGeo's setting is used instead: the supernet is warmed up once (sandwich
sampling, `warmup_steps` steps) and every candidate is scored as a path with its weights.
The proxy "params" (more dense parameters = better) is there as the reference a proxy
should beat; the report sets every proxy search's agreement beside it.

The default proxy is jacob_cov, the best-ranking proxy on a real table: Spearman with trained
NE over 30 nasrec architectures (training defaults as the ground truth) +0.25 on adult, where
sigeo scores +0.11, synflow -0.01 and the dense parameter count +0.14; +0.54 on the synthetic
data, where synflow leads (+0.74) and parameter count gives +0.45
(benchmarks/results/proxies_*_2026-12-06.txt). FLOPs alone rank about as well (+0.24, +0.62).
"""

from __future__ import annotations

import random
import time
from dataclasses import dataclass
from typing import Any

import torch

from rankitect.cost import cost_of
from rankitect.data.dataset import Dataset
from rankitect.errors import ConfigError, UserError
from rankitect.model import build_model
from rankitect.searchers.base import SearcherOptions, register_searcher
from rankitect.searchers.oneshot import OneShotOptions, load_supernet, select_random_others, train_supernet
from rankitect.searchers.planned import PlannedSearcher, PlanningContext, PlanningJob, Proposal, choices_key
from rankitect.searchers.proxies import ProxyTarget, SiGeoWeights, proxy_names, score, sigeo, warm_up
from rankitect.searchers.screen import MAX_REJECTED_IN_A_ROW, CostScreen
from rankitect.searchers.supernet_train import train_steps
from rankitect.space import Choices, SearchSpace
from rankitect.train.config import TrainConfig

REFERENCE_PROXY = "params"


@dataclass(frozen=True)
class ProxyOptions(SearcherOptions):
    proxy: str = "jacob_cov"
    top_k: int = 3
    batches: int = 4  # training batches each candidate is scored on (single-batch proxies: the first)
    warmup_steps: int = 0
    sigeo_weights: tuple[float, ...] = (1.0, 1.0, 1.0)  # zico, fisher_rao, loss
    calibration: int = 0

    def check(self) -> None:
        super().check()
        valid = [*proxy_names(), REFERENCE_PROXY]
        if self.proxy not in valid:
            raise ConfigError(f"searcher.proxy: unknown proxy {self.proxy!r}; proxies: {valid}")
        for key, low in (("top_k", 1), ("batches", 2), ("warmup_steps", 0), ("calibration", 0)):
            self.require_at_least(key, low)
        if len(self.sigeo_weights) != 3:
            raise ConfigError(f"searcher.sigeo_weights: must be [zico, fisher_rao, loss], got "
                              f"{list(self.sigeo_weights)}")


def proxy_value(name: str, target: ProxyTarget, batches: list[Any], seed: int, sigeo_weights: tuple[float, ...]) -> float:
    if name == "sigeo":
        return sigeo(target, batches, seed, SiGeoWeights(*sigeo_weights))
    return score(name, target, batches, seed)


def score_candidates(data_path: str, space: SearchSpace, candidates: list[Choices], train_dates: tuple[str, ...],
                     train: TrainConfig, opts: ProxyOptions, seed: int, supernet_file: str | None) -> list[float]:
    """The proxy score of each candidate (higher = predicted better)."""
    dataset = Dataset.shared(data_path)
    batches = [s.batch for s in train_steps(dataset, train_dates, train, None, seed + 2, opts.batches)]
    warm_batches = []
    if opts.warmup_steps and supernet_file is None:
        warm_batches = [s.batch for s in train_steps(dataset, train_dates, train, None, seed + 3, opts.warmup_steps)]
    net = load_supernet(space, supernet_file) if supernet_file else None
    scores = []
    for choices in candidates:
        arch = space.decode(choices)
        if opts.proxy == REFERENCE_PROXY:
            scores.append(float(cost_of(arch, dataset.schema).dense_params))
            continue
        if net is not None:
            target = ProxyTarget.from_supernet(net, choices)
        else:
            torch.manual_seed(seed)
            model = build_model(arch, dataset.schema)
            warm_up(model, warm_batches, opts.warmup_steps, train.lr, seed)
            target = ProxyTarget.from_model(model)
        scores.append(proxy_value(opts.proxy, target, batches, seed, opts.sigeo_weights))
    return scores


@register_searcher
class ProxySearch(PlannedSearcher):
    name = "proxy"
    Options = ProxyOptions

    def _candidates(self, budget: int, screen: CostScreen) -> list[Choices]:
        rng = random.Random(self.seed)
        seen: set[str] = set()
        out: list[Choices] = []
        skipped = 0
        while len(out) < budget:
            choices = self.space.sample(rng)
            key = choices_key(choices)
            if key in seen:
                skipped += 1
            elif screen.over(cost_of(self.space.decode(choices), self.space.schema)):
                seen.add(key)
                skipped += 1
            else:
                seen.add(key)
                out.append(choices)
                skipped = 0
            if skipped > MAX_REJECTED_IN_A_ROW:
                if not out:
                    raise UserError(f"budget.max_flops / budget.max_params: no candidate of "
                                    f"{MAX_REJECTED_IN_A_ROW} fits them ({screen.max_flops}, {screen.max_params})")
                break  # the space holds fewer distinct candidates than the budget
        return out

    def propose(self, context: PlanningContext) -> tuple[list[Proposal], dict[str, Any]]:
        opts = self.options
        started = time.perf_counter()
        common = {"data_path": context.data_path, "space": self.space, "train_dates": context.train_dates,
                  "train": context.train, "seed": self.seed}
        supernet_file = None
        if opts.warmup_steps and self.space.has_supernets() and opts.proxy != REFERENCE_PROXY:
            supernet_file = str(context.folder / f"warm_supernet_{opts.warmup_steps}.pt")
            context.log(f"warming the supernet up ({opts.warmup_steps} steps)")
            context.run_jobs({"warm-up": PlanningJob("supernet warm-up", train_supernet, {
                **common, "opts": OneShotOptions(), "out_file": supernet_file, "max_steps": opts.warmup_steps})})
        candidates = self._candidates(context.budget_trials, CostScreen(context.max_flops, context.max_params))
        size = -(-len(candidates) // context.workers)
        chunks = [candidates[i:i + size] for i in range(0, len(candidates), size)]
        context.log(f"scoring {len(candidates)} candidates by {opts.proxy} in {len(chunks)} jobs")
        results = context.run_jobs({i: PlanningJob(f"proxy scores {i + 1}/{len(chunks)}", score_candidates, {
            **common, "candidates": chunk, "opts": opts, "supernet_file": supernet_file})
            for i, chunk in enumerate(chunks)})
        scores = [s for i in range(len(chunks)) for s in results[i]]
        order = sorted(range(len(candidates)), key=lambda i: (-scores[i], i))
        top = order[:opts.top_k]
        extra = select_random_others(order[opts.top_k:], opts.calibration, random.Random(self.seed))
        proposals = [Proposal(candidates[i], {"proxy": scores[i], "neg_proxy": -scores[i], "role": role})
                     for i, role in [*((i, "top_k") for i in top), *((i, "calibration") for i in extra)]]
        summary = {"searcher": "proxy", "proxy": opts.proxy, "score_key": "neg_proxy",
                   "scored": len(candidates), "warm_supernet": supernet_file is not None,
                   "seconds": time.perf_counter() - started}
        return proposals, summary
