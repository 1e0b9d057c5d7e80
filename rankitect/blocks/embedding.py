"""The embedding lookup: raw sparse ids (KeyedJaggedTensor) -> (B, F, E), one table per column.

It is the architecture's `embedding` entry rather than a DAG node: its output is the DAG's
`sparse` input. Its cost depends on the schema (hash sizes, distinct ids, ids per row), so it
has schema-taking methods next to the usual ones. Table sizes: rankitect.blocks.table_rows.
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn
from torchrec.modules.embedding_configs import EmbeddingBagConfig, PoolingType
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.blocks.base import Block, ShapeError
from rankitect.blocks.embedding_dims import Widen, column_dims, widen_cost
from rankitect.blocks.fused_tables import FusedTables, TableOptimizer
from rankitect.blocks.registry import register_block
from rankitect.blocks.spec import BlockSpec, HyperParam, Shape
from rankitect.blocks.table_rows import AUTO, MIN_ROWS, table_rows
from rankitect.dense_prep import bucket_flops, bucket_sizes
from rankitect.schema import Schema

EMBEDDING = "embedding"
MAX_ROWS = 1 << 40


class IdRemap(nn.Module):
    """ids in [0, hash_size) -> rows in [0, rows) of each feature's table (see table_rows):
    `0 if id == 0 else 1 + (id - 1) % (rows - 1)`, which leaves ids below `rows` as they are.

    forward(values int64 [N] feature-major, lengths [F, B] or [F * B]: ids per (feature, row))
    -> int64 [N]. `active` is False when every table has hash_size rows: the ids pass as they are.
    """

    def __init__(self, hash_sizes: list[int], rows: list[int]) -> None:
        super().__init__()
        self.active = any(r < h for r, h in zip(rows, hash_sizes))
        self.register_buffer("moduli", torch.tensor([r - 1 for r in rows], dtype=torch.int64), persistent=False)

    def forward(self, values: torch.Tensor, lengths: torch.Tensor) -> torch.Tensor:
        if not self.active:
            return values
        per_feature = lengths.reshape(self.moduli.shape[0], -1).sum(1)  # (F,)
        moduli = torch.repeat_interleave(self.moduli, per_feature, output_size=values.shape[0])
        return torch.where(values > 0, torch.remainder(values - 1, moduli) + 1, values)


class EmbeddingModule(nn.Module):
    """KJT with the schema's sparse keys -> (B, F, E), rows in schema order.

    `rows` gives each column's table size (default: `table_rows(schema)`). With `optimizer`
    the tables are FusedTables, trained inside the backward pass by that optimizer; without,
    torchrec's EmbeddingBagCollection, whose tables are ordinary parameters. Both sit at
    `self.ebc` with the same state_dict keys, and compute the same outputs from the same weights.
    """

    def __init__(self, schema: Schema, dim: int, pooling: str, device: torch.device | None = None,
                 rows: tuple[int, ...] | None = None, optimizer: TableOptimizer | None = None,
                 dims: tuple[int, ...] | None = None) -> None:
        super().__init__()
        self.num_features, self.dim, self.pooling = schema.num_sparse, dim, pooling
        self.keys = schema.sparse_names
        self.frozen = False  # lookups without grad (rankitect.train.optimizers.tables_frozen)
        self.rows = tuple(rows) if rows is not None else table_rows(schema)
        self.dims = tuple(dims) if dims is not None else (dim,) * self.num_features
        self.widen = Widen(self.table_names, self.dims, dim, device)
        self.remap = IdRemap([c.hash_size for c in schema.sparse], list(self.rows))
        if device is not None:
            self.remap.to(device)
        self.ebc: EmbeddingBagCollection | FusedTables
        if optimizer is not None:
            self.ebc = FusedTables(self.table_names, list(self.rows), list(self.dims), pooling, optimizer, device)
        else:
            self.ebc = EmbeddingBagCollection(tables=self._configs(), device=device)

    @property
    def table_names(self) -> list[str]:
        return [f"t_{k}" for k in self.keys]

    @property
    def fused(self) -> bool:
        return isinstance(self.ebc, FusedTables)

    def _configs(self) -> list[EmbeddingBagConfig]:
        pool = PoolingType.SUM if self.pooling == "sum" else PoolingType.MEAN
        return [EmbeddingBagConfig(name=t, embedding_dim=d, num_embeddings=r, feature_names=[k], pooling=pool)
                for t, k, r, d in zip(self.table_names, self.keys, self.rows, self.dims)]

    def fuse(self, optimizer: TableOptimizer) -> None:
        """Turn plain tables into FusedTables trained by `optimizer`, keeping their weights (for
        a moment both copies exist: build with `optimizer` to avoid that)."""
        if self.fused:
            raise ValueError("the tables are fused already")
        weights = {n: bag.weight.detach() for n, bag in self.ebc.embedding_bags.items()}
        device = next(iter(weights.values())).device if weights else None
        fused = FusedTables(self.table_names, list(self.rows), list(self.dims), self.pooling, optimizer, device)
        with torch.no_grad():
            for name, bag in fused.embedding_bags.items():
                bag.weight.copy_(weights[name])
        self.ebc = fused

    def forward(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        if self.frozen and torch.is_grad_enabled():
            with torch.no_grad():
                return self._lookup(sparse)
        return self._lookup(sparse)

    def _lookup(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        values, lengths = sparse.values(), sparse.lengths()
        ids = self.remap(values, lengths)
        if isinstance(self.ebc, FusedTables):
            offsets = torch.ops.fbgemm.asynchronous_complete_cumsum(lengths)
            return self.widen(self.ebc(ids, offsets.to(ids.dtype)))  # (B, sum dims) -> (B, F, E)
        if ids is not values:
            sparse = KeyedJaggedTensor(keys=sparse.keys(), values=ids, lengths=lengths, stride=sparse.stride())
        return self.widen(self.ebc(sparse).values())


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
            HyperParam("dense_buckets", "bool", False, "also feed each dense column as a categorical "
                       "feature: its quantile bucket (schema.json's buckets), embedded in a table of "
                       "its own; these rows follow the sparse columns' in the sparse input"),
            HyperParam("rows", "table_rows", AUTO, "rows of each column's table: \"auto\" (from the "
                       "column's distinct ids, capped at its hash_size), one number for every column, "
                       "or {column: rows}; at most the column's hash_size", low=MIN_ROWS, high=MAX_ROWS),
            HyperParam("dims", "table_rows", AUTO, "width of each column's table: \"auto\" (E), one number "
                       "for every column, or {column: width}; a multiple of 4 up to E, a narrower column "
                       "projected to E", low=4, high=1024),
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
        """(F, E): the sparse columns' rows, then with `dense_buckets` one per dense column."""
        bucket_rows = schema.num_dense if p["dense_buckets"] else 0
        return (schema.num_sparse + bucket_rows, resolved_dim(schema, p))

    def flops_for(self, schema: Schema, p: dict[str, Any]) -> int:
        """Pooling adds (ids - 1) * E per column (+ E divisions for mean); lookups are free;
        dense buckets cost their search (rankitect.dense_prep.bucket_flops)."""
        e = resolved_dim(schema, p)
        dims = column_dims(schema, p["dims"], e)
        total = widen_cost(dims, e)[0]
        for col, d in zip(schema.sparse, dims):
            total += round(max(col.avg_len - 1.0, 0.0) * d)
            if p["pooling"] == "mean":
                total += d
        if p["dense_buckets"]:
            total += bucket_flops(schema)
        return total

    def num_params_for(self, schema: Schema, p: dict[str, Any]) -> int:
        """Tables (rows x width each), the narrowed columns' projections, the buckets' table."""
        e = resolved_dim(schema, p)
        dims = column_dims(schema, p["dims"], e)
        tables = sum(r * d for r, d in zip(table_rows(schema, p["rows"]), dims))
        buckets = sum(bucket_sizes(schema)) * e if p["dense_buckets"] else 0
        return tables + widen_cost(dims, e)[1] + buckets

    def build_for(self, schema: Schema, p: dict[str, Any], device: torch.device | None = None,
                  optimizer: TableOptimizer | None = None) -> EmbeddingModule:
        """The lookup module; with `optimizer`, on fused tables trained by it."""
        e = resolved_dim(schema, p)
        return EmbeddingModule(schema, e, p["pooling"], device, rows=table_rows(schema, p["rows"]),
                               optimizer=optimizer, dims=column_dims(schema, p["dims"], e))
