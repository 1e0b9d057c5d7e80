"""The two supernets of the interactions space (one-shot and DistDNAS differentiable search).

Both hold one set of weights at the largest sizes of an `InteractionsSpace`:
  embedding   the schema's tables (EmbeddingModule, the space's pooling, E = schema dim)
  h0          Linear(D or F*E -> Wmax) + ReLU, Wmax = max(widths)
  per layer   one instance of every candidate module at its largest size:
              dot  row Linear(Wmax -> E), h Linear(F(F+1)/2 -> Wmax)
              dcn  full Linear(Dx -> Dx) (rank 0), u Linear(Dx -> Rmax), v Linear(Rmax -> Dx),
                   h Linear(Dx -> Wmax), Dx = Wmax + F*E
              fm   h Linear(Wmax + E -> Wmax)
              mlp  hidden Linear(Dx -> Hmax), out Linear(Hmax -> Wmax)
              efc  linear Linear(F -> F)
              attention query / key / value / residual Linear(E -> E) (any heads: heads*d = E)
  head        Linear(Wmax + F*E -> 1)

A width W keeps the first W units of the state h; an input that is `concat flat [h, tail]`
keeps the weight columns [0:W] and [Wmax:]. A dcn rank r keeps the first r rows of u (and
columns of v); an mlp hidden size keeps the first units of `hidden`.

`InteractionsSupernet` runs one path (the sub-architecture of a choices mapping) on those
slices and hands them out as a standalone model's state_dict (`inherit`).
`InteractionsMixedOp` runs every candidate at the largest sizes and mixes them with
(Gumbel-)softmax probabilities of its architecture logits; widths, dcn ranks and mlp hidden
sizes are mixed by soft masks on the units (FBNetV2), head counts by mixing the outputs.
With `normalize`, each dense candidate's new h is divided by its RMS over the units of each row
before mixing (the role of DARTS's affine-free batch norm after every op), so that the logits'
gradients do not follow the size of a candidate's output. In bench_distdnas, without it every
day's first layer chose dcn (whose cross adds its input back, x * (W x + b) + x) over dot, the
better module on the full data.
"""

from __future__ import annotations

from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.blocks.embedding import EmbeddingModule
from rankitect.cost import cost_of
from rankitect.dense_prep import DensePrep
from rankitect.supernet import MixedOpSupernet, WeightSharingSupernet
from search_spaces.interactions import DENSE_MODULES, SPARSE_MODULES

if TYPE_CHECKING:
    from search_spaces.interactions import InteractionsSpace

SIZE_CHOICE = {"dcn": "dcn_rank", "mlp": "mlp_hidden", "attention": "heads"}  # module -> size choice
NO_OP = "skip"
Params = dict[str, torch.Tensor]  # "<part>.weight" / "<part>.bias" -> a (sliced) tensor


# -- FLOPs of the space from the registry ----------------------------------------------------
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


def uniform_choices(space: InteractionsSpace, width: int, module: str, size: Any) -> dict[str, Any]:
    """Every layer set to `module` with `size`, at `width`."""
    out: dict[str, Any] = {"width": width}
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
    return space.check_choices(decided)


# -- slicing --------------------------------------------------------------------------------
@dataclass(frozen=True)
class _Part:
    """One Linear of a layer module: the standalone node suffix and module path it becomes,
    and how its output (dim 0) and input (dim 1) are sliced: "all" (kept), "width" (first W),
    "state" ([0:W] and [Wmax:], an input `concat flat [h, tail]`), "size" (first rank/hidden)."""

    node: str
    path: str
    out: str
    inp: str


