"""Everything a search checks before anything starts, done once per process: the data and its
dates, the space, the searcher's options, the baselines (validated here, once), the run folder.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path

from rankitect.arch.validate import ValidatedArchitecture, validate
from rankitect.blocks.fused_tables import CUDA_ONLY_OPTIMIZERS
from rankitect.data.dataset import Dataset
from rankitect.errors import ArchitectureError, ConfigError, DataError, UserError
from rankitect.experiment.config import SearchConfig
from rankitect.searchers.base import SearcherOptions, searcher_class, searcher_options
from rankitect.searchers.planned import PlannedSearcher
from rankitect.space import (
    Choices,
    SearchSpace,
    baseline_names,
    make_space,
    resolve_architecture,
    spaces_supernets,
    spaces_with_supernets,
)
from rankitect.train.run import RunDates, claim_folder

CONFIG_FILE = "config.json"
STUDY_FILE = "study.db"
RESUMABLE_KEYS = ("budget", "final", "logging")  # may change between runs of the same search


@dataclass(frozen=True)
class Plan:
    """A checked search: what every later step reads, never parses again."""

    config: SearchConfig
    run_dir: Path
    dataset: Dataset
    dates: RunDates
    space: SearchSpace
    searcher_options: SearcherOptions
    baselines: dict[str, ValidatedArchitecture]
    # The space's members nearest to the baselines, asked as a sampling search's first trials.
    seeds: dict[str, Choices] = field(default_factory=dict)

    @property
    def storage(self) -> str:
        """The study's Optuna storage URL: `searcher.storage`, else RUN/study.db."""
        return self.searcher_options.storage or f"sqlite:///{(self.run_dir / STUDY_FILE).resolve()}"


def plan_search(config: SearchConfig, out: Path) -> Plan:
    """Open the data, resolve dates, space, searcher options and baselines; ConfigError or
    UserError naming the key of anything that is off."""
    try:
        dataset = Dataset.open(config.data.path)
    except DataError as exc:
        raise DataError(f"data.path: {exc}") from None
    dates = {key: tuple(dataset.select_dates(getattr(config.data, key), f"data.{key}"))
             for key in ("train_dates", "valid_dates", "test_dates")}
    for a, b in (("train_dates", "valid_dates"), ("train_dates", "test_dates"), ("valid_dates", "test_dates")):
        overlap = sorted(set(dates[a]) & set(dates[b]))
        if overlap:
            raise ConfigError(f"data.{b}: overlaps data.{a} on {overlap}")
    space = make_space(config.space.name, dataset.schema, config.space.options)
    options = searcher_options(config.searcher.name, config.searcher.options, config.directions)
    _check_supernets(config, space, options)
    baselines = {}
    for i, name in enumerate(config.baselines):
        arch = resolve_architecture(name, dataset.schema, field=f"baselines[{i}]")
        try:
            validated = validate(arch, dataset.schema)
        except ArchitectureError as exc:
            raise ConfigError(f"baselines[{i}] ({name}): {exc}") from None
        baselines[arch.name or Path(name).stem] = validated
    planned = issubclass(searcher_class(config.searcher.name), PlannedSearcher)
    members = {} if planned else {name: space.baseline_choices(name) for name in config.baselines
                                  if name in baseline_names()}
    return Plan(config, Path(out), dataset,
                RunDates(dates["train_dates"], dates["valid_dates"], dates["test_dates"]), space, options, baselines,
                {name: choices for name, choices in members.items() if choices is not None})


def _check_supernets(config: SearchConfig, space: SearchSpace, options: SearcherOptions) -> None:
    """A one-shot or differentiable searcher needs a space with supernets, which train on CPU."""
    needs_supernet = searcher_class(config.searcher.name).needs_supernet
    if needs_supernet and needs_supernet not in spaces_supernets(space.name):
        kind = "mixed-op" if needs_supernet == "mixed" else "weight-sharing"
        raise ConfigError(f"searcher.name: {config.searcher.name!r} needs a space that builds {kind} supernets; "
                          f"space {space.name!r} does not (spaces that do: {spaces_with_supernets(needs_supernet)})")
    trains_supernet = needs_supernet or (space.has_supernets() and getattr(options, "warmup_steps", 0))
    if trains_supernet and config.train.embedding_optimizer in CUDA_ONLY_OPTIMIZERS:
        raise ConfigError(f"train.embedding_optimizer: {config.train.embedding_optimizer!r} runs on CUDA only, and "
                          f"searcher {config.searcher.name!r} trains supernets on CPU; use rowwise_adagrad, "
                          f"adagrad, sgd or dense")


def prepare_search_folder(plan: Plan, force: bool) -> bool:
    """Create the run folder, or check that it holds this search; True when continuing one."""
    run_dir, saved_path = plan.run_dir, plan.run_dir / CONFIG_FILE
    current = plan.config.to_dict()
    if saved_path.is_file() and not force:
        saved = _saved_config(saved_path)
        differs = sorted(k for k in set(saved) | set(current)
                         if k not in RESUMABLE_KEYS and saved.get(k) != current.get(k))
        if differs:
            raise UserError(f"{run_dir} holds a search with another {differs[0]!r} "
                            f"({saved.get(differs[0])!r} there, {current.get(differs[0])!r} now); "
                            f"use another --out, or --force to start over")
        saved_path.write_text(json.dumps(current, indent=2) + "\n")
        return True
    claim_folder(run_dir, force, lambda folder: (folder / CONFIG_FILE).is_file(), "search run",
                 "it is not a search run; use another --out")
    saved_path.write_text(json.dumps(current, indent=2) + "\n")
    return False


def _saved_config(path: Path) -> dict[str, object]:
    """The config a run folder holds, in the current shape (keys it predates take their
    defaults, which a search then compares like any other value)."""
    try:
        return SearchConfig.from_dict(json.loads(path.read_text())).to_dict()
    except (ValueError, UserError) as exc:
        raise UserError(f"{path} holds a config this version cannot read ({exc}); use another --out, "
                        f"or --force to start over") from None
