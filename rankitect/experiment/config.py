"""The search configuration: parsed from a plain mapping (the launcher reads YAML), checked once.

Every problem names its key path (`budget.trials: must be >= 1, got 0`) and raises
ConfigError before anything starts. Only `data`, `space` and `searcher` are required. Values
echoed in a message are clipped, and so is the whole message (MAX_MESSAGE_CHARS).
"""

from __future__ import annotations

import dataclasses
import datetime as dt
from collections.abc import Mapping
from dataclasses import asdict, dataclass, field, fields
from typing import Any

from rankitect.errors import ConfigError
from rankitect.space import check_names, coerce
from rankitect.train.config import TrainConfig

# objective -> (direction, where the value comes from)
OBJECTIVES: dict[str, str] = {"ne": "minimize", "logloss": "minimize", "auc": "maximize",
                              "flops": "minimize", "params": "minimize", "latency": "minimize"}
DEFAULT_BASELINES = ("lr", "dlrm", "dcnv2", "deepfm", "autoint")
KEEP_CHECKPOINTS = ("best", "top_k", "all")  # budget.keep_checkpoints (see experiment/retention.py)
DEFAULT_KEEP_TOP_K = 3
MAX_MESSAGE_CHARS = 2000  # of a ConfigError's message; a value is echoed with at most _SHOWN
_SHOWN = 120


def _shown(value: Any) -> str:
    """repr(value), clipped to _SHOWN characters: how a config's value is echoed in a message."""
    return _clip(repr(value), _SHOWN)


def _clip(text: str, limit: int) -> str:
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


@dataclass(frozen=True)
class DataSection:
    path: str
    train_dates: str
    valid_dates: str
    test_dates: str


@dataclass(frozen=True)
class NamedSection:
    """`space` or `searcher`: a registered name plus that component's own options."""

    name: str
    options: dict[str, Any] = field(default_factory=dict)


@dataclass(frozen=True)
class BudgetSection:
    trials: int = 20  # finished trials (complete, failed or pruned); rejected ones do not count
    seconds: float | None = None  # no new trial starts after this; running ones finish
    max_flops: int | None = None  # candidates over it are rejected before training
    max_params: int | None = None  # as max_flops, for parameters (embedding tables included)
    max_retries: int = 2  # re-runs of a trial whose worker died
    keep_checkpoints: str = "best"  # whose checkpoint.pt stays: the best trial's, the top_k's, or all
    keep_top_k: int | None = None  # with keep_checkpoints: top_k, how many (DEFAULT_KEEP_TOP_K)

    def check(self) -> None:
        _require(self.trials >= 1, "budget.trials", self.trials, ">= 1")
        _require(self.seconds is None or self.seconds > 0, "budget.seconds", self.seconds, "> 0")
        _require(self.max_flops is None or self.max_flops >= 1, "budget.max_flops", self.max_flops, ">= 1")
        _require(self.max_params is None or self.max_params >= 1, "budget.max_params", self.max_params, ">= 1")
        _require(self.max_retries >= 0, "budget.max_retries", self.max_retries, ">= 0")
        _require(self.keep_checkpoints in KEEP_CHECKPOINTS, "budget.keep_checkpoints", self.keep_checkpoints,
                 f"one of {KEEP_CHECKPOINTS}")
        _require(self.keep_top_k is None or self.keep_top_k >= 1, "budget.keep_top_k", self.keep_top_k, ">= 1")
        _require(self.keep_top_k is None or self.keep_checkpoints == "top_k", "budget.keep_top_k",
                 self.keep_top_k, f"set only with budget.keep_checkpoints: top_k (it is {_shown(self.keep_checkpoints)})")

    @property
    def top_k(self) -> int:
        """How many trials keep their checkpoint under keep_checkpoints: top_k."""
        return DEFAULT_KEEP_TOP_K if self.keep_top_k is None else self.keep_top_k


@dataclass(frozen=True)
class TrialResources:
    """What one trial takes of the cluster (keys of the `train` section)."""

    cpus_per_trial: int = 1
    gpus_per_trial: float = 0.0

    def check(self) -> None:
        _require(self.cpus_per_trial >= 1, "train.cpus_per_trial", self.cpus_per_trial, ">= 1")
        _require(self.gpus_per_trial >= 0, "train.gpus_per_trial", self.gpus_per_trial, ">= 0")


