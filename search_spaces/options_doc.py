"""What `rankitect spaces --options` lists: each space option's type, default, rule and meaning.

The rule is the one the option's check enforces (search_spaces.common.recorded_rules); the
meaning is the option's entry in its Options class docstring, written there as
`name: what it is; other_name: ...`.
"""

from __future__ import annotations

import re
from dataclasses import dataclass, fields
from typing import Any

from rankitect.space import SearchSpace
from search_spaces.common import recorded_rules


@dataclass(frozen=True)
class OptionDoc:
    name: str
    type: str
    default: Any
    rule: str  # "" where no check states one
    meaning: str


def _meanings(doc: str, names: list[str]) -> dict[str, str]:
    """{name: its text} of a docstring `a: text; b: text` (a text may hold `;` of its own)."""
    text = " ".join((doc or "").split())
    starts = [(m.start(), m.end(), m.group(1)) for m in re.finditer(rf"(?:^|(?<=; ))({'|'.join(names)}): ", text)]
    out = {}
    for i, (_, end, name) in enumerate(starts):
        stop = starts[i + 1][0] if i + 1 < len(starts) else len(text)
        out[name] = text[end:stop].rstrip("; .")
    return out


def describe_options(space: type[SearchSpace]) -> list[OptionDoc]:
    """The options of `space` in declaration order."""
    options = space.Options()
    names = [f.name for f in fields(options)]
    rules = recorded_rules(options)
    meanings = _meanings(space.Options.__doc__ or "", names) if names else {}
    return [OptionDoc(f.name, str(f.type), getattr(options, f.name), rules.get(f.name, ""), meanings.get(f.name, ""))
            for f in fields(options)]


def options_lines(space: type[SearchSpace]) -> list[str]:
    """`rankitect spaces --options` for one space: a line per option, then its rule and meaning."""
    lines = []
    for option in describe_options(space):
        default = list(option.default) if isinstance(option.default, tuple) else option.default
        lines.append(f"    {option.name}: {option.type} = {default!r}")
        if option.rule:
            lines.append(f"        {option.rule}")
        if option.meaning:
            lines.append(f"        {option.meaning}")
    return lines
