"""The interactions space's mixed-op supernet (DNAS, DistDNAS), built from the registry blocks.

It holds the weights of `InteractionsSupernet` under the same keys (interactions_supernet's
template) and runs every candidate of a layer with the blocks' own modules at the largest
sizes, mixing them with (Gumbel-)softmax probabilities of its architecture logits:
- widths: the state h is kept at Wmax and multiplied by the soft mask sum_w p(w) [unit < w];
- dcn ranks: the cross of the full rank and of the largest low rank run with their weights
  scaled (full: by p(rank 0); low: U's units by sum_r p(r) [unit < r], V's bias by p(low rank)),
  which sums their W x + b terms: cross = cross_full + cross_low - x;
- mlp hidden sizes: the first layer's units scaled by sum_k p(k) [unit < hidden_k] (a ReLU unit
  scaled before the ReLU is the unit scaled after it);
- attention heads: the outputs of each head count, mixed.
These are FBNetV2's soft masks, applied to the weights a block is given.
With `normalize`, each dense candidate's new h is divided by its RMS over the units of each row
before mixing (the role of DARTS's affine-free batch norm after every op), so that the logits'
gradients do not follow the size of a candidate's output. In bench_distdnas, without it every
day's first layer chose dcn (whose cross adds its input back, x * (W x + b) + x) over dot, the
better module on the full data.
"""

from __future__ import annotations

import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.arch.validate import NodeInfo, validate
from rankitect.elastic import Layout, layouts
from rankitect.elastic_supernet import ElasticBase
from rankitect.space import register_supernets
from rankitect.supernet import ChoiceLogits, MixedOpSupernet
from search_spaces.interactions import DENSE_MODULES, SPARSE_MODULES, InteractionsSpace
from search_spaces.interactions_cost import (
    NO_OP,
    SIZE_CHOICE,
    FlopsTable,
    flops_table,
    size_options,
    uniform_choices,
)
from search_spaces.interactions_supernet import interactions_template

Scale = dict[str, dict[str, torch.Tensor]]  # node id -> parameter -> multiplier (broadcast)


class _Program:
    """Nodes of one part of a path at Wmax, with the layouts of its values; `bind` maps the
    values it reads from outside (h, S or a graph input) to their node ids."""

    def __init__(self, nodes: list[NodeInfo], lay: dict[str, Layout]) -> None:
        self.nodes, self.lay = nodes, lay
        made = {n.id for n in nodes}
        self.reads = {i: lay[i][0][0] for n in nodes for i in n.inputs if i not in made}  # id -> slot

    def node(self, suffix: str) -> NodeInfo:
        return next(n for n in self.nodes if n.id.endswith(suffix))


