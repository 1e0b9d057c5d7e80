"""Helpers the search spaces share: option checks, attention head counts, a graph builder."""

from __future__ import annotations

from collections.abc import Iterable, Sequence
from contextvars import ContextVar
from typing import Any

from rankitect.arch.graph import Architecture, Node, prune_unreachable
from rankitect.blocks import get_block
from rankitect.blocks.table_rows import MIN_ROWS, default_rows
from rankitect.errors import ConfigError
from rankitect.schema import Schema
from rankitect.space import Choice, check_names

# While `recorded_rules` collects them, the checks below note the rule of each option they
# check: `rankitect spaces --options` lists the rules the checks enforce, not a second copy.
_RULES: ContextVar[dict[str, str] | None] = ContextVar("space_option_rules", default=None)


def note_rule(key: str, rule: str) -> None:
    """Record `rule` for option `key` if rules are being collected (an item `key[i]` is not)."""
    rules = _RULES.get()
    if rules is not None and "[" not in key:
        rules.setdefault(key, rule)


def recorded_rules(options: Any) -> dict[str, str]:
    """{option: its rule, e.g. "integer in 1..12"} as `options.check()` enforces them."""
    rules: dict[str, str] = {}
    token = _RULES.set(rules)
    try:
        options.check()
    finally:
        _RULES.reset(token)
    return rules


def check_range(key: str, value: Any, low: int, high: int) -> None:
    """ConfigError naming `space.<key>` unless `value` is an int in `low..high`."""
    note_rule(key, f"integer in {low}..{high}")
    if not isinstance(value, int) or isinstance(value, bool):
        raise ConfigError(f"space.{key}: must be an integer, got {value!r}")
    if not low <= value <= high:
        raise ConfigError(f"space.{key}: must be in {low}..{high}, got {value!r}")


def check_values(key: str, values: Any, low: int, high: int) -> None:
    """ConfigError naming `space.<key>` unless `values` is a non-empty tuple of distinct ints in
    `low..high`."""
    note_rule(key, f"distinct integers in {low}..{high}, at least one")
    if not isinstance(values, (tuple, list)) or not values:
        raise ConfigError(f"space.{key}: must be a non-empty list of integers, got {values!r}")
    for i, v in enumerate(values):
        check_range(f"{key}[{i}]", v, low, high)
    if len(set(values)) != len(values):
        raise ConfigError(f"space.{key}: values must be distinct, got {list(values)}")


def check_module_names(key: str, values: Any, allowed: Sequence[str]) -> None:
    """ConfigError naming `space.<key>` unless `values` is a non-empty list of distinct names
    from `allowed`."""
    note_rule(key, f"distinct names of {', '.join(allowed)}, at least one")
    check_names(f"space.{key}", values, allowed, "module")


def check_pooling(value: Any) -> None:
    """ConfigError naming `space.pooling` unless `value` is one of the embedding block's poolings."""
    param = get_block("embedding").spec.param("pooling")
    note_rule("pooling", f"one of {', '.join(param.choices)}")
    try:
        param.check(value)
    except ValueError as exc:
        raise ConfigError(f"space.pooling: {exc}") from None


def embedding_entry(pooling: str, dense_buckets: bool = False, dims: dict[str, int] | None = None) -> dict[str, Any]:
    """An architecture's embedding entry for `pooling`, `dense_buckets` and per-column `dims`:
    defaults left out ("sum", False, every column at E), so that architectures decoded before an
    option existed compare equal to today's."""
    return ({} if pooling == "sum" else {"pooling": pooling}) | ({"dense_buckets": True} if dense_buckets else {}) \
        | ({"dims": dims} if dims else {})


EMBEDDING_DIMS_RULE = "distinct multiples of 4 up to the schema's embedding dim E; empty: not searched"


def check_embedding_dims(values: Any, e: int) -> tuple[int, ...]:
    """`space.embedding_dims` as a tuple: distinct multiples of 4 up to E (empty: not searched);
    ConfigError naming the key otherwise."""
    if values == ():
        return ()
    check_values("embedding_dims", values, 4, e)
    bad = [v for v in values if v % 4]
    if bad:
        raise ConfigError(f"space.embedding_dims: each must be a multiple of 4 up to E={e}, got {list(values)}")
    return tuple(values)


def dim_choices(schema: Schema, dims: tuple[int, ...]) -> list[Choice]:
    """One choice "dim.<column>" per sparse column over `dims` (none when fewer than two)."""
    return [Choice(f"dim.{c.name}", dims) for c in schema.sparse] if len(dims) > 1 else []


def chosen_dims(schema: Schema, choices: Any, e: int) -> dict[str, int]:
    """{column: width} of the columns whose "dim.<column>" choice is below E."""
    return {c.name: choices[f"dim.{c.name}"] for c in schema.sparse
            if f"dim.{c.name}" in choices and choices[f"dim.{c.name}"] != e}


def scaled_rows(schema: Schema, scale: float) -> dict[str, int]:
    """`embedding.rows` giving each sparse column `scale` x its default rows (at least MIN_ROWS)."""
    return {c.name: max(MIN_ROWS, round(default_rows(c) * scale)) for c in schema.sparse}


def head_options(e: int, wanted: Iterable[int] = (1, 2)) -> tuple[int, ...]:
    """Head counts h with h * (E // h) == E within the attention block's ranges.

    Prefers `wanted`; falls back to the smallest head count that fits (large E), or () when no
    attention layer can keep the width E.
    """
    spec = get_block("attention").spec
    max_heads, max_dim = int(spec.param("heads").high or 16), int(spec.param("head_dim").high or 256)

    def fits(h: int) -> bool:
        return 1 <= h <= max_heads and e % h == 0 and e // h <= max_dim

    preferred = tuple(h for h in wanted if fits(h))
    return preferred or tuple(h for h in range(1, max_heads + 1) if fits(h))[:1]


def require_sparse(schema: Schema, space: str) -> None:
    """ConfigError unless the schema has a sparse column (every space here reads (B, F, E))."""
    if schema.num_sparse < 1:
        raise ConfigError(f"space {space!r} needs at least one sparse column; the schema has "
                          f"{schema.num_dense} dense and 0 sparse columns")


class GraphBuilder:
    """Collects nodes in order; `add` returns the new node's id."""

    def __init__(self) -> None:
        self.nodes: list[Node] = []

    def add(self, node_id: str, block: str, inputs: Sequence[str], **params: Any) -> str:
        self.nodes.append(Node(node_id, block, tuple(inputs), dict(params)))
        return node_id

    def flat(self, node_id: str, inputs: Sequence[str]) -> str:
        """One input as is, several joined by concat(flat): (B, sum n_i)."""
        return inputs[0] if len(inputs) == 1 else self.add(node_id, "concat", inputs, mode="flat")

    def architecture(self, output: str, name: str, embedding: dict[str, Any] | None = None) -> Architecture:
        """The graph with every node that does not feed `output` removed; `embedding` is the
        architecture's embedding entry (dim, pooling; the block's defaults when absent)."""
        return prune_unreachable(Architecture(tuple(self.nodes), embedding=dict(embedding or {}), output=output,
                                              name=name))


def refuse_searched_dims(space: Any) -> None:
    """ConfigError for a supernet over a space that searches table widths (its supernets share
    one table per column at E)."""
    if any(c.name.startswith("dim.") for c in space.choices()):
        raise ConfigError(f"space.embedding_dims: one-shot and differentiable searches share one table per column "
                          f"at E; search table widths with a sampling searcher, got {list(space.options.embedding_dims)}")
