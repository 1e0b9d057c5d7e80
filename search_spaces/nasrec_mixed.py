"""The nasrec space's differentiable supernet: sampled paths with straight-through weights (GDAS).

A continuous mixture of every nasrec path is not one network of fixed shapes: a block's inputs
are any earlier blocks, whose row counts differ, and attention keeps the rows it is given, so
mixing all sources makes row counts grow with every block. So each forward pass samples one
option per active choice from its (Gumbel-)softmax, runs that path on the shared weights of the
weight-sharing supernet (nasrec_supernet's template, the same keys), and multiplies each
choice's straight-through weight (1 in value, the softmax's gradient; Dong & Yang's GDAS) onto
the tensor it acts on:
- a block's choices (ops, width, merge, efc rows, heads, inputs) onto its dense and its sparse
  output;
- "fm" = True onto the FM term, "dense_buckets" = True onto the bucket rows (False has no
  tensor, so only a step that samples True teaches these).
`expected_flops` is E[FLOPs] under the choice probabilities, estimated from `flops_samples`
sampled paths (registry costs, cached per path) with the score-function gradient
(mean-baseline REINFORCE): unbiased, and exact once the probabilities are one-hot.
"""

from __future__ import annotations

import json
import re
from collections.abc import Mapping
from typing import Any

import torch
import torch.nn.functional as F
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.arch.graph import INPUT_SPARSE
from rankitect.blocks import get_block
from rankitect.cost import cost_of
from rankitect.elastic import input_shape
from rankitect.elastic_supernet import ElasticBase
from rankitect.space import register_supernets
from rankitect.supernet import ChoiceLogits, MixedOpSupernet
from search_spaces.nasrec import NONE, NasRecSpace
from search_spaces.nasrec_supernet import nasrec_template, slot_of

_BLOCK_CHOICE = re.compile(r"^b(\d+)\.")


