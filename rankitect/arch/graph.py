"""Architecture as data, and its JSON form.

JSON: {"name": str, "embedding": {"dim": int, "pooling": "sum"|"mean"},
       "nodes": [{"id": str, "block": str, "inputs": [str, ...], "params": {...}}, ...],
       "output": str}
Inputs name earlier nodes or the two graph inputs: "dense" ([B, D], normalized dense columns)
and "sparse" ([B, F, E], the embedding lookup). `output` (default: the last node) must give
shape (1,): the logit.

Bounds (what no architecture needs, refused before any work): at most MAX_NODES nodes and
JSON nested at most MAX_JSON_DEPTH levels (params included); values echoed in errors are clipped.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from functools import cached_property
from pathlib import Path
from typing import Any

from rankitect.errors import ArchitectureError

INPUT_DENSE = "dense"
INPUT_SPARSE = "sparse"
GRAPH_INPUTS = (INPUT_DENSE, INPUT_SPARSE)
MAX_NODES = 5_000  # nodes of one architecture; more is refused before validation starts
MAX_JSON_DEPTH = 32  # nesting of an architecture's JSON (a node's params sit at level 4)
_SHOWN = 120  # characters of a value echoed in an error message


def shown(value: Any, limit: int = _SHOWN) -> str:
    """repr(value) cut to `limit` characters: how a caller's value is echoed in an error."""
    text = repr(value)
    return text if len(text) <= limit else f"{text[:limit]}... ({len(text) - limit} more characters)"


def too_many_nodes(count: int) -> ArchitectureError:
    """The refusal of an architecture of `count` nodes, over MAX_NODES."""
    return ArchitectureError([("<architecture>", "nodes", f"{count:,} nodes; an architecture has at most "
                                                          f"{MAX_NODES:,} (MAX_NODES)")])


def check_depth(raw: Any, limit: int = MAX_JSON_DEPTH) -> None:
    """ArchitectureError if `raw` (the JSON form) nests deeper than `limit` levels; iterative, so
    any depth is refused without recursing, in time linear in the values looked at."""
    stack = [(raw, 1)]
    while stack:
        value, depth = stack.pop()
        if isinstance(value, (dict, list, tuple)):
            if depth > limit:
                raise ArchitectureError([("<architecture>", "", f"nested more than {limit} levels deep "
                                                                f"(MAX_JSON_DEPTH)")])
            stack.extend((v, depth + 1) for v in (value.values() if isinstance(value, dict) else value))


@dataclass(frozen=True)
class Node:
    """One block instance. `params` holds only what was given; defaults fill in at validation."""

    id: str
    block: str
    inputs: tuple[str, ...]
    params: dict[str, Any] = field(default_factory=dict)

    def to_dict(self) -> dict[str, Any]:
        return {"id": self.id, "block": self.block, "inputs": list(self.inputs),
                "params": {k: list(v) if isinstance(v, tuple) else v for k, v in self.params.items()}}


