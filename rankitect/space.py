"""The search-space interface every searcher uses, and the registry of spaces by name.

A space describes architectures by a small set of named choices (its genotype). Subclasses
list the choices (`choices`) and turn a full assignment into an architecture (`decode`);
sampling, mutation and Optuna's define-by-run suggestions are derived from that list, so a
new space is one class in one file. Spaces are registered with `@register_space`; the
`search_spaces` package registers its spaces through the `rankitect.plugins` entry point, so
this module never imports it.

Thread-safety: spaces are immutable after construction; every method may be called from
several threads.
"""

from __future__ import annotations

import abc
import random
from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass, fields
from importlib.metadata import entry_points
from pathlib import Path
from typing import Any, ClassVar

from rankitect.arch.graph import Architecture
from rankitect.errors import ConfigError, UserError
from rankitect.registry import Registry, definition_of
from rankitect.schema import Schema

Choices = dict[str, Any]


@dataclass(frozen=True)
class Choice:
    """One decision: its `name`, its `options` (JSON scalars), and when it applies.

    `active(decided)` receives the choices decided so far (those listed before this one) and
    says whether this choice matters; inactive choices are neither sampled nor suggested.
    """

    name: str
    options: tuple[Any, ...]
    active: Callable[[Mapping[str, Any]], bool] | None = None

    def is_active(self, decided: Mapping[str, Any]) -> bool:
        return self.active is None or self.active(decided)


@dataclass(frozen=True)
class SpaceOptions:
    """Base of each space's options dataclass; `check` raises ConfigError naming the key."""

    def check(self) -> None:
        return None


class SearchSpace(abc.ABC):
    """A family of architectures for one schema.

    Subclasses set `name`, `doc`, `Options` (a frozen dataclass of their options) and
    implement `choices` and `decode`. `decode` of any assignment that `sample`, `mutate` or
    `suggest` can produce must give an architecture that validates for the schema.
    Supernets (one-shot, DNAS) come with the searchers that need them.
    """

    name: ClassVar[str]
    doc: ClassVar[str] = ""
    Options: ClassVar[type[SpaceOptions]] = SpaceOptions

    def __init__(self, schema: Schema, options: SpaceOptions | None = None) -> None:
        self.schema = schema
        self.options = options if options is not None else self.Options()
        self.options.check()

    @abc.abstractmethod
    def choices(self) -> Sequence[Choice]:
        """All choices in decision order (a choice's `active` may look at earlier ones)."""

    @abc.abstractmethod
    def decode(self, choices: Mapping[str, Any]) -> Architecture:
        """The architecture of a full assignment of the active choices."""

    # -- supernets (one-shot and differentiable searchers) --------------------------------
    def supernet(self) -> Any:
        """A `rankitect.supernet.WeightSharingSupernet` over this space (fresh weights), from the
        factory registered for it (`register_supernets`)."""
        build = _SUPERNETS.get(self.name, {}).get("weight_sharing")
        if build is None:
            raise ConfigError(f"space {self.name!r} does not build a weight-sharing supernet; "
                              f"spaces that do: {spaces_with_supernets()}")
        return build(self)

    def mixed_supernet(self, normalize: bool = False) -> Any:
        """A `rankitect.supernet.MixedOpSupernet` over this space (fresh weights and logits);
        `normalize`: each candidate's output is scaled to unit RMS per row before mixing."""
        build = _SUPERNETS.get(self.name, {}).get("mixed")
        if build is None:
            raise ConfigError(f"space {self.name!r} does not build a mixed-op supernet; "
                              f"spaces that do: {spaces_with_supernets('mixed')}")
        return build(self, normalize)

    @classmethod
    def has_supernets(cls) -> bool:
        return "weight_sharing" in _SUPERNETS.get(cls.name, {})

    def baseline_choices(self, name: str) -> Choices | None:
        """The choices of this space's member nearest to the registered baseline `name` (the
        same architecture where the space holds it), or None when the space has no such member.
        A sampling search starts from these (rankitect.experiment.plan). Default: none."""
        return None

    def largest(self) -> Choices:
        """The choices of the largest sub-architecture (sandwich rule); default: the last option
        of each active choice."""
        decided: Choices = {}
        for choice in self.choices():
            if choice.is_active(decided):
                decided[choice.name] = choice.options[-1]
        return decided

    def smallest(self) -> Choices:
        """The choices of the smallest sub-architecture; default: the first option of each."""
        decided: Choices = {}
        for choice in self.choices():
            if choice.is_active(decided):
                decided[choice.name] = choice.options[0]
        return decided

    # -- derived from `choices` ----------------------------------------------------------
    def sample(self, rng: random.Random) -> Choices:
        """Each active choice drawn uniformly."""
        decided: Choices = {}
        for choice in self.choices():
            if choice.is_active(decided):
                decided[choice.name] = rng.choice(choice.options)
        return decided

    def mutate(self, parent: Mapping[str, Any], rng: random.Random) -> Choices:
        """A child differing from `parent` in one active choice (later choices re-drawn only
        when they become active and had no value)."""
        active = [c for c in self._active(parent) if len(c.options) > 1]
        if not active:
            return dict(parent)
        target = rng.choice(active)
        new_value = rng.choice([o for o in target.options if o != parent[target.name]])
        child: Choices = {}
        for choice in self.choices():
            if not choice.is_active(child):
                continue
            if choice.name == target.name:
                child[choice.name] = new_value
            elif choice.name in parent:
                child[choice.name] = parent[choice.name]
            else:
                child[choice.name] = rng.choice(choice.options)
        return child

    def suggest(self, trial: Any) -> Choices:
        """Define-by-run: ask an Optuna trial for each active choice, in order."""
        decided: Choices = {}
        for choice in self.choices():
            if choice.is_active(decided):
                decided[choice.name] = trial.suggest_categorical(choice.name, list(choice.options))
        return decided

    def check_choices(self, choices: Mapping[str, Any]) -> Choices:
        """The active subset of `choices`; ConfigError naming a missing or invalid choice."""
        decided: Choices = {}
        for choice in self.choices():
            if not choice.is_active(decided):
                continue
            if choice.name not in choices:
                raise ConfigError(f"space {self.name!r}: choice {choice.name!r} is missing")
            value = choices[choice.name]
            # Typed comparison: in Python False == 0 and True == 1, which are different options.
            if not any(value == o and type(value) is type(o) for o in choice.options):
                raise ConfigError(f"space {self.name!r}: choice {choice.name!r} must be one of "
                                  f"{list(choice.options)}, got {value!r}")
            decided[choice.name] = value
        return decided

    def _active(self, decided: Mapping[str, Any]) -> list[Choice]:
        seen: Choices = {}
        out = []
        for choice in self.choices():
            if choice.is_active(seen) and choice.name in decided:
                seen[choice.name] = decided[choice.name]
                out.append(choice)
        return out


