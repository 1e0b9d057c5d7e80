"""The searcher contract (ask/tell over a search space) and the registry of searchers by name.

A searcher keeps its trials in the Optuna study it is given, so the study is the whole state:
a new searcher on the same study continues where the last one stopped, and optuna-dashboard
can open a running search. The run opens the study (rankitect.experiment.study); a searcher
used on its own (one-shot's search of sub-architectures) gets an in-memory one.
"""

from __future__ import annotations

import abc
import math
import random
from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any, ClassVar

import optuna
from optuna.trial import TrialState

from rankitect.errors import ConfigError
from rankitect.registry import Registry, definition_of
from rankitect.space import Choices, SearchSpace, SpaceOptions, load_plugins, options_from_mapping

STATES = ("complete", "failed", "pruned")
# A study trial that records a baseline trained beside the search (outside its space), so that
# optuna-dashboard plots it with the trials: not a trial of the search, never asked or told.
BESIDE_SEARCH = "beside_search"


def is_search_trial(frozen: optuna.trial.FrozenTrial) -> bool:
    """Whether a study trial is one of the search's own (not a baseline recorded beside it)."""
    return not frozen.user_attrs.get(BESIDE_SEARCH)


def search_trials(study: optuna.Study) -> list[optuna.trial.FrozenTrial]:
    """The study's trials less the baselines recorded beside the search, in number order."""
    return [t for t in study.get_trials(deepcopy=False) if is_search_trial(t)]
_OPTUNA_STATE = {"complete": TrialState.COMPLETE, "failed": TrialState.FAIL, "pruned": TrialState.PRUNED}
PRUNERS = ("none", "median", "halving")


@dataclass(frozen=True)
class Candidate:
    """A trial the searcher proposes: its number in the study and its choices in the space."""

    number: int
    choices: Choices


@dataclass(frozen=True)
class SearcherOptions(SpaceOptions):
    """Options every searcher takes; subclasses add their own fields."""

    storage: str | None = None  # any Optuna storage URL; the run's RUN/study.db by default
    pruner: str = "none"  # single objective only: median or (successive) halving over epochs
    concurrency: int | None = None  # trials asked before earlier ones are told; default: workers

    def check(self) -> None:
        self.require_one_of("pruner", PRUNERS)
        if self.concurrency is not None:
            self.require_at_least("concurrency", 1)

    def require_at_least(self, key: str, low: float) -> None:
        """ConfigError naming `searcher.<key>` unless the option is >= `low`."""
        if getattr(self, key) < low:
            raise ConfigError(f"searcher.{key}: must be >= {low}, got {getattr(self, key)}")

    def require_one_of(self, key: str, allowed: tuple[str, ...]) -> None:
        """ConfigError naming `searcher.<key>` unless the option is one of `allowed`."""
        if getattr(self, key) not in allowed:
            raise ConfigError(f"searcher.{key}: must be one of {allowed}, got {getattr(self, key)!r}")


@dataclass(frozen=True)
class ToldTrial:
    """What the searcher knows of a finished trial."""

    number: int
    state: str
    values: tuple[float, ...] | None
    choices: Choices
    intermediate: dict[int, float]


