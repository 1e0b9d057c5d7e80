"""The one list of blocks. Built-ins register on import of `rankitect.blocks`; a block defined
anywhere else registers with `@register_block` and is then listed, validated and built alike.
"""

from __future__ import annotations

from rankitect.blocks.base import Block
from rankitect.blocks.spec import BlockSpec

_BLOCKS: dict[str, Block] = {}


def register_block(cls: type[Block]) -> type[Block]:
    """Class decorator: register one instance of `cls` under `cls.spec.name`.

    Raises ValueError if another class already holds the name.
    """
    name = cls.spec.name
    existing = _BLOCKS.get(name)
    if existing is not None and type(existing).__qualname__ != cls.__qualname__:
        raise ValueError(f"block name {name!r} is already registered by "
                         f"{type(existing).__module__}.{type(existing).__qualname__}")
    _BLOCKS[name] = cls()
    return cls


def unregister_block(name: str) -> None:
    """Remove a block (tests that register their own use this to clean up)."""
    _BLOCKS.pop(name, None)


def get_block(name: str) -> Block:
    """The registered block `name`; ValueError listing the valid names otherwise."""
    try:
        return _BLOCKS[name]
    except KeyError:
        raise ValueError(f"unknown block {name!r}; registered blocks: {block_names()}") from None


def block_names() -> list[str]:
    return sorted(_BLOCKS)


def list_blocks() -> list[BlockSpec]:
    """Specs of every registered block, sorted by name."""
    return [_BLOCKS[n].spec for n in block_names()]