# -- registry ------------------------------------------------------------------------------
_plugins_loaded = False


def load_plugins() -> None:
    """Import the packages that declare `rankitect.plugins` entry points (once)."""
    global _plugins_loaded
    if _plugins_loaded:
        return
    _plugins_loaded = True
    for ep in entry_points(group="rankitect.plugins"):
        ep.load()


_SPACES: Registry[type[SearchSpace]] = Registry("search space", load_plugins)


_SUPERNETS: dict[str, dict[str, Callable[..., Any]]] = {}


def register_supernets(space: str, weight_sharing: Callable[[Any], Any] | None = None,
                       mixed: Callable[[Any, bool], Any] | None = None) -> None:
    """The supernet factories of space `space`: `weight_sharing(space)` and `mixed(space,
    normalize)` (modules beside the space register them, so the space never imports them)."""
    entry = _SUPERNETS.setdefault(space, {})
    if weight_sharing is not None:
        entry["weight_sharing"] = weight_sharing
    if mixed is not None:
        entry["mixed"] = mixed


def spaces_with_supernets(kind: str = "weight_sharing") -> list[str]:
    """The spaces that build supernets of `kind` ("weight_sharing" or "mixed")."""
    return [n for n in space_names() if kind in _SUPERNETS.get(n, {})]


def spaces_supernets(name: str) -> set[str]:
    """The kinds of supernet space `name` builds."""
    load_plugins()
    return set(_SUPERNETS.get(name, {}))


def register_space(cls: type[SearchSpace]) -> type[SearchSpace]:
    """Class decorator; ValueError if another class holds the name."""
    _SPACES.register(cls.name, cls, definition_of(cls))
    return cls


def unregister_space(name: str) -> None:
    _SPACES.unregister(name)


def space_names() -> list[str]:
    return _SPACES.names()