_PARTS: dict[str, dict[str, _Part]] = {
    "dot": {"row": _Part("row", "layers.0", "all", "width"), "h": _Part("h", "layers.0", "width", "all")},
    "dcn": {"full": _Part("dcn", "mix.0", "state", "state"), "u": _Part("dcn", "mix.0.0", "size", "state"),
            "v": _Part("dcn", "mix.0.1", "state", "size"), "h": _Part("h", "layers.0", "width", "state")},
    "fm": {"h": _Part("h", "layers.0", "width", "state")},
    "mlp": {"hidden": _Part("mlp", "layers.0", "size", "state"), "out": _Part("mlp", "layers.2", "width", "size")},
    "efc": {"linear": _Part("efc", "linear", "all", "all")},
    "attention": {n: _Part("attention", n, "all", "all") for n in ("query", "key", "value", "residual")},
}


def _keep_state(t: torch.Tensor, dim: int, width: int, wmax: int) -> torch.Tensor:
    """Entries [0:width] and [wmax:] of `t` along `dim` (the layout of `concat flat [h, tail]`)."""
    if width == wmax:
        return t
    return torch.cat([t.narrow(dim, 0, width), t.narrow(dim, wmax, t.shape[dim] - wmax)], dim=dim)


def _slice(t: torch.Tensor, dim: int, rule: str, width: int, wmax: int, size: int) -> torch.Tensor:
    if rule == "width":
        return t.narrow(dim, 0, width)
    if rule == "state":
        return _keep_state(t, dim, width, wmax)
    if rule == "size":
        return t.narrow(dim, 0, size)
    return t


def _lin(x: torch.Tensor, p: Params, part: str) -> torch.Tensor:
    return F.linear(x, p[part + ".weight"], p.get(part + ".bias"))


def _flat_state(h: torch.Tensor, s: torch.Tensor) -> torch.Tensor:
    return torch.cat([h, s.flatten(1)], dim=1)  # (B, W + F*E)


# -- the weights of one layer -----------------------------------------------------------------
@dataclass(frozen=True)
class _Dims:
    wmax: int  # the largest state width
    rows: int  # F
    dim: int  # E
    ranks: tuple[int, ...]  # dcn ranks (0 = full)
    hmax: int  # the largest mlp hidden width

    @property
    def flat(self) -> int:  # Dx: the width of concat flat [h, S] at Wmax
        return self.wmax + self.rows * self.dim

    @property
    def rmax(self) -> int:  # the largest low rank (0 when only full rank is offered)
        return max(self.ranks)


