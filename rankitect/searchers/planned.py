"""Searchers that decide their trials in a planning phase, before any trial is trained.

One-shot, differentiable and proxy searchers first do work of their own on the Ray workers
(train a supernet, run DNAS per lambda, score candidates by a proxy) and end with a short list
of proposals: architectures to train from scratch. The driver then runs those as ordinary
trials (trained and scored on the validation and test dates like any other).

The planning phase writes its outcome to RUN/planning/plan.json (proposals and a summary for
result.json); a search run again with the same config reuses it. Each searcher keeps its own
intermediate files (supernet checkpoints, per-lambda results) under RUN/planning/ so that an
interrupted planning phase redoes only what did not finish.

What stays there once the phase is done (`budget.keep_checkpoints` does not apply to it): a
job's epoch checkpoint (*.ckpt, with optimizer state) is removed when the job finishes; DNAS and
DistDNAS keep only JSON results; one-shot keeps its trained supernet (supernet.pt) and proxy its
warmed-up one (warm_supernet_<steps>.pt): one file per search, not per trial, which a larger
`budget.trials` (a new plan key) searches again without training it again.
"""

from __future__ import annotations

import abc
import json
import random
from collections.abc import Callable, Hashable, Mapping
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Protocol

import optuna

from rankitect.errors import UserError
from rankitect.schema import Schema
from rankitect.searchers.base import Searcher, search_trials
from rankitect.train.config import TrainConfig

PLANNING_DIR = "planning"
PLAN_FILE = "plan.json"


def choices_key(choices: Mapping[str, Any]) -> str:
    """One string per distinct architecture (choices in name order)."""
    return repr(sorted(choices.items()))


@dataclass(frozen=True)
class Proposal:
    """An architecture (choices in the space) to train from scratch, and what the planning
    phase knew of it (stored on the trial as `proposal`, e.g. its supernet NE or lambda)."""

    choices: dict[str, Any]
    attrs: dict[str, Any] = field(default_factory=dict)


def add_lambda_proposal(proposals: dict[str, Proposal], choices: dict[str, Any], lam: float,
                        attrs: Mapping[str, Any] | None = None) -> None:
    """Add the architecture that `lam` derived; one already there records `lam` beside its own."""
    key = choices_key(choices)
    if key in proposals:
        proposals[key].attrs["lambdas"].append(lam)
    else:
        proposals[key] = Proposal(choices, {"lambdas": [lam], **(attrs or {})})


@dataclass(frozen=True)
class PlanningJob:
    """One call a planning phase has run on a worker: `fn(**kwargs)`, shown as `label`. A job
    given `progress_file=context.progress_file(...)` reports its steps there."""

    label: str
    fn: Callable[..., Any]
    kwargs: dict[str, Any]


class JobRunner(Protocol):
    """What the run lends a planning phase: its workers and its log."""

    workers: int  # how many jobs run at once

    def run(self, jobs: Mapping[Hashable, PlanningJob]) -> dict[Hashable, Any]:
        """Every job's result by its key; UserError naming the label of a job that fails."""

    def log(self, message: str) -> None:
        """A line of the planning phase's log (events, and stderr when showing progress)."""


@dataclass
class PlanningContext:
    """What a planning phase may use: the data, the run's workers, the run folder."""

    data_path: str
    schema: Schema
    train_dates: tuple[str, ...]
    valid_dates: tuple[str, ...]
    train: TrainConfig  # the trials' training settings (batch size, optimizer, lr, seed)
    objectives: tuple[str, ...]
    budget_trials: int
    max_flops: int | None
    max_params: int | None
    run_dir: Path
    runner: JobRunner

    @property
    def folder(self) -> Path:
        path = self.run_dir / PLANNING_DIR
        path.mkdir(parents=True, exist_ok=True)
        return path

    @property
    def workers(self) -> int:
        return self.runner.workers

    def log(self, message: str) -> None:
        self.runner.log(message)

    def progress_file(self, key: str) -> str:
        """Where the job `key` writes its progress (see supernet_train.JobProgress)."""
        return str(self.folder / f"{key.replace(' ', '_').replace('/', '-')}.progress.json")

    def run_jobs(self, jobs: Mapping[Hashable, PlanningJob]) -> dict[Hashable, Any]:
        return self.runner.run(jobs)


class PlannedSearcher(Searcher):
    """A searcher whose trials are the proposals of its planning phase, in order.

    Subclasses implement `propose(context) -> (proposals, summary)`; `plan_key` lists what
    the plan depends on beyond the config (which a resumed run cannot change), e.g. the budget.
    """

    proposals: list[Proposal]
    summary: dict[str, Any]

    @abc.abstractmethod
    def propose(self, context: PlanningContext) -> tuple[list[Proposal], dict[str, Any]]:
        """The architectures to train from scratch, and a summary for result.json."""

    def plan_key(self, context: PlanningContext) -> dict[str, Any]:
        key = {"budget_trials": context.budget_trials, "max_flops": context.max_flops}
        return key | ({"max_params": context.max_params} if context.max_params is not None else {})

    def prepare(self, context: PlanningContext) -> None:
        """Load RUN/planning/plan.json when it was made for this key, else plan and save it."""
        path = context.folder / PLAN_FILE
        key = self.plan_key(context)
        if path.is_file():
            saved = json.loads(path.read_text())
            if saved.get("key") == key:
                self.use_plan([Proposal(p["choices"], p["attrs"]) for p in saved["proposals"]], saved["summary"])
                return
        self.use_plan(*self.propose(context))
        raw = {"key": key, "searcher": self.name, "summary": self.summary,
               "proposals": [{"choices": p.choices, "attrs": p.attrs} for p in self.proposals]}
        tmp = path.with_suffix(".json.tmp")
        tmp.write_text(json.dumps(raw, indent=2) + "\n")
        tmp.replace(path)

    def use_plan(self, proposals: list[Proposal], summary: dict[str, Any]) -> None:
        """Take these proposals as the trials to run (what `prepare` does with a plan)."""
        if not proposals:
            raise UserError(f"searcher {self.name!r} proposed no architecture to train")
        self.proposals, self.summary = list(proposals), summary

    def trial_limit(self, budget_trials: int) -> int:
        return len(self.proposals)

    def _ask(self, number: int, rng: random.Random) -> optuna.Trial:
        index = len(search_trials(self.study))  # trial numbers also count baselines recorded beside it
        if index >= len(self.proposals):
            raise RuntimeError(f"{self.name}: trial {number} asked, but only {len(self.proposals)} were proposed")
        proposal = self.proposals[index]
        self.study.sampler = optuna.samplers.RandomSampler(seed=rng.randrange(2**31))
        self.study.enqueue_trial(proposal.choices)
        trial = self.study.ask()
        trial.set_user_attr("proposal", proposal.attrs)
        return trial


def read_plan_summary(run_dir: Path) -> dict[str, Any]:
    """The summary of a run's planning phase ({} for a sampling searcher)."""
    path = run_dir / PLANNING_DIR / PLAN_FILE
    return json.loads(path.read_text()).get("summary", {}) if path.is_file() else {}
