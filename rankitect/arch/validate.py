"""Check an architecture against the registry and a schema; infer every node's shape and cost.

Every problem found is reported at once, each naming the node and the field.

Time and memory are linear in nodes plus edges. An architecture of more than MAX_NODES nodes
(rankitect.arch.graph: 5,000) is refused before any other check.
"""

from __future__ import annotations

import re
from dataclasses import dataclass
from typing import Any, cast

from rankitect.arch.graph import (
    GRAPH_INPUTS,
    INPUT_DENSE,
    INPUT_SPARSE,
    MAX_NODES,
    Architecture,
    shown,
    too_many_nodes,
)
from rankitect.blocks import ShapeError, get_block
from rankitect.blocks.embedding import EMBEDDING, Embedding
from rankitect.blocks.embedding_dims import check_dims
from rankitect.blocks.spec import Shape
from rankitect.blocks.table_rows import check_rows
from rankitect.errors import ArchitectureError
from rankitect.schema import Schema

_ID = re.compile(r"^[A-Za-z][A-Za-z0-9_\-]{0,63}$")


@dataclass(frozen=True)
class NodeInfo:
    id: str
    block: str
    inputs: tuple[str, ...]
    params: dict[str, Any]  # resolved: defaults filled in, values checked
    input_shapes: tuple[Shape, ...]
    output_shape: Shape
    flops: int
    num_params: int


@dataclass(frozen=True)
class ValidatedArchitecture:
    """An architecture known to build for `schema`: nodes in topological order with shapes."""

    arch: Architecture
    schema: Schema
    embedding_params: dict[str, Any]
    nodes: tuple[NodeInfo, ...]
    output: str
    uses_dense: bool
    uses_sparse: bool

    @property
    def embedding_dim(self) -> int:
        return self.embedding_params["dim"] or self.schema.embedding_dim


def validate(arch: Architecture, schema: Schema) -> ValidatedArchitecture:
    """Shapes and costs of every node; ArchitectureError listing every problem otherwise (at
    once, with only that problem, for more than MAX_NODES nodes)."""
    if len(arch.nodes) > MAX_NODES:
        raise too_many_nodes(len(arch.nodes))
    problems: list[tuple[str, str, str]] = []
    emb_block = get_block(EMBEDDING)
    emb_params, emb_problems = emb_block.spec.resolve(arch.embedding)
    problems += [("embedding", f"embedding.{f.removeprefix('params.')}", m) for f, m in emb_problems]
    problems += [("embedding", "embedding.rows", m) for m in check_rows(emb_params.get("rows"), schema)]
    emb_dim = emb_params.get("dim") or schema.embedding_dim
    if "dims" in emb_params:
        problems += [("embedding", "embedding.dims", m) for m in check_dims(emb_params["dims"], schema, emb_dim)]

    resolved, problems_nodes = _check_nodes(arch)
    problems += problems_nodes
    order, cycle_problems = _topological_order(arch, resolved)
    problems += cycle_problems

    problems += [("embedding", "embedding.dense_buckets", m) for m in _bucket_problems(emb_params, schema)]
    sparse_rows = emb_block.output_shape_for(schema, emb_params)[0] if not emb_problems else schema.num_sparse
    shapes: dict[str, Shape] = {INPUT_DENSE: (schema.num_dense,), INPUT_SPARSE: (sparse_rows, emb_dim)}
    infos: dict[str, NodeInfo] = {}
    for node_id in order:
        node = arch.node(node_id)
        block, params = resolved[node_id]
        if any(i not in shapes for i in node.inputs):
            continue  # an input already failed; its problem is reported
        for name, empty in ((INPUT_DENSE, schema.num_dense == 0), (INPUT_SPARSE, sparse_rows == 0)):
            if name in node.inputs and empty:
                problems.append((node_id, "inputs", f"input {name!r} has no columns in this schema"))
        in_shapes = [shapes[i] for i in node.inputs]
        bad_rank = [i for i, s in enumerate(in_shapes) if len(s) not in block.spec.input_ranks]
        if bad_rank:
            problems.append((node_id, "inputs", f"block {node.block!r} takes inputs of rank "
                             f"{list(block.spec.input_ranks)} (1 = [B, D], 2 = [B, F, E]); input "
                             f"{node.inputs[bad_rank[0]]!r} has per-example shape {list(in_shapes[bad_rank[0]])}"))
            continue
        try:
            out = block.output_shape(in_shapes, params)
            infos[node_id] = NodeInfo(node_id, node.block, node.inputs, params, tuple(in_shapes), out,
                                      block.flops(in_shapes, params), block.num_params(in_shapes, params))
            shapes[node_id] = out
        except ShapeError as exc:
            problems.append((node_id, exc.field, str(exc)))

    output = arch.output_id
    if output not in {n.id for n in arch.nodes}:
        problems.append(("<architecture>", "output", f"names no node: {output!r}"))
    elif output in infos and infos[output].output_shape != (1,):
        problems.append((output, "output", f"the output node must give one logit, per-example shape "
                         f"[1]; it gives {list(infos[output].output_shape)}"))
    elif not problems:
        for node_id in _unreachable(arch, output):
            problems.append((node_id, "id", f"does not feed the output node {output!r}"))
    if problems:
        raise ArchitectureError(problems)
    used = {i for n in arch.nodes for i in n.inputs}
    return ValidatedArchitecture(arch=arch, schema=schema, embedding_params=emb_params,
                                 nodes=tuple(infos[i] for i in order), output=output,
                                 uses_dense=INPUT_DENSE in used, uses_sparse=INPUT_SPARSE in used)


