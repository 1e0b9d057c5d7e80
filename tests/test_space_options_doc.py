"""`rankitect spaces --options`: every option listed with its type, default, rule and meaning,
and each listed range is the one its check enforces."""

from __future__ import annotations

import dataclasses
import re

import pytest

import search_spaces  # noqa: F401 (registers the spaces)
from launcher.cli import main
from rankitect.errors import ConfigError
from rankitect.space import get_space, space_names
from search_spaces.options_doc import describe_options


@pytest.mark.parametrize("name", sorted(space_names()))
def test_every_option_has_a_type_a_rule_and_a_meaning(name: str) -> None:
    space = get_space(name)
    docs = describe_options(space)
    assert [d.name for d in docs] == [f.name for f in dataclasses.fields(space.Options)]
    for doc in docs:
        assert doc.type and doc.rule and doc.meaning, doc
        assert doc.default == getattr(space.Options(), doc.name)


@pytest.mark.parametrize("name", sorted(space_names()))
def test_the_listed_ranges_are_the_ones_the_checks_enforce(name: str) -> None:
    space = get_space(name)
    probed = 0
    for doc in describe_options(space):
        match = re.fullmatch(r"(distinct )?integers? in (\d+)\.\.(\d+)(, at least one)?", doc.rule)
        if not match:
            continue
        low, high = int(match.group(2)), int(match.group(3))
        wrap = (lambda v: (v,)) if match.group(1) else (lambda v: v)
        for value in (low, high):
            space.Options(**{doc.name: wrap(value)}).check()
        for value in (low - 1, high + 1):
            with pytest.raises(ConfigError, match=rf"space\.{doc.name}"):
                space.Options(**{doc.name: wrap(value)}).check()
        probed += 1
    assert probed >= 3


def test_the_cli_lists_every_option_of_every_space(capsys) -> None:
    assert main(["spaces", "--options"]) == 0
    out = capsys.readouterr().out
    for name in space_names():
        for doc in describe_options(get_space(name)):
            assert f"    {doc.name}: {doc.type} = " in out
            assert doc.rule in out
