"""The interactions space's weight-sharing supernet, built from the registry blocks.

Slots (rankitect.elastic): "dense" (the dense input), "h" (the state h, up to the widest
width, whichever node made it: h0, a layer's fc or mlp), "S" (the sparse rows, whichever node
made them: the lookup, efc or attention), "row" (dot's projection of h, one row), "pairs" (the
dot's pairs) and "fm" (the FM vector). An input `concat flat [h, S]` is therefore laid out as
[h: Wmax | S: F*E] in every layer and every module: a width W keeps the first W units of h and
the whole of S. The fc after dot, dcn and fm has one owner per module (`l{i}_h.dot`, ...), as
the three read different things.

`InteractionsSupernet` runs one path on those slices and hands them out as a standalone
model's state_dict (`inherit`); the mixed-op supernet (interactions_mixed) holds the same
weights under the same keys.
"""

from __future__ import annotations

import re

from rankitect.arch.validate import NodeInfo
from rankitect.elastic import DENSE_SLOT, Slot, Template, Variant
from rankitect.elastic_supernet import ElasticSupernet
from rankitect.space import register_supernets
from search_spaces.common import refuse_searched_dims
from search_spaces.interactions import InteractionsSpace

_SLOTS = [(re.compile(r"^(h0|l\d+_h|l\d+_mlp)$"), "h"), (re.compile(r"^(sparse|l\d+_efc|l\d+_attention)$"), "S"),
          (re.compile(r"^l\d+_row$"), "row"), (re.compile(r"^l\d+_dot$"), "pairs"),
          (re.compile(r"^l\d+_fm$"), "fm"), (re.compile(r"^dense$"), DENSE_SLOT)]
_H_AFTER = {"dot": "dot", "dcn": "dcn", "x": "fm"}  # the suffix of l{i}_h's input -> the module


def slot_of(label: str) -> str | None:
    """The slot of a node's output; None for the dcn cross (its output keeps its input's layout)."""
    return next((slot for pattern, slot in _SLOTS if pattern.match(label)), None)


def owner_of(node: NodeInfo) -> str:
    """`l{i}_h.<module>` for the fc after dot, dcn or fm; the node id otherwise."""
    if re.match(r"^l\d+_h$", node.id):
        return f"{node.id}.{_H_AFTER[node.inputs[0].rsplit('_', 1)[1]]}"
    return node.id


def interactions_template(space: InteractionsSpace) -> Template:
    """The slots and largest nodes of `space` (see the module docstring)."""
    refuse_searched_dims(space)
    o, schema = space.options, space.schema
    e, f, wmax = schema.embedding_dim, schema.num_sparse, max(o.widths)
    slots = {"h": Slot(wmax), "S": Slot(f, True), "row": Slot(1, True), "pairs": Slot((f + 1) * f // 2, pairs_of=("row", "S")),
             "fm": Slot(e)}
    if schema.num_dense:
        slots[DENSE_SLOT] = Slot(schema.num_dense)
    state = ("h", "S")
    variants = [Variant("h0", "fc", {"width": wmax}, ((DENSE_SLOT if schema.num_dense else "S",),)),
                Variant("logit", "fc", {"width": 1, "activation": "none"}, (state,))]
    low_ranks = [r for r in o.dcn_ranks if r > 0]
    for i in range(o.layers):
        p, modules = f"l{i}_", space.layer_candidates()[i]
        if "dot" in modules:
            variants += [Variant(p + "row", "fc", {"width": e, "activation": "none"}, (("h",),)),
                         Variant(p + "h.dot", "fc", {"width": wmax}, (("pairs",),))]
        if "dcn" in modules:
            ranks = ([0] if 0 in o.dcn_ranks else []) + ([max(low_ranks)] if low_ranks else [])
            variants += [Variant(p + "dcn", "dcn", {"layers": 1, "rank": r}, (state,)) for r in ranks]
            variants.append(Variant(p + "h.dcn", "fc", {"width": wmax}, (state,)))
        if "fm" in modules:
            variants.append(Variant(p + "h.fm", "fc", {"width": wmax}, (("h", "fm"),)))
        if "mlp" in modules:
            variants.append(Variant(p + "mlp", "mlp", {"widths": [max(o.mlp_hidden), wmax]}, (state,)))
        if "efc" in modules:
            variants.append(Variant(p + "efc", "efc", {"out_rows": f}, (("S",),)))
        if "attention" in modules:
            variants += [Variant(p + "attention", "attention", {"heads": h, "head_dim": e // h}, (("S",),))
                         for h in space.heads]
    return Template(slots, tuple(variants), e, slot_of=slot_of, owner_of=owner_of, extra={"pooling": o.pooling})


class InteractionsSupernet(ElasticSupernet):
    """Weight-sharing supernet of an `InteractionsSpace`; forward / interact / inherit raise
    ConfigError (from `space.check_choices`) for bad choices."""

    def __init__(self, space: InteractionsSpace) -> None:
        super().__init__(space, interactions_template(space))


register_supernets("interactions", weight_sharing=InteractionsSupernet)
