"""Fixed baselines built from the registry: lr, dlrm, dcnv2, deepfm, autoint.

Each is a function of the schema (a dataset without dense columns gets no dense path), so the
names work wherever an architecture file is accepted.
"""

from __future__ import annotations

from collections.abc import Callable

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE, Architecture, Node
from rankitect.schema import Schema
from rankitect.space import get_baseline, register_baseline, resolve_architecture  # noqa: F401  (re-exported)


def _features(schema: Schema) -> list[str]:
    return ([INPUT_DENSE] if schema.num_dense else []) + [INPUT_SPARSE]


def _logit(node_id: str, source: str) -> Node:
    return Node(node_id, "fc", (source,), {"width": 1, "activation": "none"})


def lr(schema: Schema) -> Architecture:
    """Logistic regression: 1-dim embeddings (one weight per id) and dense weights, summed."""
    nodes = [Node("features", "concat", tuple(_features(schema)), {"mode": "flat"}),
             _logit("logit", "features")]
    return Architecture(tuple(nodes), embedding={"dim": 1}, name="lr")


def dlrm(schema: Schema, bottom: tuple[int, ...] = (64,), top: tuple[int, ...] = (128, 64)) -> Architecture:
    """DLRM: bottom MLP on dense -> one row next to the embeddings; pairwise dots; top MLP.

    `bottom`: the bottom MLP's hidden widths (its last layer has width E); `top`: the top MLP's
    hidden widths (then the logit). The defaults are the registered baseline; MLPerf's DLRM on
    Criteo is bottom (512, 256), top (1024, 1024, 512, 256) with E = 128.
    """
    e = schema.embedding_dim
    nodes: list[Node] = []
    rows_in, top_in = [INPUT_SPARSE], []
    if schema.num_dense:
        nodes.append(Node("bottom", "mlp", (INPUT_DENSE,), {"widths": [*bottom, e]}))
        rows_in, top_in = ["bottom", INPUT_SPARSE], ["bottom"]
    nodes += [
        Node("rows", "concat", tuple(rows_in), {"mode": "rows"}),
        Node("interaction", "dot", ("rows",)),
        Node("top_in", "concat", tuple(top_in + ["interaction"]), {"mode": "flat"}),
        Node("top", "mlp", ("top_in",), {"widths": [*top, 1], "last_activation": False}),
    ]
    return Architecture(tuple(nodes), name="dlrm")


def dcnv2(schema: Schema) -> Architecture:
    """DCN-v2 (stacked): full-rank cross layers over all features, then a deep MLP."""
    nodes = [
        Node("x0", "concat", tuple(_features(schema)), {"mode": "flat"}),
        Node("cross", "dcn", ("x0",), {"layers": 3, "rank": 0}),
        Node("deep", "mlp", ("cross",), {"widths": [128, 64]}),
        _logit("logit", "deep"),
    ]
    return Architecture(tuple(nodes), name="dcnv2")


def deepfm(schema: Schema) -> Architecture:
    """DeepFM: FM second-order term + linear term + deep MLP, summed into the logit."""
    nodes = [
        Node("features", "concat", tuple(_features(schema)), {"mode": "flat"}),
        Node("fm", "fm", (INPUT_SPARSE,), {"reduce": True}),
        _logit("linear", "features"),
        Node("deep", "mlp", ("features",), {"widths": [128, 64, 1], "last_activation": False}),
        Node("logit", "sum", ("fm", "linear", "deep")),
    ]
    return Architecture(tuple(nodes), name="deepfm")


def autoint(schema: Schema) -> Architecture:
    """AutoInt: dense projected to one row, two self-attention layers over all rows, linear logit."""
    e = schema.embedding_dim
    nodes: list[Node] = []
    rows_in = [INPUT_SPARSE]
    if schema.num_dense:
        nodes.append(Node("dense_row", "fc", (INPUT_DENSE,), {"width": e, "activation": "none"}))
        rows_in = ["dense_row", INPUT_SPARSE]
    nodes += [
        Node("rows", "concat", tuple(rows_in), {"mode": "rows"}),
        Node("attn1", "attention", ("rows",), {"heads": 2, "head_dim": 16}),
        Node("attn2", "attention", ("attn1",), {"heads": 2, "head_dim": 16}),
        _logit("logit", "attn2"),
    ]
    return Architecture(tuple(nodes), name="autoint")


BASELINES: dict[str, Callable[[Schema], Architecture]] = {
    "lr": lr, "dlrm": dlrm, "dcnv2": dcnv2, "deepfm": deepfm, "autoint": autoint}
for _name, _build in BASELINES.items():
    register_baseline(_name, _build)


def baseline(name: str, schema: Schema) -> Architecture:
    """The registered baseline `name` for `schema` (the one registry: rankitect.space)."""
    return get_baseline(name, schema)