class NasRecMixedOp(ChoiceLogits, ElasticBase, MixedOpSupernet):
    """Differentiable supernet of a `NasRecSpace` (see the module docstring): logits for every
    choice, zeros at construction (uniform). `normalize` has no effect (a path mixes nothing)."""

    def __init__(self, space: NasRecSpace, normalize: bool = False, flops_samples: int = 32) -> None:
        super().__init__(space, nasrec_template(space))
        self.flops_samples = flops_samples
        self.init_logits({c.name: c.options for c in space.choices()})
        self._flops: dict[str, int] = {}

    # -- probabilities ------------------------------------------------------------------------------
    def probabilities(self) -> dict[str, dict[Any, float]]:
        with torch.no_grad():
            return {n: dict(zip(o, torch.softmax(self.logits(n), 0).tolist())) for n, o in self._choices.items()}

    def derive(self, threshold: float = 0.0) -> dict[str, Any]:
        """Argmax of each active choice; an extra input whose source's probability is under
        `threshold` is "none"."""
        probs = self.probabilities()
        decided: dict[str, Any] = {}
        for choice in self.space.choices():
            if choice.is_active(decided):
                p = probs[choice.name]
                best = max(p, key=p.__getitem__)  # the first of equal maxima
                if NONE in p and p[best] < threshold:
                    best = NONE
                decided[choice.name] = best
        return self.space.check_choices(decided)

    # -- sampling ---------------------------------------------------------------------------------
    def sample(self, temperature: float, gumbel: bool) -> tuple[dict[str, Any], dict[str, torch.Tensor]]:
        """(a path, each choice's straight-through weight): Gumbel-softmax with noise when
        `gumbel`, else a draw from softmax(logits / temperature)."""
        decided: dict[str, Any] = {}
        weights: dict[str, torch.Tensor] = {}
        for choice in self.space.choices():
            if not choice.is_active(decided):
                continue
            logits = self.logits(choice.name)
            soft = (F.gumbel_softmax(logits, tau=temperature, hard=False) if gumbel
                    else torch.softmax(logits / temperature, 0))
            k = int(soft.argmax()) if gumbel else int(torch.multinomial(soft.detach(), 1))
            decided[choice.name] = choice.options[k]
            weights[choice.name] = 1.0 - soft[k].detach() + soft[k]
        return decided, weights

    # -- cost -----------------------------------------------------------------------------------
    def _path_flops(self, choices: Mapping[str, Any]) -> int:
        key = json.dumps(dict(choices), sort_keys=True)
        if key not in self._flops:
            self._flops[key] = cost_of(self.space.decode(choices), self.space.schema).flops
        return self._flops[key]

    def expected_flops(self, temperature: float = 1.0) -> torch.Tensor:
        """E[FLOPs per example] estimated from `flops_samples` paths (scalar; see the module docstring)."""
        flops, log_probs = [], []
        for _ in range(self.flops_samples):
            decided: dict[str, Any] = {}
            log_p = torch.zeros(())
            for choice in self.space.choices():
                if choice.is_active(decided):
                    logp = torch.log_softmax(self.logits(choice.name) / temperature, 0)
                    k = int(torch.multinomial(logp.detach().exp(), 1))
                    decided[choice.name] = choice.options[k]
                    log_p = log_p + logp[k]
            flops.append(float(self._path_flops(decided)))
            log_probs.append(log_p)
        mean = sum(flops) / len(flops)
        surrogate = sum(((f - mean) * (lp - lp.detach()) for f, lp in zip(flops, log_probs)), torch.zeros(()))
        return mean + surrogate / len(flops)

    def full_flops(self) -> int:
        """An upper bound on any path's FLOPs per example: the smallest path (embedding, dense
        preparation, head), every node of the template at its largest, and per block a dot over
        its most rows, a sum of all its projections and the FM term."""
        t, o, e = self.blocks.template, self.space.options, self.space.schema.embedding_dim
        total = self._path_flops(self.space.smallest())
        for v in t.variants:
            block = get_block(v.block)
            total += block.flops([input_shape(s, t) for s in v.inputs], block.spec.resolve(dict(v.params))[0])
        for rows in t.extra["rows_in"]:
            total += 2 * (rows + 1) ** 2 * e + o.max_inputs * max(o.dense_widths)
        return total + 3 * self.space.schema.num_sparse * e

    # -- forward ----------------------------------------------------------------------------------
    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor, temperature: float = 1.0,
                gumbel: bool = False) -> torch.Tensor:
        return self.interact(dense, self.embed(sparse), temperature, gumbel)

    def interact(self, dense: torch.Tensor, embedded: torch.Tensor, temperature: float = 1.0,
                 gumbel: bool = False) -> torch.Tensor:
        """dense (B, D), embedded (B, F, E) -> logits (B,) of a sampled path, carrying the
        straight-through weights of its choices."""
        choices, weights = self.sample(temperature, gumbel)
        validated, lay = self.compiled(choices)
        values = self.inputs(dense, embedded, validated)
        if choices.get("dense_buckets") and validated.uses_sparse:
            f = self.space.schema.num_sparse
            rows = values[INPUT_SPARSE]
            values[INPUT_SPARSE] = torch.cat([rows[:, :f], rows[:, f:] * weights["dense_buckets"]], 1)
        scale = self._output_scale(validated, choices, weights)
        for node in validated.nodes:
            out = self.blocks.run_node(node, lay, [values[i] for i in node.inputs])
            values[node.id] = out * scale[node.id] if node.id in scale else out
        return values[validated.output].squeeze(1)

    @staticmethod
    def _output_scale(validated: Any, choices: Mapping[str, Any],
                      weights: Mapping[str, torch.Tensor]) -> dict[str, torch.Tensor]:
        """Node id -> the product of the straight-through weights that act on its output."""
        outputs: dict[int, list[str]] = {}
        for node in validated.nodes:  # a block's dense output is its last node in slot "b{i}"
            slot = slot_of(node.id)
            if m := re.match(r"^b(\d+)(\.s)?$", slot or ""):
                kind = 1 if m.group(2) else 0
                ids = outputs.setdefault(int(m.group(1)), ["", ""])
                ids[kind] = node.id
        scale: dict[str, torch.Tensor] = {}
        for name, w in weights.items():
            if m := _BLOCK_CHOICE.match(name):
                targets = [t for t in outputs.get(int(m.group(1)), []) if t]
            elif name == "fm" and choices["fm"]:
                targets = ["fm"]
            else:
                targets = []
            for t in targets:
                scale[t] = scale[t] * w if t in scale else w
        return scale


register_supernets("nasrec", mixed=NasRecMixedOp)
