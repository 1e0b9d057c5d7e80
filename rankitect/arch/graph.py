"""Architecture as data, and its JSON form.

JSON: {"name": str, "embedding": {"dim": int, "pooling": "sum"|"mean"},
       "nodes": [{"id": str, "block": str, "inputs": [str, ...], "params": {...}}, ...],
       "output": str}
Inputs name earlier nodes or the two graph inputs: "dense" ([B, D], normalized dense columns)
and "sparse" ([B, F, E], the embedding lookup). `output` (default: the last node) must give
shape (1,): the logit.
"""

from __future__ import annotations

import json
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

from rankitect.errors import ArchitectureError

INPUT_DENSE = "dense"
INPUT_SPARSE = "sparse"
GRAPH_INPUTS = (INPUT_DENSE, INPUT_SPARSE)


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

    def node(self, node_id: str) -> Node:
        for n in self.nodes:
            if n.id == node_id:
                return n
        raise KeyError(node_id)

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
        problems: list[tuple[str, str, str]] = []
        unknown = sorted(set(raw) - {"name", "embedding", "nodes", "output"})
        if unknown:
            problems.append(("<architecture>", unknown[0], "unknown field; expected name, embedding, "
                                                           "nodes, output"))
        raw_nodes = raw.get("nodes")
        if not isinstance(raw_nodes, list) or not raw_nodes:
            problems.append(("<architecture>", "nodes", f"must be a non-empty list, got {raw_nodes!r}"))
            raw_nodes = []
        embedding = raw.get("embedding", {})
        if not isinstance(embedding, dict):
            problems.append(("embedding", "embedding", f"must be an object, got {embedding!r}"))
            embedding = {}
        nodes = []
        for i, item in enumerate(raw_nodes):
            node, node_problems = _parse_node(i, item)
            problems.extend(node_problems)
            if node is not None:
                nodes.append(node)
        output = raw.get("output", "")
        if not isinstance(output, str):
            problems.append(("<architecture>", "output", f"must be a node id, got {output!r}"))
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
        return Architecture.from_dict(raw)

    @staticmethod
    def load(path: Path) -> "Architecture":
        return Architecture.from_json(Path(path).read_text())


def _parse_node(index: int, item: Any) -> tuple[Node | None, list[tuple[str, str, str]]]:
    where = f"nodes[{index}]"
    if not isinstance(item, dict):
        return None, [(where, "", f"must be an object, got {item!r}")]
    node_id = item.get("id")
    name = node_id if isinstance(node_id, str) and node_id else where
    problems = []
    if not isinstance(node_id, str) or not node_id:
        problems.append((where, "id", f"must be a non-empty string, got {node_id!r}"))
    unknown = sorted(set(item) - {"id", "block", "inputs", "params"})
    if unknown:
        problems.append((name, unknown[0], "unknown field; a node has id, block, inputs, params"))
    block = item.get("block")
    if not isinstance(block, str) or not block:
        problems.append((name, "block", f"must be a block name, got {block!r}"))
    inputs = item.get("inputs")
    if not isinstance(inputs, list) or not all(isinstance(x, str) for x in inputs):
        problems.append((name, "inputs", f"must be a list of node ids, got {inputs!r}"))
    params = item.get("params", {})
    if not isinstance(params, dict):
        problems.append((name, "params", f"must be an object, got {params!r}"))
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
