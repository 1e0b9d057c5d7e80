"""Searchers that are Optuna samplers: random, TPE and NSGA-II (multi-objective when asked).

A fresh sampler, seeded from (seed, trial number), proposes each trial: the proposals then
depend only on the seed and the study's history, so a resumed search asks what an
uninterrupted one would have asked; a proposal is stored in one write (enqueued whole).
"""

from __future__ import annotations

import random
import warnings
import zlib
from dataclasses import dataclass

import optuna

from rankitect.searchers.base import Searcher, SearcherOptions, register_searcher, search_trials


def _seed(rng: random.Random) -> int:
    return zlib.crc32(str(rng.random()).encode())


class _SamplerSearcher(Searcher):
    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        raise NotImplementedError

    def _ask(self, number: int, rng: random.Random) -> optuna.Trial:
        """The sampler proposes on a copy of the study in memory, and the proposal is enqueued
        whole: the study never holds a trial with some of its choices drawn (a driver killed
        between two of the storage's writes left one, whose missing choices a resumed search
        could only draw again, differently)."""
        scratch = optuna.create_study(directions=self.study.directions, sampler=self._sampler(_seed(rng)),
                                      storage=optuna.storages.InMemoryStorage())
        scratch.add_trials(search_trials(self.study))  # baselines recorded beside it have no choices
        choices = self.space.suggest(scratch.ask())
        self.study.sampler = optuna.samplers.RandomSampler(seed=number)  # draws nothing: every choice is fixed
        self.study.enqueue_trial(dict(choices))
        return self.study.ask()


@register_searcher
class RandomSearcher(_SamplerSearcher):
    """Uniform random sampling of the space (Optuna's RandomSampler)."""

    name = "random"

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.RandomSampler(seed=seed)


@dataclass(frozen=True)
class TPEOptions(SearcherOptions):
    n_startup_trials: int = 10  # random trials before the model is used

    def check(self) -> None:
        super().check()
        self.require_at_least("n_startup_trials", 1)


@register_searcher
class TPESearcher(_SamplerSearcher):
    """Tree-structured Parzen estimator; multivariate and grouped, so conditional choices of a
    define-by-run space are modelled together; multi-objective (MOTPE) with two objectives."""

    name = "tpe"
    Options = TPEOptions

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        with warnings.catch_warnings():  # multivariate/group/constant_liar are "experimental"
            warnings.simplefilter("ignore", optuna.exceptions.ExperimentalWarning)
            return optuna.samplers.TPESampler(seed=seed, n_startup_trials=self.options.n_startup_trials,
                                              multivariate=True, group=True, constant_liar=True)


@dataclass(frozen=True)
class NSGA2Options(SearcherOptions):
    population_size: int = 16

    def check(self) -> None:
        super().check()
        self.require_at_least("population_size", 2)


@register_searcher
class NSGA2Searcher(_SamplerSearcher):
    """NSGA-II genetic search (Optuna's NSGAIISampler); also runs with one objective."""

    name = "nsga2"
    Options = NSGA2Options

    def _sampler(self, seed: int) -> optuna.samplers.BaseSampler:
        return optuna.samplers.NSGAIISampler(seed=seed, population_size=self.options.population_size)
