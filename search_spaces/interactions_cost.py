"""FLOPs of the interactions space per layer choice (registry numbers), and its extreme paths.

The state shapes of the space are fixed for a width, so the FLOPs of a choices mapping are a
base (everything outside the layers) plus one term per layer; the mixed-op supernet's expected
FLOPs and the sandwich extremes (`largest` / `smallest`) are computed from this table.
"""

from __future__ import annotations

from collections.abc import Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

from rankitect.cost import cost_of

if TYPE_CHECKING:
    from search_spaces.interactions import InteractionsSpace

SIZE_CHOICE = {"dcn": "dcn_rank", "mlp": "mlp_hidden", "attention": "heads"}  # module -> size choice
NO_OP = "skip"


@dataclass(frozen=True)
class FlopsTable:
    """Per-example FLOPs of the space, split into what the layers add and the rest.

    `base[w]`: everything outside the layers (dense normalization, pooling, h0, head) at width
    w. `layer[(i, module, size, w)]`: the FLOPs of layer i's nodes. The FLOPs of a choices
    mapping are `base[w] + sum_i layer[(i, module_i, size_i, w)]` (the state shapes are fixed,
    so layers are independent).
    """

    base: dict[int, int]
    layer: dict[tuple[int, str, Any, int], int]

    def of(self, choices: Mapping[str, Any], layers: int) -> int:
        width = choices["width"]
        return self.base[width] + sum(self.layer[(i, *layer_option(choices, i), width)] for i in range(layers))


def size_options(space: InteractionsSpace, module: str) -> tuple[Any, ...]:
    """The options of `module`'s size choice, or (None,) for a module without one."""
    name = SIZE_CHOICE.get(module)
    if name is None:
        return (None,)
    return next(c.options for c in space.choices() if c.name == f"l0.{name}")


def layer_option(choices: Mapping[str, Any], i: int) -> tuple[str, Any]:
    """(module, size) of layer i in a choices mapping (size None for a module without one)."""
    module = choices[f"l{i}.module"]
    name = SIZE_CHOICE.get(module)
    return module, (choices[f"l{i}.{name}"] if name else None)


def dim_options(space: InteractionsSpace) -> dict[str, tuple[int, ...]]:
    """The "dim.<column>" choices of `space` (searched embedding widths) with their options."""
    return {c.name: c.options for c in space.choices() if c.name.startswith("dim.")}


def uniform_choices(space: InteractionsSpace, width: int, module: str, size: Any) -> dict[str, Any]:
    """Every layer set to `module` with `size`, at `width`; every column at its widest table."""
    out: dict[str, Any] = {"width": width} | {name: max(o) for name, o in dim_options(space).items()}
    for i in range(space.options.layers):
        out[f"l{i}.module"] = module
        if module in SIZE_CHOICE:
            out[f"l{i}.{SIZE_CHOICE[module]}"] = size
    return out


def flops_table(space: InteractionsSpace) -> FlopsTable:
    """The FLOPs table of `space`, from `cost_of` of decoded architectures (registry numbers)."""
    base: dict[int, int] = {}
    layer: dict[tuple[int, str, Any, int], int] = {}
    for width in space.options.widths:
        for module in space.layer_candidates()[0]:
            for size in size_options(space, module):
                cost = cost_of(space.decode(uniform_choices(space, width, module, size)), space.schema)
                in_layers = 0
                for i in range(space.options.layers):
                    flops = sum(v for k, v in cost.by_node.items() if k.startswith(f"l{i}_"))
                    layer[(i, module, size, width)] = flops
                    in_layers += flops
                base[width] = cost.flops - in_layers
    return FlopsTable(base, layer)


def extreme_choices(space: InteractionsSpace, largest: bool) -> dict[str, Any]:
    """The path with the most (largest=True) or fewest FLOPs: the extreme width, and in each
    layer the extreme (module, size) at that width (FLOPs grow with the width)."""
    table = flops_table(space)
    pick = max if largest else min
    width = pick(space.options.widths)
    decided: dict[str, Any] = {"width": width}
    for i in range(space.options.layers):
        options = [(m, s) for m in space.layer_candidates()[i] for s in size_options(space, m)]
        module, size = pick(options, key=lambda o: table.layer[(i, o[0], o[1], width)])
        decided[f"l{i}.module"] = module
        if module in SIZE_CHOICE:
            decided[f"l{i}.{SIZE_CHOICE[module]}"] = size
    base = uniform_choices(space, width, *next((m, s) for m in space.layer_candidates()[0]
                                               for s in size_options(space, m)))
    for name, options in dim_options(space).items():  # a column's width changes the lookup only
        decided[name] = pick(options, key=lambda d: cost_of(space.decode({**base, name: d}), space.schema).flops)
    return space.check_choices(decided)