class _LayerWeights(nn.Module):
    """Every candidate module of one layer at its largest size; `sliced` cuts a path's view and
    `dense` / `sparse` run a module functionally on such a view."""

    def __init__(self, modules: tuple[str, ...], d: _Dims) -> None:
        super().__init__()
        self.d = d
        self.parts = nn.ModuleDict({m: self._build(m, d) for m in modules if m in _PARTS})
        rows, cols = torch.triu_indices(d.rows + 1, d.rows + 1, offset=1)
        self.register_buffer("pair_rows", rows, persistent=False)
        self.register_buffer("pair_cols", cols, persistent=False)

    @staticmethod
    def _build(module: str, d: _Dims) -> nn.ModuleDict:
        e, f, w = d.dim, d.rows, d.wmax
        if module == "dot":
            return nn.ModuleDict({"row": nn.Linear(w, e), "h": nn.Linear((f + 1) * f // 2, w)})
        if module == "dcn":
            parts = {"full": nn.Linear(d.flat, d.flat)} if 0 in d.ranks else {}
            if d.rmax:
                parts |= {"u": nn.Linear(d.flat, d.rmax, bias=False), "v": nn.Linear(d.rmax, d.flat)}
            return nn.ModuleDict({**parts, "h": nn.Linear(d.flat, w)})
        if module == "fm":
            return nn.ModuleDict({"h": nn.Linear(w + e, w)})
        if module == "mlp":
            return nn.ModuleDict({"hidden": nn.Linear(d.flat, d.hmax), "out": nn.Linear(d.hmax, w)})
        if module == "efc":
            return nn.ModuleDict({"linear": nn.Linear(f, f)})
        return nn.ModuleDict({n: nn.Linear(e, e, bias=False) for n in _PARTS["attention"]})

    @staticmethod
    def used_parts(module: str, size: Any) -> tuple[str, ...]:
        """The parts a path through `module` with `size` reads."""
        if module == "dcn":
            return ("full", "h") if size == 0 else ("u", "v", "h")
        return tuple(_PARTS[module])

    def sliced(self, module: str, size: Any, width: int) -> Params:
        """The weights of `module` with `size` at state width `width`, keyed "<part>.<param>"."""
        out: Params = {}
        for name in self.used_parts(module, size):
            rule, linear = _PARTS[module][name], self.parts[module][name]
            n = size if isinstance(size, int) else 0
            out[name + ".weight"] = _slice(_slice(linear.weight, 0, rule.out, width, self.d.wmax, n),
                                           1, rule.inp, width, self.d.wmax, n)
            if linear.bias is not None:
                out[name + ".bias"] = _slice(linear.bias, 0, rule.out, width, self.d.wmax, n)
        return out

    # -- functional modules on sliced weights -------------------------------------------------
    def dense(self, module: str, h: torch.Tensor, s: torch.Tensor, p: Params) -> torch.Tensor:
        """h (B, W), S (B, F, E) -> h' (B, W) with `module` ("dot", "dcn", "fm" or "mlp")."""
        if module == "dot":
            return self.dot(h, s, p)
        if module == "dcn":
            x = _flat_state(h, s)  # (B, Dx)
            mix = _lin(x, p, "full") if "full.weight" in p else _lin(_lin(x, p, "u"), p, "v")
            return torch.relu(_lin(x * mix + x, p, "h"))
        if module == "fm":
            return torch.relu(_lin(torch.cat([h, fm(s)], dim=1), p, "h"))  # (B, W + E) -> (B, W)
        hidden = torch.relu(_lin(_flat_state(h, s), p, "hidden"))  # (B, H)
        return torch.relu(_lin(hidden, p, "out"))

    def dot(self, h: torch.Tensor, s: torch.Tensor, p: Params) -> torch.Tensor:
        row = _lin(h, p, "row")  # (B, E)
        rows = torch.cat([row.unsqueeze(1), s], dim=1)  # (B, 1 + F, E)
        gram = torch.bmm(rows, rows.transpose(1, 2))  # (B, 1 + F, 1 + F)
        pairs = gram[:, self.pair_rows, self.pair_cols]  # (B, F(F+1)/2)
        return torch.relu(_lin(pairs, p, "h"))

    @staticmethod
    def sparse(module: str, s: torch.Tensor, p: Params, heads: int) -> torch.Tensor:
        """S (B, F, E) -> S' (B, F, E) with `module` ("efc" or "attention")."""
        if module == "efc":
            return _lin(s.transpose(1, 2), p, "linear").transpose(1, 2)
        return attention(s, p, heads)


def fm(s: torch.Tensor) -> torch.Tensor:
    """FM second-order term without the reduction: (B, F, E) -> (B, E)."""
    total = s.sum(dim=1)  # (B, E)
    return 0.5 * (total * total - (s * s).sum(dim=1))


def attention(s: torch.Tensor, p: Params, heads: int) -> torch.Tensor:
    """AutoInt layer with `heads` heads of width E / heads: (B, F, E) -> (B, F, E)."""
    b, f, e = s.shape
    d = e // heads

    def split(t: torch.Tensor) -> torch.Tensor:
        return t.view(b, f, heads, d).transpose(1, 2)  # (B, H, F, d)

    q, k, v = (split(_lin(s, p, n)) for n in ("query", "key", "value"))
    weights = torch.softmax(torch.matmul(q, k.transpose(-1, -2)) * (1.0 / d ** 0.5), dim=-1)  # (B, H, F, F)
    out = torch.matmul(weights, v).transpose(1, 2).reshape(b, f, -1)  # (B, F, E)
    return torch.relu(out + _lin(s, p, "residual"))


# -- weights both supernets hold --------------------------------------------------------------
class _SharedWeights(nn.Module):
    """Embedding, dense normalization, h0, the layers' weights and the head of a space."""

    def __init__(self, space: InteractionsSpace) -> None:
        super().__init__()
        schema = space.schema
        self.space = space
        o = space.options
        self.d = _Dims(max(o.widths), schema.num_sparse, schema.embedding_dim, tuple(o.dcn_ranks),
                       max(o.mlp_hidden))
        self.embedding = EmbeddingModule(schema, schema.embedding_dim, o.pooling)
        self.register_buffer("dense_mean", torch.tensor([c.mean for c in schema.dense], dtype=torch.float32))
        self.register_buffer("dense_inv_std", torch.tensor([1.0 / c.std for c in schema.dense],
                                                           dtype=torch.float32))
        self.dense_prep = DensePrep(schema)
        start = schema.num_dense or self.d.rows * self.d.dim
        self.h0 = nn.Linear(start, self.d.wmax)
        self.layers = nn.ModuleList(_LayerWeights(c, self.d) for c in space.layer_candidates())
        self.head = nn.Linear(self.d.flat, 1)

    def embed(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """The embedding lookup: KJT of the schema's keys -> (B, F, E)."""
        return self.embedding(sparse)

    def _h0(self, dense: torch.Tensor, embedded: torch.Tensor, width: int) -> torch.Tensor:
        """h0 (B, width) from the normalized dense input, or the flattened sparse input."""
        if self.space.schema.num_dense:
            x = self.dense_prep(dense, self.dense_mean, self.dense_inv_std)  # (B, D)
        else:
            x = embedded.flatten(1)  # (B, F*E)
        return torch.relu(F.linear(x, self.h0.weight[:width], self.h0.bias[:width]))

    def _logit(self, h: torch.Tensor, s: torch.Tensor, width: int) -> torch.Tensor:
        weight = _keep_state(self.head.weight, 1, width, self.d.wmax)  # (1, W + F*E)
        return F.linear(_flat_state(h, s), weight, self.head.bias).squeeze(1)  # (B,)


# -- one-shot: one path at a time ---------------------------------------------------------------
class InteractionsSupernet(_SharedWeights, WeightSharingSupernet):
    """Weight-sharing supernet of an `InteractionsSpace` (see the module docstring).

    forward / interact raise ConfigError (from `space.check_choices`) for bad choices.
    """

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor,
                choices: Mapping[str, Any]) -> torch.Tensor:
        """Logits (B,) of `choices`; dense (B, D) raw columns, sparse KJT of the schema's keys."""
        return self.interact(dense, self.embed(sparse), choices)

    def interact(self, dense: torch.Tensor, embedded: torch.Tensor,
                 choices: Mapping[str, Any]) -> torch.Tensor:
        """Everything after the lookup: dense (B, D), embedded (B, F, E) -> logits (B,)."""
        c = self.space.check_choices(choices)
        width = c["width"]
        h, s = self._h0(dense, embedded, width), embedded  # (B, W), (B, F, E)
        for i, layer in enumerate(self.layers):
            module, size = layer_option(c, i)
            if module in DENSE_MODULES:
                h = layer.dense(module, h, s, layer.sliced(module, size, width))
            elif module in SPARSE_MODULES:
                s = layer.sparse(module, s, layer.sliced(module, size, width), size or 1)
        return self._logit(h, s, width)

    def inherit(self, choices: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """State dict of `build_model(space.decode(choices), schema)` holding the path's slices
        (copies, detached)."""
        c = self.space.check_choices(choices)
        width = c["width"]
        out: dict[str, torch.Tensor] = {"dense_mean": self.dense_mean, "dense_inv_std": self.dense_inv_std}
        out |= self.embedding.state_dict(prefix="embedding.")
        out["blocks.h0.layers.0.weight"] = self.h0.weight[:width]
        out["blocks.h0.layers.0.bias"] = self.h0.bias[:width]
        for i, layer in enumerate(self.layers):
            module, size = layer_option(c, i)
            if module in _PARTS:
                out |= self._layer_keys(i, module, layer.sliced(module, size, width))
        out["blocks.logit.layers.0.weight"] = _keep_state(self.head.weight, 1, width, self.d.wmax)
        out["blocks.logit.layers.0.bias"] = self.head.bias
        return {k: v.detach().clone() for k, v in out.items()}

    @staticmethod
    def _layer_keys(i: int, module: str, p: Params) -> dict[str, torch.Tensor]:
        """"<part>.<param>" -> "blocks.l{i}_<node>.<path>.<param>" (the standalone model's keys)."""
        out = {}
        for key, value in p.items():
            part_name, param = key.split(".")
            part = _PARTS[module][part_name]
            out[f"blocks.l{i}_{part.node}.{part.path}.{param}"] = value
        return out


# -- DistDNAS: every candidate, mixed --------------------------------------------------------
class InteractionsMixedOp(_SharedWeights, MixedOpSupernet):
    """Mixed-op supernet of an `InteractionsSpace`: logits for "width" and every layer's
    "l{i}.module" and size choices ("l{i}.dcn_rank", "l{i}.mlp_hidden", "l{i}.heads", those of
    candidate modules), zeros at construction (uniform). See the module docstring."""

    def __init__(self, space: InteractionsSpace, normalize: bool = False) -> None:
        super().__init__(space)
        self.normalize = normalize
        self._candidates = space.layer_candidates()[0]
        self._choices = {c.name: c.options for c in space.choices() if self._has_logits(c.name)}
        self._keys = {name: name.replace(".", "__") for name in self._choices}
        self.alphas = nn.ParameterDict({self._keys[n]: nn.Parameter(torch.zeros(len(o)))
                                        for n, o in self._choices.items()})
        self._register_masks()
        self._register_flops(flops_table(space))

    def _has_logits(self, name: str) -> bool:
        """"width", each layer's module, and the size choices of candidate modules."""
        if name == "width" or name.endswith(".module"):
            return True
        return any(name.endswith("." + SIZE_CHOICE[m]) for m in self._candidates if m in SIZE_CHOICE)

    def _register_masks(self) -> None:
        def masks(sizes: tuple[int, ...], units: int) -> torch.Tensor:
            return (torch.arange(units)[None, :] < torch.tensor(sizes)[:, None]).float()  # (n, units)

        o = self.space.options
        self.register_buffer("width_masks", masks(o.widths, self.d.wmax), persistent=False)
        self.register_buffer("hidden_masks", masks(o.mlp_hidden, self.d.hmax), persistent=False)
        self.register_buffer("rank_masks", masks(o.dcn_ranks, self.d.rmax), persistent=False)  # rank 0: zeros
        self.register_buffer("rank_is_low", torch.tensor([float(r > 0) for r in o.dcn_ranks]), persistent=False)

    def _register_flops(self, table: FlopsTable) -> None:
        """base_flops (NW,) and flops_<module> (L, NW, sizes) as float buffers."""
        widths, layers = self.space.options.widths, self.space.options.layers
        self.register_buffer("base_flops", torch.tensor([float(table.base[w]) for w in widths]),
                             persistent=False)
        for m in self._candidates:
            values = [[[float(table.layer[(i, m, s, w)]) for s in size_options(self.space, m)]
                       for w in widths] for i in range(layers)]
            self.register_buffer(f"flops_{m}", torch.tensor(values), persistent=False)

    # -- parameters and probabilities -------------------------------------------------------------
    def arch_parameters(self) -> Iterator[nn.Parameter]:
        return iter(self.alphas.values())

    def weight_parameters(self) -> Iterator[nn.Parameter]:
        arch = {id(p) for p in self.alphas.values()}
        return (p for p in self.parameters() if id(p) not in arch)

    def logits(self, name: str) -> nn.Parameter:
        """The architecture logits of choice `name` (one per option, in the choice's order)."""
        return self.alphas[self._keys[name]]

    def choice_options(self) -> dict[str, tuple[Any, ...]]:
        """The choices that carry logits, with their options."""
        return dict(self._choices)

    def _probs(self, temperature: float, gumbel: bool) -> dict[str, torch.Tensor]:
        out = {}
        for name, key in self._keys.items():
            logits = self.alphas[key]
            out[name] = (F.gumbel_softmax(logits, tau=temperature, hard=False) if gumbel
                         else torch.softmax(logits / temperature, dim=0))
        return out

    def probabilities(self) -> dict[str, dict[Any, float]]:
        with torch.no_grad():
            probs = self._probs(1.0, gumbel=False)
        return {n: dict(zip(self._choices[n], probs[n].tolist())) for n in self._choices}

    def derive(self, threshold: float = 0.0) -> dict[str, Any]:
        """Argmax choices; a layer whose chosen module's probability is under `threshold` is set
        to "skip" (when "skip" is a candidate). Only active choices, checked by the space."""
        probs = self.probabilities()
        decided: dict[str, Any] = {}
        for choice in self.space.choices():
            if not choice.is_active(decided):
                continue
            p = probs[choice.name]
            best = max(p, key=p.__getitem__)  # the first of equal maxima
            if choice.name.endswith(".module") and p[best] < threshold and NO_OP in p:
                best = NO_OP
            decided[choice.name] = best
        return self.space.check_choices(decided)

    # -- cost -----------------------------------------------------------------------------------
    def full_flops(self) -> int:
        """base(Wmax) + sum over layers and candidate modules of the module's largest size."""
        w = self.space.options.widths.index(max(self.space.options.widths))
        total = self.base_flops[w]
        for m in self._candidates:
            total = total + getattr(self, f"flops_{m}")[:, w, :].max(dim=1).values.sum()
        return int(total.item())

    def expected_flops(self, temperature: float = 1.0) -> torch.Tensor:
        """sum_w p(w) [base(w) + sum_i sum_m p_i(m) sum_s p_i(s | m) flops_i(m, s, w)] (scalar)."""
        probs = self._probs(temperature, gumbel=False)
        total = self.base_flops  # (NW,)
        for i in range(self.space.options.layers):
            total = total + self._expected_layer(i, probs)
        return probs["width"] @ total

    def _expected_layer(self, i: int, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """E[FLOPs of layer i] per width: (NW,)."""
        pm = probs[f"l{i}.module"]
        out = torch.zeros_like(self.base_flops)
        for j, m in enumerate(self._candidates):
            table = getattr(self, f"flops_{m}")[i]  # (NW, sizes)
            sizes = probs[f"l{i}.{SIZE_CHOICE[m]}"] if m in SIZE_CHOICE else table.new_ones(1)
            out = out + pm[j] * (table @ sizes)
        return out

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor, temperature: float = 1.0,
                gumbel: bool = False) -> torch.Tensor:
        return self.interact(dense, self.embed(sparse), temperature, gumbel)

    def interact(self, dense: torch.Tensor, embedded: torch.Tensor, temperature: float = 1.0,
                 gumbel: bool = False) -> torch.Tensor:
        """Everything after the lookup: dense (B, D), embedded (B, F, E) -> mixed logits (B,)."""
        probs = self._probs(temperature, gumbel)
        wmask = probs["width"] @ self.width_masks  # (Wmax,)
        h, s = self._h0(dense, embedded, self.d.wmax) * wmask, embedded  # (B, Wmax), (B, F, E)
        for i in range(len(self.layers)):
            h, s = self._mixed_layer(i, h, s, probs, wmask)
        return self._logit(h, s, self.d.wmax)

    def _mixed_layer(self, i: int, h: torch.Tensor, s: torch.Tensor, probs: Mapping[str, torch.Tensor],
                     wmask: torch.Tensor) -> tuple[torch.Tensor, torch.Tensor]:
        """h' = sum_m p(m) h_m, S' = sum_m p(m) S_m; a module that does not update h (S)
        contributes h (S) unchanged; new h are masked to the mixed width."""
        pm = probs[f"l{i}.module"]
        keep_h, keep_s = pm.new_zeros(()), pm.new_zeros(())
        new_h, new_s = torch.zeros_like(h), torch.zeros_like(s)
        for j, m in enumerate(self._candidates):
            if m in DENSE_MODULES:
                new_h = new_h + pm[j] * self._dense_candidate(i, m, h, s, probs)
                keep_s = keep_s + pm[j]
            elif m in SPARSE_MODULES:
                new_s = new_s + pm[j] * self._sparse_candidate(i, m, s, probs)
                keep_h = keep_h + pm[j]
            else:
                keep_h, keep_s = keep_h + pm[j], keep_s + pm[j]
        return keep_h * h + wmask * new_h, keep_s * s + new_s

    def _dense_candidate(self, i: int, m: str, h: torch.Tensor, s: torch.Tensor,
                         probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """h_m (B, Wmax), sizes mixed; unit RMS per row with `normalize`."""
        layer = self.layers[i]
        if m == "dcn":
            out = self._mixed_dcn(layer, _flat_state(h, s), probs[f"l{i}.dcn_rank"])
        elif m == "mlp":
            out = self._mixed_mlp(layer, _flat_state(h, s), probs[f"l{i}.mlp_hidden"])
        else:
            out = layer.dense(m, h, s, layer.sliced(m, None, self.d.wmax))
        if self.normalize:
            out = out / (out.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-6)
        return out

    def _sparse_candidate(self, i: int, m: str, s: torch.Tensor,
                          probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """S_m (B, F, E), head counts mixed."""
        layer = self.layers[i]
        p = layer.sliced(m, None, self.d.wmax)
        if m == "efc":
            return layer.sparse(m, s, p, 1)
        heads = self._choices[f"l{i}.heads"]
        ph = probs[f"l{i}.heads"]
        return sum((ph[k] * attention(s, p, n) for k, n in enumerate(heads)), torch.zeros_like(s))

    def _mixed_dcn(self, layer: _LayerWeights, x: torch.Tensor, pr: torch.Tensor) -> torch.Tensor:
        """x (B, Dx) -> h (B, Wmax): the cross's W x + b mixed over ranks (rank 0: the full
        weight; low ranks: u's units masked by sum_r p(r) [unit < r])."""
        mix = torch.zeros_like(x)
        if 0 in self.d.ranks:
            full = layer.sliced("dcn", 0, self.d.wmax)
            mix = mix + pr[self.d.ranks.index(0)] * _lin(x, full, "full")
        if self.d.rmax:
            low = layer.sliced("dcn", self.d.rmax, self.d.wmax)
            z = F.linear(x, low["u.weight"]) * (pr @ self.rank_masks)  # (B, Rmax)
            mix = mix + F.linear(z, low["v.weight"]) + (pr @ self.rank_is_low) * low["v.bias"]
        h = layer.parts["dcn"]["h"]
        return torch.relu(F.linear(x * mix + x, h.weight, h.bias))

    def _mixed_mlp(self, layer: _LayerWeights, x: torch.Tensor, ph: torch.Tensor) -> torch.Tensor:
        """x (B, Dx) -> h (B, Wmax), hidden units masked by sum_k p(k) [unit < hidden_k]."""
        p = layer.sliced("mlp", self.d.hmax, self.d.wmax)
        hidden = torch.relu(_lin(x, p, "hidden")) * (ph @ self.hidden_masks)  # (B, Hmax)
        return torch.relu(_lin(hidden, p, "out"))
