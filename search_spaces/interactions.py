"""The DistDNAS interaction space: a stack of interaction layers over a fixed-shape state.

The state is a dense vector h `[B, W]` and the sparse rows S `[B, F, E]`. Each layer picks one
module; dense-updating modules give a new h, sparse-updating ones a new S, `skip` keeps both.
The head reads `concat flat [h_L, S_L]` into one logit."""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE, Architecture
from rankitect.blocks import get_block
from rankitect.schema import Schema
from rankitect.space import Choice, SearchSpace, SpaceOptions, register_space
from search_spaces.common import (
    EMBEDDING_DIMS_RULE,
    GraphBuilder,
    check_embedding_dims,
    check_module_names,
    check_pooling,
    check_range,
    check_values,
    chosen_dims,
    dim_choices,
    embedding_entry,
    head_options,
    note_rule,
    require_sparse,
)
from search_spaces.interactions_cost import extreme_choices

MODULES = ("dot", "dcn", "efc", "fm", "attention", "mlp", "skip")
DENSE_MODULES = ("dot", "dcn", "fm", "mlp")  # give a new h (B, W)
SPARSE_MODULES = ("efc", "attention")  # give a new S (B, F, E)
_MAX_FC_WIDTH = int(get_block("fc").spec.param("width").high or 16_384)


# -- the space -----------------------------------------------------------------------------
@dataclass(frozen=True)
class InteractionsOptions(SpaceOptions):
    """layers: 1..12 interaction layers; widths: candidate state widths W; dcn_ranks: DCN
    ranks (0 = full); mlp_hidden: hidden widths of the mlp module; modules: the candidates of
    every layer (a subset of MODULES); pooling: of the embedding over a row's ids ("sum" or
    "mean"; only list columns differ); embedding_dims: table widths each sparse column may take
    (multiples of 4 up to E; choice "dim.<column>", a narrower column projected to E), not
    searched when empty."""

    layers: int = 3
    widths: tuple[int, ...] = (32, 64, 128)
    dcn_ranks: tuple[int, ...] = (0, 4, 16)
    mlp_hidden: tuple[int, ...] = (64, 256)
    modules: tuple[str, ...] = MODULES
    pooling: str = "sum"
    embedding_dims: tuple[int, ...] = ()

    def check(self) -> None:
        check_range("layers", self.layers, 1, 12)
        check_values("widths", self.widths, 1, _MAX_FC_WIDTH)
        check_values("dcn_ranks", self.dcn_ranks, 0, int(get_block("dcn").spec.param("rank").high or 1024))
        check_values("mlp_hidden", self.mlp_hidden, 1, _MAX_FC_WIDTH)
        check_module_names("modules", self.modules, MODULES)
        check_pooling(self.pooling)
        note_rule("embedding_dims", EMBEDDING_DIMS_RULE)  # checked against the schema's E by the space


