"""Regularized evolution (Real et al., 2019): tournament among the youngest trials, one mutation.

The first `population` trials are random. Each later trial takes the last `population`
complete trials (aging: older ones drop out), draws `sample_size` of them, and mutates the
best one's choices (by objective; with several objectives, by Pareto rank then the first).
The child is enqueued into the study, so it is stored like any other trial.
"""

from __future__ import annotations

import random
from dataclasses import dataclass

import optuna

from rankitect.errors import ConfigError
from rankitect.searchers.base import Searcher, SearcherOptions, ToldTrial, register_searcher
from rankitect.searchers.pareto import minimized, pareto_ranks


@dataclass(frozen=True)
class EvolutionOptions(SearcherOptions):
    population: int = 16
    sample_size: int = 4

    def check(self) -> None:
        super().check()
        self.require_at_least("population", 2)
        if not 1 <= self.sample_size <= self.population:
            raise ConfigError(f"searcher.sample_size: must be in [1, population={self.population}], "
                              f"got {self.sample_size}")


@register_searcher
class RegularizedEvolution(Searcher):
    name = "evolution"
    Options = EvolutionOptions

    def _parent(self, rng: random.Random) -> ToldTrial | None:
        complete = [t for t in self.told() if t.state == "complete"]
        if len(complete) < self.options.population:
            return None
        window = complete[-self.options.population:]
        contestants = rng.sample(window, self.options.sample_size)
        points = [minimized(t.values or (), self.directions) for t in contestants]
        ranks = pareto_ranks(points)
        best = min(range(len(contestants)), key=lambda i: (ranks[i], points[i], contestants[i].number))
        return contestants[best]

    def _ask(self, number: int, rng: random.Random) -> optuna.Trial:
        parent = self._parent(rng)
        choices = self.space.sample(rng) if parent is None else self.space.mutate(parent.choices, rng)
        self.study.sampler = optuna.samplers.RandomSampler(seed=rng.randrange(2**31))
        self.study.enqueue_trial(choices)
        trial = self.study.ask()
        trial.set_user_attr("parent", None if parent is None else parent.number)
        return trial