# TrainConfig fields a search sets itself: a trial's seed is the search's seed plus its number,
# and trials never resume mid-epoch (an interrupted one trains again), so they checkpoint only
# at epoch ends.
_TRIAL_SET = ("seed", "checkpoint_every")
TRAIN_KEYS = tuple(f.name for f in fields(TrainConfig) if f.name not in _TRIAL_SET) + \
    tuple(f.name for f in fields(TrialResources))


@dataclass(frozen=True)
class FinalSection:
    seeds: int = 0  # >= 2: retrain the top_k trials and the baselines with this many seeds
    top_k: int = 3  # the best trials (by the first objective) retrained; the pick is the best mean NE

    def check(self) -> None:
        _require(self.seeds == 0 or self.seeds >= 2, "final.seeds", self.seeds, "0 (off) or >= 2")
        _require(self.top_k >= 1, "final.top_k", self.top_k, ">= 1")

    @property
    def candidates(self) -> int:
        """How many of the best trials must keep their checkpoints until the final seeds pick
        one (1 without final seeds)."""
        return self.top_k if self.seeds >= 2 else 1


@dataclass(frozen=True)
class LoggingSection:
    """Where a search's trials are logged besides the run folder (rankitect/experiment/loggers.py)."""

    tensorboard: str | None = None  # a folder: a TensorBoard run per trial and baseline, and "search"
    mlflow: str | None = None  # an MLflow tracking URI: sqlite:///mlflow.db, http://host:5000, ...
    mlflow_experiment: str = "rankitect"  # the MLflow experiment the search's runs go to

    def check(self) -> None:
        for key in ("tensorboard", "mlflow", "mlflow_experiment"):
            value = getattr(self, key)
            _require(value is None or value.strip() != "", f"logging.{key}", value, "a non-empty string")


@dataclass(frozen=True)
class SearchConfig:
    data: DataSection
    space: NamedSection
    searcher: NamedSection
    objectives: tuple[str, ...] = ("ne", "flops")
    budget: BudgetSection = field(default_factory=BudgetSection)
    train: TrainConfig = field(default_factory=lambda: TrainConfig(checkpoint_every=0))
    resources: TrialResources = field(default_factory=TrialResources)
    baselines: tuple[str, ...] = DEFAULT_BASELINES
    final: FinalSection = field(default_factory=FinalSection)
    seed: int = 0
    logging: LoggingSection = field(default_factory=LoggingSection)

    @property
    def directions(self) -> list[str]:
        return [OBJECTIVES[o] for o in self.objectives]

    def trial_train(self, seed: int) -> TrainConfig:
        """The training settings of one trial (or baseline, or supernet) with `seed`."""
        return dataclasses.replace(self.train, seed=seed)

    def to_dict(self) -> dict[str, Any]:
        """The config as a plain mapping: the shape `from_dict` reads (and RUN/config.json holds)."""
        out = asdict(self)
        train = out["train"]
        out["train"] = {**{k: train[k] for k in TRAIN_KEYS if k in train}, **out.pop("resources")}
        out["space"] = {"name": self.space.name, **self.space.options}
        out["searcher"] = {"name": self.searcher.name, **self.searcher.options}
        out["objectives"] = list(self.objectives)
        out["baselines"] = list(self.baselines)
        return out

    @staticmethod
    def from_dict(raw: Any) -> "SearchConfig":
        """Parse and check; ConfigError naming the key path of the first problem (its message
        clipped to MAX_MESSAGE_CHARS)."""
        try:
            return SearchConfig._parse(raw)
        except ConfigError as exc:
            message = str(exc)
            if len(message) > MAX_MESSAGE_CHARS:
                exc.args = (_clip(message, MAX_MESSAGE_CHARS),)
            raise

    @staticmethod
    def _parse(raw: Any) -> "SearchConfig":
        if not isinstance(raw, Mapping):
            raise ConfigError(f"the config must be a mapping of keys, got {type(raw).__name__}")
        known = {f.name for f in fields(SearchConfig)}
        unknown = sorted(set(raw) - known - {"out"}, key=str)
        if unknown:
            raise ConfigError(f"{_clip(str(unknown[0]), _SHOWN)}: unknown key; the config takes {sorted(known)}")
        for key in ("data", "space", "searcher"):
            if key not in raw:
                raise ConfigError(f"{key}: required key is missing")
        objectives = _objectives(raw.get("objectives", ["ne", "flops"]))
        baselines = raw.get("baselines", list(DEFAULT_BASELINES))
        if baselines is None:
            baselines = []
        if not isinstance(baselines, list) or not all(isinstance(b, str) for b in baselines):
            raise ConfigError(f"baselines: must be a list of names or architecture JSON paths, got {_shown(baselines)}")
        seed = coerce(raw.get("seed", 0), "int", "seed")
        config = SearchConfig(
            data=_data(raw["data"]),
            space=_named(raw["space"], "space"),
            searcher=_named(raw["searcher"], "searcher"),
            objectives=objectives,
            budget=_section(BudgetSection, raw.get("budget", {}), "budget"),
            train=_train(raw.get("train", {})),
            resources=_section(TrialResources, _pick(raw.get("train", {}), TrialResources), "train"),
            baselines=tuple(baselines),
            final=_section(FinalSection, raw.get("final", {}), "final"),
            seed=seed,
            logging=_section(LoggingSection, raw.get("logging", {}), "logging"),
        )
        return config