@register_space
class InteractionsSpace(SearchSpace):
    """DistDNAS: `layers` interaction layers over the state (h: (B, W), S: (B, F, E)).

    Start: h0 = fc(W) of the dense input (of the flattened sparse input when the schema has no
    dense columns), S0 = the sparse input. Layer modules:
      dot       h' = fc(W)(dot(concat rows [fc(h -> E, none), S]))
      dcn       h' = fc(W)(dcn(concat flat [h, S], layers=1, rank))
      fm        h' = fc(W)(concat flat [h, fm(S, reduce=false)])
      mlp       h' = mlp(concat flat [h, S], widths=[hidden, W])
      efc       S' = efc(S, out_rows=F)
      attention S' = attention(S, heads, head_dim=E/heads)
      skip      h, S unchanged
    Head: fc(1, none)(concat flat [h_L, S_L]).

    Shape invariant (for mixed ops of differentiable search): for a fixed W, every candidate of
    a layer maps (h: (B, W), S: (B, F, E)) to a state of exactly the same shapes (a
    dense-updating module passes S through, a sparse-updating one passes h through), so the
    candidates' outputs can be summed with architecture weights. `layer_candidates()` lists
    each layer's module names. Choices: "width", then per layer i "l{i}.module" and, when that
    module uses one, "l{i}.dcn_rank", "l{i}.mlp_hidden" or "l{i}.heads".
    """

    name = "interactions"
    doc = "DistDNAS interaction layers (dot, dcn, efc, fm, attention, mlp, skip) over (h, S)."
    Options = InteractionsOptions
    options: InteractionsOptions

    def __init__(self, schema: Schema, options: InteractionsOptions | None = None) -> None:
        super().__init__(schema, options)
        require_sparse(schema, self.name)
        self._e = schema.embedding_dim
        self._rows = schema.num_sparse
        self._heads = head_options(self._e)
        self._modules = self._usable_modules()
        self._dims = check_embedding_dims(self.options.embedding_dims, self._e)
        self._choices = self._build_choices()

    def _usable_modules(self) -> tuple[str, ...]:
        """The configured modules minus those this schema cannot shape (huge E or F)."""
        max_rows = int(get_block("efc").spec.param("out_rows").high or 1024)
        dropped = {"attention"} if not self._heads else set()
        dropped |= {"efc"} if self._rows > max_rows else set()
        usable = tuple(m for m in self.options.modules if m not in dropped)
        return usable or ("skip",)

    def layer_candidates(self) -> list[tuple[str, ...]]:
        """Per layer, the module names a mixed op chooses among (the same for every layer)."""
        return [self._modules for _ in range(self.options.layers)]

    def choices(self) -> Sequence[Choice]:
        return self._choices

    @property
    def heads(self) -> tuple[int, ...]:
        """The attention head counts a layer may take (empty: no attention for this E)."""
        return self._heads

    # -- the sandwich extremes -----------------------------------------------------------------
    def largest(self) -> dict[str, Any]:
        """The path with the most FLOPs (registry numbers): the largest width and, per layer,
        the (module, size) that costs most."""
        return extreme_choices(self, largest=True)

    def smallest(self) -> dict[str, Any]:
        """The path with the fewest FLOPs: the smallest width and, per layer, the cheapest
        (module, size): skip when it is a candidate."""
        return extreme_choices(self, largest=False)

    # -- baselines as members -----------------------------------------------------------------
    def baseline_choices(self, name: str) -> dict[str, Any] | None:
        """Nearest members of the baselines (sizes rounded to the options, unused layers skip):
        dlrm, a dot layer then an mlp; dcnv2, full-rank dcn layers then an mlp; deepfm, an fm
        layer then an mlp; autoint, two attention layers; lr, every layer skip at the smallest
        width. None when a module it needs is not a candidate here."""
        n = self.options.layers
        layers = {"dlrm": ["dot", "mlp"], "dcnv2": ["dcn"] * max(1, min(3, n - 1)) + ["mlp"],
                  "deepfm": ["fm", "mlp"], "autoint": ["attention"] * 2, "lr": []}.get(name)
        if layers is None or any(m not in self._modules for m in layers[:n]) or \
                (len(layers) < n and "skip" not in self._modules):
            return None
        nearest = lambda options, target: min(options, key=lambda v: (abs(v - target), v))  # noqa: E731
        c: dict[str, Any] = {"width": min(self.options.widths) if name == "lr" else nearest(self.options.widths, 64)}
        c |= {choice.name: max(choice.options) for choice in dim_choices(self.schema, self._dims)}
        for i in range(n):
            module = layers[i] if i < len(layers) else "skip"
            c[f"l{i}.module"] = module
            if module == "dcn":
                c[f"l{i}.dcn_rank"] = nearest(self.options.dcn_ranks, 0)
            elif module == "mlp":
                c[f"l{i}.mlp_hidden"] = nearest(self.options.mlp_hidden, 128)
            elif module == "attention":
                c[f"l{i}.heads"] = nearest(self._heads, 2)
        return self.check_choices(c)

    def _build_choices(self) -> tuple[Choice, ...]:
        out = [Choice("width", tuple(self.options.widths)), *dim_choices(self.schema, self._dims)]
        for i in range(self.options.layers):
            out += self._layer_choices(i)
        return tuple(out)

    def _layer_choices(self, i: int) -> list[Choice]:
        module = f"l{i}.module"

        def uses(name: str) -> Callable[[Mapping[str, Any]], bool]:
            return lambda decided: decided.get(module) == name

        return [Choice(module, self._modules),
                Choice(f"l{i}.dcn_rank", tuple(self.options.dcn_ranks), uses("dcn")),
                Choice(f"l{i}.mlp_hidden", tuple(self.options.mlp_hidden), uses("mlp")),
                Choice(f"l{i}.heads", self._heads or (1,), uses("attention"))]

    def decode(self, choices: Mapping[str, Any]) -> Architecture:
        """Architecture of `choices`; ConfigError naming a missing or invalid choice."""
        c = self.check_choices(choices)
        width = c["width"]
        g = GraphBuilder()
        first = INPUT_DENSE if self.schema.num_dense else INPUT_SPARSE
        h, s = g.add("h0", "fc", [first], width=width), INPUT_SPARSE
        for i in range(self.options.layers):
            h, s = self.layer(g, i, c, h, s, width)
        g.add("head_in", "concat", [h, s], mode="flat")
        g.add("logit", "fc", ["head_in"], width=1, activation="none")
        dims = chosen_dims(self.schema, c, self._e)
        return g.architecture("logit", self.name, embedding=embedding_entry(self.options.pooling, dims=dims))

    def layer(self, g: GraphBuilder, i: int, c: Mapping[str, Any], h: str, s: str,
              width: int) -> tuple[str, str]:
        """Add layer i's nodes; returns the new (h: (B, W), S: (B, F, E)) node ids."""
        module = c[f"l{i}.module"]
        if module == "skip":
            return h, s
        if module in SPARSE_MODULES:
            return h, self._sparse_module(g, i, c, s)
        return self._dense_module(g, i, c, h, s, width), s

    def _sparse_module(self, g: GraphBuilder, i: int, c: Mapping[str, Any], s: str) -> str:
        """S (B, F, E) -> S' (B, F, E)."""
        if c[f"l{i}.module"] == "efc":
            return g.add(f"l{i}_efc", "efc", [s], out_rows=self._rows)
        heads = c[f"l{i}.heads"]
        return g.add(f"l{i}_attention", "attention", [s], heads=heads, head_dim=self._e // heads)

    def _dense_module(self, g: GraphBuilder, i: int, c: Mapping[str, Any], h: str, s: str,
                      width: int) -> str:
        """(h (B, W), S (B, F, E)) -> h' (B, W)."""
        module, p = c[f"l{i}.module"], f"l{i}_"
        if module == "mlp":
            x = g.add(p + "x", "concat", [h, s], mode="flat")
            return g.add(p + "mlp", "mlp", [x], widths=[c[f"l{i}.mlp_hidden"], width])
        if module == "dot":
            row = g.add(p + "row", "fc", [h], width=self._e, activation="none")  # (B, E)
            rows = g.add(p + "rows", "concat", [row, s], mode="rows")  # (B, 1 + F, E)
            mixed = g.add(p + "dot", "dot", [rows])  # (B, F(F+1)/2)
        elif module == "dcn":
            x = g.add(p + "x", "concat", [h, s], mode="flat")  # (B, W + F*E)
            mixed = g.add(p + "dcn", "dcn", [x], layers=1, rank=c[f"l{i}.dcn_rank"])
        else:  # fm
            fm = g.add(p + "fm", "fm", [s], reduce=False)  # (B, E)
            mixed = g.add(p + "x", "concat", [h, fm], mode="flat")  # (B, W + E)
        return g.add(p + "h", "fc", [mixed], width=width)
