"""FLOPs per example and parameter counts of an architecture, from the registry's declarations.

No forward pass: the numbers come from each block's `flops` / `num_params` and the schema.
"""

from __future__ import annotations

from dataclasses import dataclass, field

from rankitect.arch.graph import Architecture
from rankitect.arch.validate import ValidatedArchitecture, embedding_block, validate
from rankitect.dense_prep import dense_clip_flops, dense_prep_flops
from rankitect.schema import Schema


@dataclass(frozen=True)
class Cost:
    flops: int  # per example, the whole forward pass to the logit
    params: int  # all trainable parameters, embedding tables included
    embedding_params: int
    by_node: dict[str, int] = field(default_factory=dict)  # FLOPs of each node (and inputs)

    @property
    def dense_params(self) -> int:
        return self.params - self.embedding_params


def cost_of(arch: Architecture | ValidatedArchitecture, schema: Schema | None = None) -> Cost:
    """Cost of a validated architecture (or of `arch` validated against `schema`)."""
    if isinstance(arch, Architecture):
        if schema is None:
            raise ValueError("cost_of(Architecture) needs the schema")
        arch = validate(arch, schema)
    by_node: dict[str, int] = {}
    emb_params = 0
    if arch.uses_dense:
        by_node["dense"] = dense_prep_flops(arch.schema)  # clip, log1p, (x - mean) * (1 / std)
    elif arch.uses_sparse and arch.embedding_params["dense_buckets"]:
        by_node["dense"] = dense_clip_flops(arch.schema)  # the clip the buckets read
    if arch.uses_sparse:
        block = embedding_block()
        by_node["sparse"] = block.flops_for(arch.schema, arch.embedding_params)
        emb_params = block.num_params_for(arch.schema, arch.embedding_params)
    for node in arch.nodes:
        by_node[node.id] = node.flops
    params = emb_params + sum(n.num_params for n in arch.nodes)
    return Cost(flops=sum(by_node.values()), params=params, embedding_params=emb_params, by_node=by_node)