def _bucket_problems(emb_params: dict[str, Any], schema: Schema) -> list[str]:
    """Why `embedding.dense_buckets` cannot hold for `schema`, as messages."""
    if not emb_params.get("dense_buckets"):
        return []
    if not schema.num_dense:
        return ["true, but the schema has no dense column"]
    missing = [c.name for c in schema.dense if not c.buckets]
    return [f"true, but dense column(s) {missing} have no bucket boundaries in schema.json "
            f"(a dataset imported before they were recorded: import it again)"] if missing else []


def embedding_block() -> Embedding:
    return cast(Embedding, get_block(EMBEDDING))


def _check_nodes(arch: Architecture) -> tuple[dict[str, tuple[Any, dict[str, Any]]], list]:
    problems: list[tuple[str, str, str]] = []
    resolved: dict[str, tuple[Any, dict[str, Any]]] = {}
    ids = {n.id for n in arch.nodes}
    seen: set[str] = set()
    for index, node in enumerate(arch.nodes):
        if node.id in GRAPH_INPUTS:
            problems.append((node.id, "id", f"{node.id!r} is reserved for a graph input"))
            continue
        if not _ID.match(node.id):
            problems.append((node.id, "id", "must start with a letter and hold only letters, digits, "
                                            "'_' or '-' (at most 64)"))
            continue
        if node.id in seen:
            problems.append((node.id, "id", f"appears more than once (nodes[{index}])"))
            continue
        seen.add(node.id)
        try:
            block = get_block(node.block)
        except ValueError as exc:
            problems.append((node.id, "block", str(exc)))
            continue
        if node.block == EMBEDDING:
            problems.append((node.id, "block", str(embedding_block()._not_a_node())))
            continue
        params, param_problems = block.spec.resolve(node.params)
        problems += [(node.id, f, m) for f, m in param_problems]
        spec = block.spec
        inputs_fit = spec.min_inputs <= len(node.inputs) <= spec.max_inputs
        if not inputs_fit:
            problems.append((node.id, "inputs", f"block {node.block!r} takes {spec.min_inputs}.."
                             f"{spec.max_inputs} inputs, got {len(node.inputs)}"))
        for ref in node.inputs:
            if ref not in GRAPH_INPUTS and ref not in ids:
                problems.append((node.id, "inputs", f"{shown(ref)} is neither a node nor a graph input "
                                                    f"{list(GRAPH_INPUTS)}"))
        if not param_problems and inputs_fit:  # a block is never asked about inputs it does not take
            resolved[node.id] = (block, params)
    return resolved, problems


def _topological_order(arch: Architecture, resolved: dict) -> tuple[list[str], list]:
    """Kahn's order over the nodes in rounds: each round takes, in node order, every node whose
    inputs the earlier rounds gave, i.e. the nodes sorted by (level, position) where a node's
    level is one more than its deepest input's. A cycle is reported with its path.

    Linear in nodes plus edges: Kahn's queue sets the levels, then the nodes go into one bucket
    per level in node order. A repeated id counts once, as its first node.
    """
    ids = list(dict.fromkeys(n.id for n in arch.nodes))
    deps = {i: [d for d in arch.node(i).inputs if d in arch.nodes_by_id] for i in ids}
    waiting = {i: len(deps[i]) for i in ids}
    users: dict[str, list[str]] = {i: [] for i in ids}
    for i in ids:
        for d in deps[i]:
            users[d].append(i)
    level = dict.fromkeys(ids, 0)  # one more than the deepest input seen so far
    queue = [i for i in ids if not waiting[i]]
    for current in queue:  # the queue grows while it is read
        for user in users[current]:
            level[user] = max(level[user], level[current] + 1)
            waiting[user] -= 1
            if not waiting[user]:
                queue.append(user)
    rounds: list[list[str]] = [[] for _ in range(max((level[i] for i in queue), default=-1) + 1)]
    placed = set(queue)
    for i in ids:
        if i in placed:
            rounds[level[i]].append(i)
    order = [i for r in rounds for i in r if i in resolved]
    if len(placed) == len(ids):
        return order, []
    cycle = _find_cycle([i for i in ids if i not in placed], deps)
    return order, [(cycle[0], "inputs", "cycle: " + " -> ".join(cycle))]


def _find_cycle(nodes: list[str], deps: dict[str, list[str]]) -> list[str]:
    """A cycle among `nodes` (each has an input among them), from the first one's inputs on."""
    members = set(nodes)
    path: list[str] = []
    on_path: dict[str, int] = {}
    current = nodes[0]
    while current not in on_path:
        on_path[current] = len(path)
        path.append(current)
        current = next(d for d in deps[current] if d in members)
    return path[on_path[current]:] + [current]


def _unreachable(arch: Architecture, output: str) -> list[str]:
    inputs = {n.id: n.inputs for n in arch.nodes}
    seen, stack = set(), [output]
    while stack:
        node = stack.pop()
        if node in seen or node not in inputs:
            continue
        seen.add(node)
        stack.extend(inputs[node])
    return [n.id for n in arch.nodes if n.id not in seen]