class InteractionsMixedOp(ChoiceLogits, ElasticBase, MixedOpSupernet):
    """Mixed-op supernet of an `InteractionsSpace`: logits for "width" and every layer's
    "l{i}.module" and size choices ("l{i}.dcn_rank", "l{i}.mlp_hidden", "l{i}.heads", those of
    candidate modules), zeros at construction (uniform). See the module docstring."""

    def __init__(self, space: InteractionsSpace, normalize: bool = False) -> None:
        super().__init__(space, interactions_template(space))
        o = space.options
        self.normalize = normalize
        self.wmax, self.hmax = max(o.widths), max(o.mlp_hidden)
        self.ranks = tuple(o.dcn_ranks)
        self.rmax = max(self.ranks)
        self._candidates = space.layer_candidates()[0]
        self.init_logits({c.name: c.options for c in space.choices() if self._has_logits(c.name)})
        self._programs: dict[tuple[int, str, Any], _Program] = {}
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
        self.register_buffer("width_masks", masks(o.widths, self.wmax), persistent=False)
        self.register_buffer("hidden_masks", masks(o.mlp_hidden, self.hmax), persistent=False)
        self.register_buffer("rank_masks", masks(o.dcn_ranks, self.rmax), persistent=False)  # rank 0: zeros
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

    # -- probabilities ------------------------------------------------------------------------------
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
        w = self.space.options.widths.index(self.wmax)
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

    # -- programs: parts of paths at Wmax ---------------------------------------------------------
    def _program(self, i: int | None, module: str, size: Any) -> _Program:
        """Layer i's nodes for `module` at `size` (i None: the nodes outside the layers)."""
        key = (i, module, size)
        if key not in self._programs:
            validated = validate(self.space.decode(uniform_choices(self.space, self.wmax, module, size)),
                                 self.space.schema)
            layer = re.compile(rf"^l{i if i is not None else r'[0-9]+'}_")
            inside = (lambda n: bool(layer.match(n.id)) == (i is not None))
            self._programs[key] = _Program([n for n in validated.nodes if inside(n)],
                                           layouts(validated, self.blocks.template))
        return self._programs[key]

    def _run(self, program: _Program, bound: Mapping[str, torch.Tensor], scale: Scale | None = None,
             nodes: list[NodeInfo] | None = None, values: dict[str, torch.Tensor] | None = None) -> torch.Tensor:
        """Run `nodes` (default: the whole program) on the slot values `bound` ("h", "S", "dense")
        with weights multiplied by `scale`; returns the last node's output."""
        values = {} if values is None else values
        nodes = program.nodes if nodes is None else nodes
        made = {n.id for n in nodes}
        values |= {i: bound[program.reads[i]] for n in nodes for i in n.inputs if i not in made and i not in values}
        out = torch.empty(0)
        for node in nodes:
            weights = self.blocks.node_weights(node, program.lay)
            for name, factor in (scale or {}).get(node.id, {}).items():
                weights[name] = weights[name] * factor
            out = values[node.id] = self.blocks.run_node(node, program.lay, [values[i] for i in node.inputs], weights)
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
        outside = self._program(None, self._candidates[0], size_options(self.space, self._candidates[0])[0])
        graph = {"S": embedded}
        if self.space.schema.num_dense:
            graph["dense"] = self.dense_prep(dense, self.dense_mean, self.dense_inv_std)  # (B, D)
        h = self._run(outside, graph, nodes=[outside.node("h0")]) * wmask  # (B, Wmax)
        s = embedded  # (B, F, E)
        for i in range(self.space.options.layers):
            h, s = self._mixed_layer(i, h, s, probs, wmask)
        head = [n for n in outside.nodes if n.id != "h0"]
        return self._run(outside, {"h": h, "S": s}, nodes=head).squeeze(1)

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
        state = {"h": h, "S": s}
        if m == "dcn":
            out = self._mixed_dcn(i, state, probs[f"l{i}.dcn_rank"])
        elif m == "mlp":
            units = probs[f"l{i}.mlp_hidden"] @ self.hidden_masks  # (Hmax,)
            out = self._run(self._program(i, "mlp", self.hmax), state,
                            {f"l{i}_mlp": {"layers.0.weight": units[:, None], "layers.0.bias": units}})
        else:
            out = self._run(self._program(i, m, None), state)
        if self.normalize:
            out = out / (out.pow(2).mean(dim=1, keepdim=True).sqrt() + 1e-6)
        return out

    def _sparse_candidate(self, i: int, m: str, s: torch.Tensor, probs: Mapping[str, torch.Tensor]) -> torch.Tensor:
        """S_m (B, F, E), head counts mixed."""
        if m == "efc":
            return self._run(self._program(i, m, None), {"S": s})
        heads = self._choices[f"l{i}.heads"]
        ph = probs[f"l{i}.heads"]
        return sum((ph[k] * self._run(self._program(i, m, n), {"S": s}) for k, n in enumerate(heads)),
                   torch.zeros_like(s))

    def _mixed_dcn(self, i: int, state: Mapping[str, torch.Tensor], pr: torch.Tensor) -> torch.Tensor:
        """h (B, Wmax) after the cross whose W x + b is mixed over ranks (see the module docstring)."""
        crosses, x = [], None
        dcn, p = f"l{i}_dcn", None
        if 0 in self.ranks:
            p0 = pr[self.ranks.index(0)]
            p = self._program(i, "dcn", 0)
            values: dict[str, torch.Tensor] = {}
            crosses.append(self._run(p, state, {dcn: {"mix.0.weight": p0, "mix.0.bias": p0}},
                                     nodes=[p.node("_x"), p.node("_dcn")], values=values))
            x = values[f"l{i}_x"]
        if self.rmax:
            p = self._program(i, "dcn", self.rmax)
            values = {}
            units, low = pr @ self.rank_masks, pr @ self.rank_is_low  # (Rmax,), ()
            crosses.append(self._run(p, state, {dcn: {"mix.0.0.weight": units[:, None], "mix.0.1.bias": low}},
                                     nodes=[p.node("_x"), p.node("_dcn")], values=values))
            x = values[f"l{i}_x"]
        assert p is not None and x is not None
        cross = sum(crosses[1:], crosses[0]) - (len(crosses) - 1) * x  # (B, Dx)
        return self._run(p, state, nodes=[p.node("_h")], values={dcn: cross})


register_supernets("interactions", mixed=InteractionsMixedOp)
