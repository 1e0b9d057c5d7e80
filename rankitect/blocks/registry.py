"""The one list of blocks. Built-ins register on import of `rankitect.blocks`; a block defined
anywhere else registers with `@register_block` and is then listed, validated and built alike.
"""

from __future__ import annotations

from rankitect.blocks.base import Block
from rankitect.blocks.spec import BlockSpec
from rankitect.registry import Registry, definition_of

_BLOCKS: Registry[Block] = Registry("block")


def register_block(cls: type[Block]) -> type[Block]:
    """Class decorator: register one instance of `cls` under `cls.spec.name`.

    Raises ValueError if another class already holds the name.
    """
    _BLOCKS.register(cls.spec.name, cls(), definition_of(cls))
    return cls


def unregister_block(name: str) -> None:
    """Remove a block (tests that register their own use this to clean up)."""
    _BLOCKS.unregister(name)


def get_block(name: str, key: str = "block") -> Block:
    """The registered block `name`; UnknownName (a ConfigError) listing the names otherwise."""
    return _BLOCKS.get(name, key)


def block_names() -> list[str]:
    return _BLOCKS.names()


def list_blocks() -> list[BlockSpec]:
    """Specs of every registered block, sorted by name."""
    return [get_block(n).spec for n in block_names()]