class Searcher(abc.ABC):
    """Ask/tell over a search space.

    - `ask()` returns a new Candidate. Given the same seed and the same told history it
      returns the same choices (samplers are re-seeded from (seed, trial number)).
    - `tell(number, values, state)` records an outcome; a None or NaN value makes the trial
      failed. Telling an unknown or already finished number raises ValueError.
    - `pending()` lists trials asked by an earlier driver and never told (to run again).
    - Not thread-safe: one driver thread calls ask and tell.
    """

    name: ClassVar[str]
    Options: ClassVar[type[SearcherOptions]] = SearcherOptions
    needs_supernet: ClassVar[str | None] = None  # "weight_sharing" (one-shot) or "mixed" (differentiable)

    def __init__(self, space: SearchSpace, directions: Sequence[str], seed: int,
                 options: SearcherOptions, study: optuna.Study) -> None:
        self.space = space
        self.directions = list(directions)
        self.seed = seed
        self.options = options
        self.study = study
        self._live: dict[int, optuna.Trial] = {}

    # -- subclasses ------------------------------------------------------------------------
    @abc.abstractmethod
    def _ask(self, number: int, rng: random.Random) -> optuna.Trial:
        """A new study trial for `number` (the next number) with its parameters decidable."""

    # -- the contract ----------------------------------------------------------------------
    def trial_limit(self, budget_trials: int) -> int:
        """How many trials to train: `budget.trials`, unless the searcher decides otherwise."""
        return budget_trials

    def enqueue(self, choices: Choices, attrs: Mapping[str, Any]) -> None:
        """Have `choices` asked before anything the searcher proposes (a baseline's member of
        the space, say), with `attrs` stored on its trial."""
        self.study.enqueue_trial(dict(choices), user_attrs=dict(attrs))

    def ask(self) -> Candidate:
        trials = self.study.get_trials(deepcopy=False)
        waiting = [t for t in trials if t.state == TrialState.WAITING]
        number = waiting[0].number if waiting else len(trials)
        # Seeded by the trial's place among the search's own: a baseline recorded beside the
        # search takes a number, and changes no proposal.
        ordinal = sum(1 for t in trials if t.number < number and is_search_trial(t))
        rng = random.Random(f"{self.seed}:{ordinal}")
        trial = self.study.ask() if waiting else self._ask(number, rng)  # enqueued trials first
        if trial.number != number:
            raise RuntimeError(f"the study gave trial {trial.number}, expected {number}: is another "
                               f"driver writing to this storage?")
        choices = self.space.suggest(trial)
        self._live[number] = trial
        return Candidate(number, choices)

    def tell(self, number: int, values: Sequence[float] | None, state: str = "complete",
             intermediate: Mapping[int, float] | None = None, attrs: Mapping[str, Any] | None = None) -> None:
        if state not in STATES:
            raise ValueError(f"state must be one of {STATES}, got {state=}")
        trial = self._trial(number)
        for key, value in (attrs or {}).items():
            trial.set_user_attr(key, value)
        curve = {step: v for step, v in sorted((intermediate or {}).items()) if math.isfinite(v)}
        if len(self.directions) == 1:
            for step, value in curve.items():
                trial.report(value, step)
        elif curve:  # Optuna keeps per-step values for single-objective studies only
            trial.set_user_attr("intermediate", {str(k): v for k, v in curve.items()})
        if state == "complete" and (values is None or not all(math.isfinite(v) for v in values)):
            state = "failed"
            trial.set_user_attr("error", trial.user_attrs.get("error") or f"objective values {values}")
        if state == "complete":
            self.study.tell(trial, list(values))  # type: ignore[arg-type]
        else:
            self.study.tell(trial, state=_OPTUNA_STATE[state])
        self._live.pop(number, None)

    def pending(self) -> list[Candidate]:
        """Trials asked by an earlier driver and never told, in number order. One stopped while
        its choices were being drawn has the missing ones drawn now (at random, seeded by
        its number), keeping those already stored."""
        # A driver killed between enqueue and ask leaves WAITING trials: make them RUNNING
        # (with their enqueued choices) so that they run again and numbering stays dense.
        for _ in self.study.get_trials(deepcopy=False, states=(TrialState.WAITING,)):
            self.space.suggest(self.study.ask())
        out = []
        for frozen in self.study.get_trials(deepcopy=False, states=(TrialState.RUNNING,)):
            try:
                choices = self.space.check_choices(frozen.params)
            except ConfigError:
                self.study.sampler = optuna.samplers.RandomSampler(seed=self.seed * 100_003 + frozen.number)
                choices = self.space.suggest(self._trial(frozen.number))
                self._trial(frozen.number).set_user_attr("completed_after_interruption", True)
            out.append(Candidate(frozen.number, choices))
        return sorted(out, key=lambda c: c.number)

    def told(self) -> list[ToldTrial]:
        """Finished trials in number order."""
        out = []
        states = (TrialState.COMPLETE, TrialState.FAIL, TrialState.PRUNED)
        for t in self.study.get_trials(deepcopy=False, states=states):
            if not is_search_trial(t):
                continue
            state = {TrialState.COMPLETE: "complete", TrialState.FAIL: "failed",
                     TrialState.PRUNED: "pruned"}[t.state]
            out.append(ToldTrial(t.number, state, tuple(t.values) if t.values else None,
                                 dict(t.params), dict(t.intermediate_values)))
        return sorted(out, key=lambda t: t.number)

    def _trial(self, number: int) -> optuna.Trial:
        if number in self._live:
            return self._live[number]
        trials = self.study.get_trials(deepcopy=False)
        if not 0 <= number < len(trials):
            raise ValueError(f"trial {number} does not exist in the study")
        frozen = trials[number]
        if frozen.state.is_finished():
            raise ValueError(f"trial {number} is already {frozen.state.name.lower()}")
        # A trial asked by an earlier driver: Optuna's Trial handle by its storage id.
        trial = optuna.trial.Trial(self.study, frozen._trial_id)
        self._live[number] = trial
        return trial


# -- registry ------------------------------------------------------------------------------
_SEARCHERS: Registry[type[Searcher]] = Registry("searcher", load_plugins)


def register_searcher(cls: type[Searcher]) -> type[Searcher]:
    """Class decorator; ValueError if another class holds the name."""
    _SEARCHERS.register(cls.name, cls, definition_of(cls))
    return cls


def searcher_names() -> list[str]:
    return _SEARCHERS.names()


def searcher_class(name: str, key: str = "searcher.name") -> type[Searcher]:
    """The searcher class `name`; UnknownName (a ConfigError) naming `key` otherwise."""
    return _SEARCHERS.get(name, key)


def searcher_options(name: str, options: Mapping[str, Any], directions: Sequence[str]) -> SearcherOptions:
    """Checked options of searcher `name`; ConfigError naming `searcher.<key>` otherwise."""
    checked = options_from_mapping(searcher_class(name).Options, options, "searcher")
    if checked.pruner != "none" and len(directions) > 1:
        raise ConfigError(f"searcher.pruner: {checked.pruner!r} needs a single objective; "
                          f"got {len(directions)} objectives")
    return checked


def make_searcher(name: str, options: SearcherOptions, space: SearchSpace, directions: Sequence[str],
                  seed: int, study: optuna.Study) -> Searcher:
    """Searcher `name` with options checked by `searcher_options`, its trials in `study`."""
    return searcher_class(name)(space, directions, seed, options, study)