@dataclass(frozen=True)
class Architecture:
    nodes: tuple[Node, ...]
    embedding: dict[str, Any] = field(default_factory=dict)
    output: str = ""
    name: str = ""

    @property
    def output_id(self) -> str:
        return self.output or (self.nodes[-1].id if self.nodes else "")

    @cached_property
    def nodes_by_id(self) -> dict[str, Node]:
        """Each id's first node (computed once: looking a node up is O(1))."""
        by_id: dict[str, Node] = {}
        for n in self.nodes:
            by_id.setdefault(n.id, n)  # the first node of an id, as a scan would find it
        return by_id

    def node(self, node_id: str) -> Node:
        """The (first) node named `node_id`; KeyError if none is."""
        return self.nodes_by_id[node_id]

    def to_dict(self) -> dict[str, Any]:
        return {"name": self.name, "embedding": dict(self.embedding),
                "nodes": [n.to_dict() for n in self.nodes], "output": self.output_id}

    def to_json(self) -> str:
        return json.dumps(self.to_dict(), indent=2)

    def save(self, path: Path) -> None:
        Path(path).write_text(self.to_json() + "\n")

    @staticmethod
    def from_dict(raw: Any) -> "Architecture":
        """Parse the JSON form; structural mistakes raise ArchitectureError naming node and field."""
        if not isinstance(raw, dict):
            raise ArchitectureError([("<architecture>", "", f"must be a JSON object, got {type(raw).__name__}")])
        if isinstance(raw.get("nodes"), list) and len(raw["nodes"]) > MAX_NODES:
            raise too_many_nodes(len(raw["nodes"]))
        check_depth(raw)
        problems: list[tuple[str, str, str]] = []
        unknown = sorted(set(raw) - {"name", "embedding", "nodes", "output"})
        if unknown:
            problems.append(("<architecture>", unknown[0], "unknown field; expected name, embedding, "
                                                           "nodes, output"))
        raw_nodes = raw.get("nodes")
        if not isinstance(raw_nodes, list) or not raw_nodes:
            problems.append(("<architecture>", "nodes", f"must be a non-empty list, got {shown(raw_nodes)}"))
            raw_nodes = []
        embedding = raw.get("embedding", {})
        if not isinstance(embedding, dict):
            problems.append(("embedding", "embedding", f"must be an object, got {shown(embedding)}"))
            embedding = {}
        nodes = []
        for i, item in enumerate(raw_nodes):
            node, node_problems = _parse_node(i, item)
            problems.extend(node_problems)
            if node is not None:
                nodes.append(node)
        output = raw.get("output", "")
        if not isinstance(output, str):
            problems.append(("<architecture>", "output", f"must be a node id, got {shown(output)}"))
            output = ""
        if problems:
            raise ArchitectureError(problems)
        return Architecture(nodes=tuple(nodes), embedding=dict(embedding), output=output,
                            name=str(raw.get("name", "")))

    @staticmethod
    def from_json(text: str) -> "Architecture":
        try:
            raw = json.loads(text)
        except json.JSONDecodeError as exc:
            raise ArchitectureError([("<architecture>", "", f"not valid JSON: {exc}")]) from None
        except RecursionError:  # deeper than the interpreter's recursion limit: far over the bound
            raise ArchitectureError([("<architecture>", "", f"nested more than {MAX_JSON_DEPTH} levels deep "
                                                            f"(MAX_JSON_DEPTH)")]) from None
        return Architecture.from_dict(raw)

    @staticmethod
    def load(path: Path) -> "Architecture":
        return Architecture.from_json(Path(path).read_text())


def _parse_node(index: int, item: Any) -> tuple[Node | None, list[tuple[str, str, str]]]:
    where = f"nodes[{index}]"
    if not isinstance(item, dict):
        return None, [(where, "", f"must be an object, got {shown(item)}")]
    node_id = item.get("id")
    name = node_id[:_SHOWN] if isinstance(node_id, str) and node_id else where
    problems = []
    if not isinstance(node_id, str) or not node_id:
        problems.append((where, "id", f"must be a non-empty string, got {shown(node_id)}"))
    unknown = sorted(set(item) - {"id", "block", "inputs", "params"})
    if unknown:
        problems.append((name, unknown[0], "unknown field; a node has id, block, inputs, params"))
    block = item.get("block")
    if not isinstance(block, str) or not block:
        problems.append((name, "block", f"must be a block name, got {shown(block)}"))
    inputs = item.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        problems.append((name, "inputs", f"must be a list of node ids, got {shown(inputs)}"))
    params = item.get("params", {})
    if not isinstance(params, dict):
        problems.append((name, "params", f"must be an object, got {shown(params)}"))
    if problems:
        return None, problems
    return Node(id=node_id, block=block, inputs=tuple(inputs), params=dict(params)), []


def prune_unreachable(arch: Architecture) -> Architecture:
    """`arch` without the nodes that do not feed its output (node order kept)."""
    inputs = {n.id: n.inputs for n in arch.nodes}
    seen: set[str] = set()
    stack = [arch.output_id]
    while stack:
        node = stack.pop()
        if node in seen or node not in inputs:
            continue
        seen.add(node)
        stack.extend(inputs[node])
    kept = tuple(n for n in arch.nodes if n.id in seen)
    return Architecture(kept, embedding=dict(arch.embedding), output=arch.output_id, name=arch.name)