def get_space(name: str, key: str = "space.name") -> type[SearchSpace]:
    """The space class `name`; UnknownName (a ConfigError) naming `key` otherwise."""
    return _SPACES.get(name, key)


def make_space(name: str, schema: Schema, options: Mapping[str, Any] | None = None,
               where: str = "space") -> SearchSpace:
    """Build space `name` from an options mapping; ConfigError naming `where.<key>` when wrong."""
    cls = get_space(name, f"{where}.name")
    return cls(schema, options_from_mapping(cls.Options, options or {}, where))


def options_from_mapping(kind: type, raw: Mapping[str, Any], where: str) -> Any:
    """A frozen options dataclass from a mapping: unknown keys and wrong types name the key path."""
    known = {f.name: f for f in fields(kind)}
    unknown = sorted(set(raw) - set(known))
    if unknown:
        raise ConfigError(f"{where}.{unknown[0]}: unknown key; {where} takes {sorted(known) or 'no options'}")
    values = {}
    for key, value in raw.items():
        values[key] = coerce(value, known[key].type, f"{where}.{key}")
    options = kind(**values)
    if hasattr(options, "check"):
        options.check()
    return options


def check_names(key: str, values: Any, allowed: Sequence[str], what: str) -> tuple[str, ...]:
    """`values` as a tuple, when it is a non-empty list of distinct names from `allowed`;
    ConfigError naming `key` (and the index of a wrong name) otherwise."""
    if not isinstance(values, (tuple, list)) or not values or not all(isinstance(v, str) for v in values):
        raise ConfigError(f"{key}: must be a non-empty list of {what}s from {list(allowed)}, got {values!r}")
    for i, v in enumerate(values):
        if v not in allowed:
            raise ConfigError(f"{key}[{i}]: unknown {what} {v!r}; choose from {list(allowed)}")
    if len(set(values)) != len(values):
        raise ConfigError(f"{key}: listed twice in {list(values)}")
    return tuple(values)


def coerce(value: Any, annotation: Any, where: str) -> Any:
    """Check `value` against a simple annotation (str form allowed); tuples from lists."""
    text = annotation if isinstance(annotation, str) else getattr(annotation, "__name__", str(annotation))
    text = text.replace(" ", "")
    optional = text.endswith("|None") or text.startswith("None|")
    if value is None:
        if optional:
            return None
        raise ConfigError(f"{where}: must not be null")
    base = text.replace("|None", "").replace("None|", "")
    if base.startswith("tuple["):
        if not isinstance(value, (list, tuple)):
            raise ConfigError(f"{where}: must be a list, got {value!r}")
        inner = base[len("tuple["):-1].split(",")[0]
        return tuple(coerce(v, inner, f"{where}[{i}]") for i, v in enumerate(value))
    checks: dict[str, Callable[[Any], bool]] = {
        "int": lambda v: isinstance(v, int) and not isinstance(v, bool),
        "float": lambda v: isinstance(v, (int, float)) and not isinstance(v, bool),
        "bool": lambda v: isinstance(v, bool),
        "str": lambda v: isinstance(v, str),
    }
    check = checks.get(base)
    if check is None:
        return value
    if not check(value):
        raise ConfigError(f"{where}: must be {base}, got {value!r}")
    return float(value) if base == "float" else value


# -- named fixed architectures (baselines) --------------------------------------------------
_BASELINES: Registry[Callable[[Schema], Architecture]] = Registry("baseline", load_plugins)


def register_baseline(name: str, build: Callable[[Schema], Architecture]) -> None:
    """A fixed architecture, built for a schema, usable by name wherever an architecture is;
    ValueError if another function holds the name."""
    _BASELINES.register(name, build, definition_of(build))


def baseline_names() -> list[str]:
    return _BASELINES.names()


def get_baseline(name: str, schema: Schema, key: str = "baseline") -> Architecture:
    """The baseline `name` built for `schema`; UnknownName (a ConfigError) naming `key` otherwise."""
    return _BASELINES.get(name, key)(schema)


def resolve_architecture(name_or_path: str, schema: Schema, field: str = "--arch") -> Architecture:
    """A registered baseline name, or a path to an architecture JSON file."""
    if name_or_path in _BASELINES:
        return get_baseline(name_or_path, schema, field)
    path = Path(name_or_path)
    if path.is_file():
        return Architecture.load(path)
    raise UserError(f"{field} {name_or_path!r} is neither a baseline {baseline_names()} "
                    f"nor an architecture JSON file")
