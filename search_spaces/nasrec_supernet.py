"""The nasrec space's supernets, built from the registry blocks (rankitect.elastic).

`extra["rows_in"][i]`: the most rows block i's sparse input can have. The dot's pairs are
stored per pair of source rows (a pairs slot), so a path's dot of two rows reads the same weight
whichever other rows it has.

Slots: the dense input ("dense", or "stem" without dense columns), the sparse rows ("sparse",
and "buckets" when the space may feed them), and per block i its dense output "b{i}" (whatever
op made it, up to the widest `dense_widths`), its sparse output "b{i}.s" (efc or attention
rows), the dot's one-row projection "b{i}_row", its pairs "b{i}_dot" and the gating projection
"b{i}_proj"; "fm" is the global FM term. Every weight that reads block i's inputs holds a
column block per source it may read (the dense sources and the sparse ones flattened, as
NASRec's supernet concatenates every earlier block's output), so two paths share a weight where
they read the same source.
"""

from __future__ import annotations

import re
from typing import TYPE_CHECKING

from rankitect.elastic import BUCKETS_SLOT, DENSE_SLOT, SPARSE_SLOT, Slot, Template, Variant
from rankitect.elastic_supernet import ElasticSupernet
from rankitect.errors import ConfigError
from rankitect.space import register_supernets
from search_spaces.common import refuse_searched_dims

if TYPE_CHECKING:
    from search_spaces.nasrec import NasRecSpace

_BLOCK_OUTPUT = re.compile(r"^b(\d+)_(dense|proj\d+)$")
_SPARSE_OUTPUT = re.compile(r"^b(\d+)_sparse$")


def slot_of(label: str) -> str:
    if m := _BLOCK_OUTPUT.match(label):
        return f"b{m.group(1)}"
    if m := _SPARSE_OUTPUT.match(label):
        return f"b{m.group(1)}.s"
    return label


def _pairs(rows: int) -> int:
    return rows * (rows - 1) // 2


def nasrec_template(space: NasRecSpace) -> Template:
    """The slots and largest nodes of `space` (see the module docstring)."""
    refuse_searched_dims(space)
    o, schema = space.options, space.schema
    if len(o.row_scales) > 1:
        raise ConfigError(f"space.row_scales: one-shot and differentiable searches share one table per "
                          f"column; give one row scale, got {list(o.row_scales)}")
    e, wmax, heads = schema.embedding_dim, max(o.dense_widths), space.heads
    buckets = True in space.bucket_values
    dense = DENSE_SLOT if schema.num_dense else "stem"
    slots: dict[str, Slot] = {dense: Slot(schema.num_dense or o.stem_width), SPARSE_SLOT: Slot(schema.num_sparse, True)}
    if buckets:
        slots[BUCKETS_SLOT] = Slot(schema.num_dense, True)
    sparse_sources = [SPARSE_SLOT] + ([BUCKETS_SLOT] if buckets else [])
    variants = [] if schema.num_dense else [Variant("stem", "fc", {"width": o.stem_width}, ((SPARSE_SLOT,),))]
    source_rows = [schema.num_sparse + (schema.num_dense if buckets else 0)]  # rows of each sparse source
    rows_ins = []
    for i in range(o.blocks):
        din = tuple([dense, *(f"b{j}" for j in range(i)), *sparse_sources, *(f"b{j}.s" for j in range(i))])
        rows_in = sum(sorted(source_rows, reverse=True)[:o.max_inputs])
        rows_out = max([max(o.efc_rows)] + ([rows_in] if heads else []))
        rows_ins.append(rows_in)
        sparse_in = (*sparse_sources, *(f"b{j}.s" for j in range(i)))
        universe = 1 + sum(slots[s].size for s in sparse_in)  # the dot's rows: its projection, then any source's
        slots |= {f"b{i}": Slot(wmax), f"b{i}_proj": Slot(wmax), f"b{i}_row": Slot(1, True),
                  f"b{i}_dot": Slot(_pairs(universe), pairs_of=(f"b{i}_row", *sparse_in)),
                  f"b{i}.s": Slot(rows_out, True)}
        variants += [Variant(f"b{i}_dense", "fc", {"width": wmax}, (din,)),
                     Variant(f"b{i}_dense", "fc", {"width": wmax}, ((f"b{i}_dot",),)),
                     Variant(f"b{i}_dense", "gating", {}, ((f"b{i}_proj",),)),
                     Variant(f"b{i}_proj", "fc", {"width": wmax, "activation": "none"}, (din,)),
                     Variant(f"b{i}_row", "fc", {"width": e, "activation": "none"}, (din,)),
                     Variant(f"b{i}_sparse", "efc", {"out_rows": max(o.efc_rows)}, (sparse_in,))]
        variants += [Variant(f"b{i}_proj{k}", "fc", {"width": wmax, "activation": "none"}, (din,))
                     for k in range(o.max_inputs + 1)]
        variants += [Variant(f"b{i}_sparse", "attention", {"heads": h, "head_dim": e // h}, (sparse_in,))
                     for h in heads]
        source_rows.append(rows_out)
    slots["fm"] = Slot(1)
    variants.append(Variant("logit", "fc", {"width": 1, "activation": "none"}, ((f"b{o.blocks - 1}", "fm"),)))
    return Template(slots, tuple(variants), e, slot_of=slot_of,
                    extra={"pooling": o.pooling, "dense_buckets": buckets, "rows_in": rows_ins})


def nasrec_supernet(space: NasRecSpace) -> ElasticSupernet:
    """A weight-sharing supernet over `space` (fresh weights)."""
    return ElasticSupernet(space, nasrec_template(space))


register_supernets("nasrec", weight_sharing=nasrec_supernet)
