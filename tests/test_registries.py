"""Every registry (blocks, spaces, searchers, baselines) behaves alike: a name taken by another
definition raises, an unknown name is a ConfigError naming the key and listing the names."""

from __future__ import annotations

import pytest

from rankitect.blocks import get_block
from rankitect.blocks.registry import block_names
from rankitect.errors import ConfigError
from rankitect.searchers.base import register_searcher, searcher_class, searcher_names
from rankitect.searchers.optuna_samplers import RandomSearcher
from rankitect.space import baseline_names, get_baseline, get_space, register_baseline, space_names
from tests.helpers import toy_schema

LOOKUPS = [
    (lambda: get_block("warp"), "block: unknown block 'warp'; blocks: ", block_names),
    (lambda: get_space("warp"), "space.name: unknown search space 'warp'; search spaces: ", space_names),
    (lambda: searcher_class("warp"), "searcher.name: unknown searcher 'warp'; searchers: ", searcher_names),
    (lambda: get_baseline("warp", toy_schema()), "baseline: unknown baseline 'warp'; baselines: ", baseline_names),
]


@pytest.mark.parametrize("lookup, message, names", LOOKUPS)
def test_an_unknown_name_is_a_config_error_naming_the_key_and_the_names(lookup, message: str, names) -> None:
    with pytest.raises(ConfigError) as err:
        lookup()
    assert str(err.value) == message + str(names())
    assert len(names()) >= 2


def test_a_searcher_name_taken_by_another_class_raises() -> None:
    class Impostor(RandomSearcher):
        name = "random"

    with pytest.raises(ValueError, match="searcher 'random' is already registered by .*RandomSearcher"):
        register_searcher(Impostor)
    assert searcher_class("random") is RandomSearcher
    register_searcher(RandomSearcher)  # the same definition again (a module reload) is fine


def test_a_baseline_name_taken_by_another_function_raises() -> None:
    dlrm = get_baseline("dlrm", toy_schema())

    def other(schema):  # noqa: ANN001, ANN202
        return dlrm

    with pytest.raises(ValueError, match="baseline 'dlrm' is already registered by search_spaces.baselines.dlrm"):
        register_baseline("dlrm", other)
    assert get_baseline("dlrm", toy_schema()) == dlrm
