"""Plain-data declarations of blocks and their hyper-parameters (what goes on the wire).

Shapes are per example, without the batch axis: a 2-D tensor `[B, D]` has shape `(D,)`,
a 3-D tensor `[B, F, E]` has shape `(F, E)`.
"""

from __future__ import annotations

import math
from dataclasses import dataclass, field
from typing import Any

Shape = tuple[int, ...]
PARAM_KINDS = ("int", "float", "bool", "choice", "int_list", "table_rows")


@dataclass(frozen=True)
class HyperParam:
    """One hyper-parameter: its kind, default, and allowed range.

    kinds: "int" and "float" (inclusive `low`..`high`), "bool", "choice" (one of `choices`),
    "int_list" (`min_len`..`max_len` ints, each in `low`..`high`), "table_rows" ("auto", an
    int in `low`..`high`, or a mapping of column name to "auto" or such an int).
    """

    name: str
    kind: str
    default: Any
    doc: str
    low: float | None = None
    high: float | None = None
    choices: tuple[Any, ...] | None = None
    min_len: int | None = None
    max_len: int | None = None

    def __post_init__(self) -> None:
        if self.kind not in PARAM_KINDS:
            raise ValueError(f"hyper-parameter {self.name!r}: kind must be one of {PARAM_KINDS}, "
                             f"got {self.kind!r}")

    def check(self, value: Any) -> Any:
        """The value normalized to its kind, or ValueError stating the rule and the value."""
        if self.kind == "bool":
            if not isinstance(value, bool):
                raise ValueError(f"must be true or false, got {value!r}")
            return value
        if self.kind == "choice":
            if value not in (self.choices or ()):
                raise ValueError(f"must be one of {list(self.choices or ())}, got {value!r}")
            return value
        if self.kind == "int_list":
            if not isinstance(value, (list, tuple)) or not all(_is_int(v) for v in value):
                raise ValueError(f"must be a list of integers, got {value!r}")
            if not (self.min_len or 0) <= len(value) <= (self.max_len or math.inf):
                raise ValueError(f"must hold {self.min_len}..{self.max_len} values, got {len(value)}")
            for v in value:
                self._check_range(int(v))
            return tuple(int(v) for v in value)
        if self.kind == "table_rows":
            return self._check_table_rows(value)
        if self.kind == "int":
            if not _is_int(value):
                raise ValueError(f"must be an integer, got {value!r}")
            return self._check_range(int(value))
        if isinstance(value, bool) or not isinstance(value, (int, float)) or not math.isfinite(value):
            raise ValueError(f"must be a finite number, got {value!r}")
        return self._check_range(float(value))

    def _check_table_rows(self, value: Any) -> Any:
        if isinstance(value, dict):
            out = {}
            for column, rows in value.items():
                try:
                    if isinstance(rows, dict):
                        raise ValueError(f"must be \"auto\" or an integer, got {rows!r}")
                    out[str(column)] = self._check_table_rows(rows)
                except ValueError as exc:
                    raise ValueError(f"column {column!r}: {exc}") from None
            return out
        if value == "auto":
            return value
        if not _is_int(value):
            raise ValueError(f"must be \"auto\", an integer or {{column: rows}}, got {value!r}")
        return self._check_range(int(value))

    def _check_range(self, value: float) -> Any:
        if (self.low is not None and value < self.low) or (self.high is not None and value > self.high):
            raise ValueError(f"must be in [{self.low}, {self.high}], got {value!r}")
        return value

    def to_dict(self) -> dict[str, Any]:
        out: dict[str, Any] = {"name": self.name, "kind": self.kind, "doc": self.doc,
                               "default": list(self.default) if isinstance(self.default, tuple) else self.default}
        for key in ("low", "high", "min_len", "max_len"):
            if getattr(self, key) is not None:
                out[key] = getattr(self, key)
        if self.choices is not None:
            out["choices"] = list(self.choices)
        return out


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


@dataclass(frozen=True)
class BlockSpec:
    """What a block is, as data: name, doc, hyper-parameters, and which inputs it takes.

    `input_ranks`: the per-example ranks accepted for each input (1 for `(D,)`, 2 for `(F, E)`).
    """

    name: str
    doc: str
    params: tuple[HyperParam, ...] = ()
    min_inputs: int = 1
    max_inputs: int = 1
    input_ranks: tuple[int, ...] = (1, 2)
    tags: tuple[str, ...] = field(default=())

    def param(self, name: str) -> HyperParam:
        for p in self.params:
            if p.name == name:
                return p
        raise KeyError(name)

    def resolve(self, given: dict[str, Any]) -> tuple[dict[str, Any], list[tuple[str, str]]]:
        """Defaults filled in and values checked: (params, [(field, message), ...])."""
        problems: list[tuple[str, str]] = []
        known = {p.name for p in self.params}
        for key in given:
            if key not in known:
                problems.append((f"params.{key}", f"unknown hyper-parameter of block {self.name!r}; "
                                                  f"it takes {sorted(known) or 'none'}"))
        out: dict[str, Any] = {}
        for p in self.params:
            value = given.get(p.name, p.default)
            try:
                out[p.name] = p.check(value)
            except ValueError as exc:
                problems.append((f"params.{p.name}", str(exc)))
        return out, problems

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "doc": self.doc, "params": [p.to_dict() for p in self.params],
                "min_inputs": self.min_inputs, "max_inputs": self.max_inputs,
                "input_ranks": list(self.input_ranks), "tags": list(self.tags)}
