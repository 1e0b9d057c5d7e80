"""One behaviour for every registry of named things a config names: blocks, search spaces,
searchers, baselines.

- Registering a name a different definition already holds raises ValueError naming both
  (registering the same definition again, e.g. on a module reload, is allowed).
- Looking up an unknown name raises ConfigError naming the config key and listing the names.
"""

from __future__ import annotations

from collections.abc import Callable
from typing import Generic, TypeVar

from rankitect.errors import ConfigError

T = TypeVar("T")


class UnknownName(ConfigError, ValueError):
    """A name no definition is registered under (a ConfigError; also a ValueError for callers
    that validate many fields and collect the problems)."""


def definition_of(item: object) -> str:
    """`module.qualname` of a class or function (of the class of anything else)."""
    kind = item if isinstance(item, type) or callable(item) and hasattr(item, "__qualname__") else type(item)
    return f"{kind.__module__}.{kind.__qualname__}"


class Registry(Generic[T]):
    """Named definitions of one kind (`kind`: "block", "search space", ...). `load` runs before
    every lookup (plugins registering through entry points); it must be idempotent."""

    def __init__(self, kind: str, load: Callable[[], None] | None = None) -> None:
        self.kind = kind
        self._load = load or (lambda: None)
        self._items: dict[str, tuple[T, str]] = {}

    def register(self, name: str, item: T, definition: str) -> None:
        """Hold `item` under `name`; ValueError if another `definition` holds the name."""
        held = self._items.get(name)
        if held is not None and held[1] != definition:
            raise ValueError(f"{self.kind} {name!r} is already registered by {held[1]}; "
                             f"{definition} cannot take the name")
        self._items[name] = (item, definition)

    def unregister(self, name: str) -> None:
        self._items.pop(name, None)

    def names(self) -> list[str]:
        self._load()
        return sorted(self._items)

    def __contains__(self, name: object) -> bool:
        self._load()
        return name in self._items

    def get(self, name: str, key: str) -> T:
        """The item `name`; UnknownName naming the config `key` and the registered names."""
        self._load()
        if name not in self._items:
            raise UnknownName(f"{key}: unknown {self.kind} {name!r}; {self.kind}s: {self.names()}")
        return self._items[name][0]
