"""Building blocks. Importing this package registers the built-ins."""

from rankitect.blocks import (  # noqa: F401  (imported to register)
    attention,
    combine,
    cross,
    dot,
    efc,
    embedding,
    fm,
    gating,
    mlp,
)
from rankitect.blocks.base import Block, ShapeError
from rankitect.blocks.registry import (
    block_names,
    get_block,
    list_blocks,
    register_block,
    unregister_block,
)
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape

__all__ = ["Block", "BlockSpec", "HyperParam", "Shape", "ShapeError", "block_names", "get_block",
           "list_blocks", "register_block", "unregister_block"]
