"""The embedding lookup: raw sparse ids (KeyedJaggedTensor) -> (B, F, E), one table per column.

It is the architecture's `embedding` entry rather than a DAG node: its output is the DAG's
`sparse` input. Its cost depends on the schema (hash sizes, ids per row), so it has
schema-taking methods next to the usual ones.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.blocks.base import Block, ShapeError
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape
from rankitect.schema import Schema

EMBEDDING = "embedding"


class EmbeddingModule(nn.Module):
    """KJT with the schema's sparse keys -> (B, F, E), rows in schema order."""

    def __init__(self, schema: Schema, dim: int, pooling: str,
                 device: torch.device | None = None) -> None:
        super().__init__()
        self.num_features, self.dim = schema.num_sparse, dim
        pool = PoolingType.SUM if pooling == "sum" else PoolingType.MEAN
        tables = [EmbeddingBagConfig(name=f"t_{c.name}", embedding_dim=dim,
                                     num_embeddings=c.hash_size, feature_names=[c.name],
                                     pooling=pool) for c in schema.sparse]
        self.ebc = EmbeddingBagCollection(tables=tables, device=device)

    def forward(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        return self.ebc(sparse).values().view(-1, self.num_features, self.dim)


def resolved_dim(schema: Schema, p: dict[str, Any]) -> int:
    return p["dim"] or schema.embedding_dim


@register_block
class Embedding(Block):
    spec = BlockSpec(
        name=EMBEDDING,
        doc="Embedding lookup of every sparse column with pooling over its ids: "
            "ids -> (B, F, E). Set through the architecture's 'embedding' entry.",
        params=(
            HyperParam("dim", "int", 0, "E; 0 takes the schema's embedding_dim", low=0, high=1024),
            HyperParam("pooling", "choice", "sum", "pooling over the ids of a row",
                       choices=("sum", "mean")),
        ),
        min_inputs=0,
        max_inputs=0,
        input_ranks=(),
        tags=("input",),
    )

    def _not_a_node(self) -> ShapeError:
        return ShapeError("block", "'embedding' is set by the architecture's 'embedding' entry, "
                                   "not used as a node; read its output as the input 'sparse'")

    def output_shape(self, inputs: list[Shape], p: dict[str, Any]) -> Shape:
        raise self._not_a_node()

    def flops(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        raise self._not_a_node()

    def num_params(self, inputs: list[Shape], p: dict[str, Any]) -> int:
        raise self._not_a_node()

    def build(self, inputs: list[Shape], p: dict[str, Any]) -> nn.Module:
        raise self._not_a_node()

    # -- schema-taking forms -------------------------------------------------------------
    def output_shape_for(self, schema: Schema, p: dict[str, Any]) -> Shape:
        return (schema.num_sparse, resolved_dim(schema, p))

    def flops_for(self, schema: Schema, p: dict[str, Any]) -> int:
        """Pooling adds (ids - 1) * E per column (+ E divisions for mean); lookups are free."""
        e = resolved_dim(schema, p)
        total = 0
        for col in schema.sparse:
            total += round(max(col.avg_len - 1.0, 0.0) * e)
            if p["pooling"] == "mean":
                total += e
        return total

    def num_params_for(self, schema: Schema, p: dict[str, Any]) -> int:
        return sum(c.hash_size for c in schema.sparse) * resolved_dim(schema, p)

    def build_for(self, schema: Schema, p: dict[str, Any],
                  device: torch.device | None = None) -> EmbeddingModule:
        return EmbeddingModule(schema, resolved_dim(schema, p), p["pooling"], device)