def _require(ok: bool, key: str, value: Any, rule: str) -> None:
    if not ok:
        raise ConfigError(f"{key}: must be {rule}, got {_shown(value)}")


def _section(kind: type, raw: Any, where: str) -> Any:
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"{where}: must be a mapping, got {_shown(raw)}")
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(raw) - set(known), key=str)
    if unknown:
        raise ConfigError(f"{where}.{_clip(str(unknown[0]), _SHOWN)}: unknown key; {where} takes {sorted(known)}")
    section = kind(**{k: coerce(v, known[k].type, f"{where}.{k}") for k, v in raw.items()})
    section.check()
    return section


def _pick(raw: Any, kind: type) -> Any:
    """The keys of `raw` that are fields of `kind` (`raw` as it is when not a mapping)."""
    if not isinstance(raw, Mapping):
        return raw
    names = {f.name for f in fields(kind)}
    return {k: v for k, v in raw.items() if k in names}


def _train(raw: Any) -> TrainConfig:
    """The `train` section's training settings (TrialResources takes the rest)."""
    if raw is None:
        raw = {}
    if not isinstance(raw, Mapping):
        raise ConfigError(f"train: must be a mapping, got {_shown(raw)}")
    unknown = sorted(set(raw) - set(TRAIN_KEYS), key=str)
    if unknown:
        raise ConfigError(f"train.{_clip(str(unknown[0]), _SHOWN)}: unknown key; train takes {sorted(TRAIN_KEYS)}")
    known = {f.name: f for f in fields(TrainConfig)}
    values = {k: coerce(v, known[k].type, f"train.{k}") for k, v in raw.items() if k in known}
    return TrainConfig(**values, checkpoint_every=0).check("train.")


def _dates(value: Any, where: str) -> str:
    if isinstance(value, dt.date):  # YAML reads an unquoted 2024-01-03 as a date
        return value.isoformat()
    if isinstance(value, list) and all(isinstance(v, dt.date) for v in value if not isinstance(v, str)):
        value = [v.isoformat() if isinstance(v, dt.date) else v for v in value]
    if isinstance(value, str) and value.strip():
        return value
    if isinstance(value, list) and value and all(isinstance(v, str) for v in value):
        return ",".join(value)
    raise ConfigError(f"{where}: must be a date spec (D, D1..D2, first:K, last:K) or a list of "
                      f"them, got {_shown(value)}")


def _data(raw: Any) -> DataSection:
    if not isinstance(raw, Mapping):
        raise ConfigError(f"data: must be a mapping with path and dates, got {_shown(raw)}")
    keys = ("path", "train_dates", "valid_dates", "test_dates")
    unknown = sorted(set(raw) - set(keys), key=str)
    if unknown:
        raise ConfigError(f"data.{_clip(str(unknown[0]), _SHOWN)}: unknown key; data takes {list(keys)}")
    for key in keys:
        if key not in raw:
            raise ConfigError(f"data.{key}: required key is missing")
    path = raw["path"]
    if not isinstance(path, str) or not path:
        raise ConfigError(f"data.path: must be a dataset folder or URI, got {_shown(path)}")
    return DataSection(path=path, **{k: _dates(raw[k], f"data.{k}") for k in keys[1:]})


def _named(raw: Any, where: str) -> NamedSection:
    if isinstance(raw, str):
        raw = {"name": raw}
    if not isinstance(raw, Mapping) or not isinstance(raw.get("name"), str):
        raise ConfigError(f"{where}.name: required (a registered {where} name), got {_shown(raw)}")
    return NamedSection(name=raw["name"], options={k: v for k, v in raw.items() if k != "name"})


def _objectives(raw: Any) -> tuple[str, ...]:
    return check_names("objectives", [raw] if isinstance(raw, str) else raw, sorted(OBJECTIVES), "objective")
