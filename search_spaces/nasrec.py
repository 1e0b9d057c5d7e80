"""NASRec-style block-wise space (Zhang et al. 2022): N choice blocks, each with a dense and a
sparse op, wired to earlier blocks by searched input choices.

Each block i reads up to `max_inputs` dense sources (2-D) and sparse sources (3-D, rows joined
by concat(rows)) among the graph inputs and the outputs of blocks 0..i-1, and gives a dense
output (B, width) and a sparse output (B, F', E). The head reads the last block's dense output
(and the optional global FM term) into one logit; blocks that feed nothing are pruned.
"""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE, Architecture
from rankitect.blocks import get_block
from rankitect.errors import ConfigError
from rankitect.schema import Schema
from rankitect.space import Choice, Choices, SearchSpace, SpaceOptions, register_space
from search_spaces.common import (
    EMBEDDING_DIMS_RULE,
    GraphBuilder,
    check_embedding_dims,
    check_pooling,
    check_range,
    check_values,
    chosen_dims,
    dim_choices,
    embedding_entry,
    head_options,
    note_rule,
    require_sparse,
    scaled_rows,
)

DENSE_OPS = ("fc", "dot", "gating", "sum")
SPARSE_OPS = ("efc", "attention")
NONE = "none"  # an unused extra input
DENSE_BUCKETS = ("search", "on", "off")
STEM = "stem"  # the dense source when the schema has no dense columns: fc(flat sparse)
_MAX_FC_WIDTH = int(get_block("fc").spec.param("width").high or 16_384)
_MAX_ROWS = int(get_block("efc").spec.param("out_rows").high or 1024)


@dataclass(frozen=True)
class NasRecOptions(SpaceOptions):
    """blocks: 1..12 choice blocks; dense_widths: widths of the dense ops; efc_rows: output
    row counts of efc; max_inputs: 1..4 dense (and sparse) inputs per block; stem_width: width
    of fc(flattened sparse), the dense source of a schema without dense columns; pooling: of the
    embedding over a row's ids ("sum" or "mean"; only list columns differ); dense_buckets:
    whether the dense columns' quantile buckets join the sparse input (embedding.dense_buckets):
    "search" makes it a choice, "on" / "off" fix it ("search" and "on" need a schema whose
    dense columns have buckets; "search" is "off" for one that has none); row_scales: each
    column's table rows as a fraction of its default (rankitect.blocks.table_rows), searched when
    there are several (choice "table_rows"; costed in parameters: budget.max_params, objective
    params); embedding_dims: table widths each sparse column may take (multiples of 4 up to E;
    choice "dim.<column>", a narrower column projected to E, embedding.dims), not searched when
    empty."""

    blocks: int = 4
    dense_widths: tuple[int, ...] = (16, 32, 64, 128)
    efc_rows: tuple[int, ...] = (4, 8, 16)
    max_inputs: int = 2
    stem_width: int = 64
    pooling: str = "sum"
    dense_buckets: str = "search"
    row_scales: tuple[float, ...] = (1.0,)
    embedding_dims: tuple[int, ...] = ()

    def check(self) -> None:
        check_range("blocks", self.blocks, 1, 12)
        check_values("dense_widths", self.dense_widths, 1, _MAX_FC_WIDTH)
        check_values("efc_rows", self.efc_rows, 1, _MAX_ROWS)
        check_range("max_inputs", self.max_inputs, 1, 4)
        check_range("stem_width", self.stem_width, 1, _MAX_FC_WIDTH)
        check_pooling(self.pooling)
        note_rule("embedding_dims", EMBEDDING_DIMS_RULE)  # checked against the schema's E by the space
        note_rule("row_scales", "distinct fractions in (0, 1], at least one")
        note_rule("dense_buckets", f"one of {', '.join(DENSE_BUCKETS)}")
        if not self.row_scales or any(not 0 < s <= 1 for s in self.row_scales) \
                or len(set(self.row_scales)) != len(self.row_scales):
            raise ConfigError(f"space.row_scales: must be distinct fractions in (0, 1], got {list(self.row_scales)}")
        if self.dense_buckets not in DENSE_BUCKETS:
            raise ConfigError(f"space.dense_buckets: must be one of {DENSE_BUCKETS}, got {self.dense_buckets!r}")


@register_space
class NasRecSpace(SearchSpace):
    """Block-wise NASRec space over dense (B, D) and sparse (B, F, E) inputs.

    Choices, in order: "fm" (bool: add fm(sparse) (B, 1) to the head), "dense_buckets" (bool,
    with the option "search": the dense columns' buckets as F more sparse rows), "table_rows"
    (with several row_scales: the tables' rows as that fraction of their default), then per block i:
      b{i}.dense_op    fc | dot | gating | sum; output (B, b{i}.width)
      b{i}.width       from `dense_widths`
      b{i}.merge       bool, not for dot: the dense op also takes the flattened sparse input
      b{i}.sparse_op   efc | attention (attention only when E fits one of its head counts)
      b{i}.efc_rows    from `efc_rows`, efc only: output (B, efc_rows, E)
      b{i}.heads       attention only: heads with heads * head_dim = E; output (B, F_in, E)
      b{i}.dense_in{k}, b{i}.sparse_in{k}   k < max_inputs: a source label; k > 0 may be "none"
    Dense source labels: "dense" (or "stem" = fc(flattened sparse, stem_width) when the schema
    has no dense columns) and "b{j}" for j < i; sparse labels: "sparse" and "b{j}".
    Dense ops over x = concat flat(dense inputs [+ sparse input if merge]):
      fc: fc(width)(x); gating: gating(fc(width, none)(x)); sum: sum of fc(width, none) of each
      input; dot: fc(width)(dot(concat rows [fc(x -> E, none), sparse input])).
    """

    name = "nasrec"
    doc = "NASRec block-wise space: per block a dense op (fc, dot, gating, sum), a sparse op " \
          "(efc, attention), searched inputs from earlier blocks, optional FM term."
    Options = NasRecOptions
    options: NasRecOptions

    def __init__(self, schema: Schema, options: NasRecOptions | None = None) -> None:
        super().__init__(schema, options)
        require_sparse(schema, self.name)
        self._e = schema.embedding_dim
        self._dense_source = INPUT_DENSE if schema.num_dense else STEM
        self._heads = head_options(self._e)
        self._sparse_ops = SPARSE_OPS if self._heads else ("efc",)
        self._buckets = self._bucket_values(schema)
        self._dims = check_embedding_dims(self.options.embedding_dims, self._e)
        self._choices = self._build_choices()

    def _bucket_values(self, schema: Schema) -> tuple[bool, ...]:
        """The values `embedding.dense_buckets` may take; ConfigError when "on" cannot hold."""
        has = bool(schema.dense) and all(c.buckets for c in schema.dense)
        if self.options.dense_buckets == "on" and not has:
            raise ConfigError("space.dense_buckets: 'on' needs dense columns with bucket boundaries in "
                              "schema.json (import the data again)")
        if self.options.dense_buckets == "search" and has:
            return (False, True)
        return (self.options.dense_buckets == "on",)

    def choices(self) -> Sequence[Choice]:
        return self._choices

    @property
    def heads(self) -> tuple[int, ...]:
        """The attention head counts a sparse op may take (empty: no attention for this E)."""
        return self._heads

    @property
    def bucket_values(self) -> tuple[bool, ...]:
        """The values `embedding.dense_buckets` may take in this space."""
        return self._buckets

    # -- choices -----------------------------------------------------------------------------
    def _build_choices(self) -> tuple[Choice, ...]:
        out = [Choice("fm", (False, True))]
        if len(self._buckets) > 1:
            out.append(Choice("dense_buckets", self._buckets))
        if len(self.options.row_scales) > 1:
            out.append(Choice("table_rows", tuple(self.options.row_scales)))
        out += dim_choices(self.schema, self._dims)
        for i in range(self.options.blocks):
            out += self._op_choices(i) + self._input_choices(i)
        return tuple(out)

    def _op_choices(self, i: int) -> list[Choice]:
        dense_op, sparse_op = f"b{i}.dense_op", f"b{i}.sparse_op"
        return [
            Choice(dense_op, DENSE_OPS),
            Choice(f"b{i}.width", tuple(self.options.dense_widths)),
            Choice(f"b{i}.merge", (False, True), lambda d: d.get(dense_op) != "dot"),
            Choice(sparse_op, self._sparse_ops),
            Choice(f"b{i}.efc_rows", tuple(self.options.efc_rows), lambda d: d.get(sparse_op) == "efc"),
            Choice(f"b{i}.heads", self._heads or (1,), lambda d: d.get(sparse_op) == "attention"),
        ]

    def _input_choices(self, i: int) -> list[Choice]:
        earlier = tuple(f"b{j}" for j in range(i))
        out = []
        for kind, first in (("dense", self._dense_source), ("sparse", INPUT_SPARSE)):
            sources = (first, *earlier)
            out.append(Choice(f"b{i}.{kind}_in0", sources))
            out += [Choice(f"b{i}.{kind}_in{k}", (NONE, *sources)) for k in range(1, self.options.max_inputs)]
        return out

    # -- baselines as members -----------------------------------------------------------------
    def baseline_choices(self, name: str) -> Choices | None:
        """Nearest members of the baselines (widths rounded to the nearest option, extra blocks
        as fc layers of the deep part): dlrm, a bottom fc, dot over it and the embeddings, then
        fc layers; deepfm, the fm term plus fc layers over dense and flattened embeddings;
        autoint, two attention layers over the embeddings, flattened into the last fc. None for lr
        and dcnv2 (no linear-only path, no cross layer here)."""
        n = self.options.blocks
        if name == "dlrm" and n >= 2:
            ops = ["fc"] * (n - 2) + ["dot", "fc"] if n >= 3 else ["fc", "dot"]
            widths = [64] * (n - 2) + [128, 64] if n >= 3 else [64, 128]
            return self._chain(False, ops, widths, merge=[False] * n, attention=0)
        if name == "deepfm":
            return self._chain(True, ["fc"] * n, [128] + [64] * (n - 1), merge=[True] + [False] * (n - 1),
                               attention=0)
        if name == "autoint" and "attention" in self._sparse_ops and n >= 2:
            return self._chain(False, ["fc"] * n, [16] * n, merge=[False] * (n - 1) + [True], attention=min(2, n - 1))
        return None

    def _chain(self, fm: bool, ops: list[str], widths: list[int], merge: list[bool], attention: int) -> Choices:
        """Blocks in a chain: block i reads block i-1's dense output (block 0 the dense input)
        and, when `merge`, its sparse input; the first `attention` blocks' sparse ops are
        attention layers chained over the embeddings, which every later block reads as its sparse
        input; the other sparse ops are efc (unread, pruned)."""
        c: dict[str, Any] = {"fm": fm}
        if len(self._buckets) > 1:
            c["dense_buckets"] = False  # the published models feed numbers only as numbers
        if len(self.options.row_scales) > 1:
            c["table_rows"] = max(self.options.row_scales)
        c |= {choice.name: max(choice.options) for choice in dim_choices(self.schema, self._dims)}
        heads = min(self._heads or (1,), key=lambda h: abs(h - 2))
        for i, (op, width) in enumerate(zip(ops, widths)):
            c[f"b{i}.dense_op"] = op
            c[f"b{i}.width"] = min(self.options.dense_widths, key=lambda w: (abs(w - width), w))
            if op != "dot":
                c[f"b{i}.merge"] = merge[i]
            if i < attention:
                c[f"b{i}.sparse_op"], c[f"b{i}.heads"] = "attention", heads
            else:
                c[f"b{i}.sparse_op"], c[f"b{i}.efc_rows"] = "efc", self.options.efc_rows[0]
            c[f"b{i}.dense_in0"] = self._dense_source if i == 0 else f"b{i - 1}"
            c[f"b{i}.sparse_in0"] = f"b{min(i, attention) - 1}" if i and attention else INPUT_SPARSE
            for k in range(1, self.options.max_inputs):
                c[f"b{i}.dense_in{k}"] = c[f"b{i}.sparse_in{k}"] = NONE
        return self.check_choices(c)

    # -- decode ------------------------------------------------------------------------------
    def decode(self, choices: Mapping[str, Any]) -> Architecture:
        """Architecture of `choices`; ConfigError naming a missing or invalid choice."""
        c = self.check_choices(choices)
        g = GraphBuilder()
        dense_out = {INPUT_DENSE: INPUT_DENSE, STEM: STEM}
        sparse_out = {INPUT_SPARSE: INPUT_SPARSE}
        if self._dense_source == STEM:
            g.add(STEM, "fc", [INPUT_SPARSE], width=self.options.stem_width)
        for i in range(self.options.blocks):
            dense_in = [dense_out[s] for s in self._picked(c, i, "dense")]
            sparse_in = self._sparse_input(g, i, [sparse_out[s] for s in self._picked(c, i, "sparse")])
            dense_out[f"b{i}"] = self._dense_op(g, i, c, dense_in, sparse_in)
            sparse_out[f"b{i}"] = self._sparse_op(g, i, c, sparse_in)
        head = [dense_out[f"b{self.options.blocks - 1}"]]
        if c["fm"]:
            head.append(g.add("fm", "fm", [INPUT_SPARSE], reduce=True))
        g.add("logit", "fc", [g.flat("head_in", head)], width=1, activation="none")
        buckets = c.get("dense_buckets", self._buckets[0])
        entry = embedding_entry(self.options.pooling, buckets, chosen_dims(self.schema, c, self._e))
        scale = c.get("table_rows", self.options.row_scales[0])
        if scale != 1.0:
            entry["rows"] = scaled_rows(self.schema, scale)
        return g.architecture("logit", self.name, embedding=entry)

    def _picked(self, c: Mapping[str, Any], i: int, kind: str) -> list[str]:
        """Block i's distinct source labels of `kind` ("dense" / "sparse"), "none" dropped."""
        picked = [c[f"b{i}.{kind}_in{k}"] for k in range(self.options.max_inputs)]
        return list(dict.fromkeys(p for p in picked if p != NONE))

    @staticmethod
    def _sparse_input(g: GraphBuilder, i: int, sources: list[str]) -> str:
        """One source as is; several (B, F_k, E) joined into (B, sum F_k, E)."""
        return sources[0] if len(sources) == 1 else g.add(f"b{i}_sin", "concat", sources, mode="rows")

    def _dense_op(self, g: GraphBuilder, i: int, c: Mapping[str, Any], dense_in: list[str],
                  sparse_in: str) -> str:
        """Block i's dense output node (B, width)."""
        op, width, p = c[f"b{i}.dense_op"], c[f"b{i}.width"], f"b{i}_"
        inputs = dense_in + ([sparse_in] if c.get(f"b{i}.merge") else [])
        if op == "sum":
            projected = [g.add(f"{p}proj{k}", "fc", [x], width=width, activation="none")
                         for k, x in enumerate(inputs)]
            return projected[0] if len(projected) == 1 else g.add(p + "dense", "sum", projected)
        x = g.flat(p + "din", inputs)
        if op == "fc":
            return g.add(p + "dense", "fc", [x], width=width)
        if op == "gating":
            return g.add(p + "dense", "gating", [g.add(p + "proj", "fc", [x], width=width, activation="none")])
        row = g.add(p + "row", "fc", [x], width=self._e, activation="none")  # dot
        rows = g.add(p + "rows", "concat", [row, sparse_in], mode="rows")
        return g.add(p + "dense", "fc", [g.add(p + "dot", "dot", [rows])], width=width)

    def _sparse_op(self, g: GraphBuilder, i: int, c: Mapping[str, Any], sparse_in: str) -> str:
        """Block i's sparse output node (B, F', E)."""
        if c[f"b{i}.sparse_op"] == "efc":
            return g.add(f"b{i}_sparse", "efc", [sparse_in], out_rows=c[f"b{i}.efc_rows"])
        heads = c[f"b{i}.heads"]
        return g.add(f"b{i}_sparse", "attention", [sparse_in], heads=heads, head_dim=self._e // heads)
