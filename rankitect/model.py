"""The model builder: (architecture, schema) -> a torch module over the embedding tables and blocks."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE, Architecture
from rankitect.arch.validate import ValidatedArchitecture, embedding_block, validate
from rankitect.blocks import get_block
from rankitect.blocks.fused_tables import TableOptimizer
from rankitect.dense_prep import DenseBuckets, DensePrep
from rankitect.schema import Schema


class RankingModel(nn.Module):
    """forward(dense (B, D) raw float columns, sparse KJT of the schema's keys) -> logits (B,).

    Dense inputs are clipped, scaled and normalized as the schema says inside the model
    (rankitect.dense_prep), so the model takes columns exactly as the dataset stores them; with
    `embedding.dense_buckets` their quantile buckets' embeddings follow the sparse columns' rows. With `table_optimizer` the embedding
    tables are fused (trained inside the backward pass by that optimizer, see
    rankitect.blocks.fused_tables); without, they are ordinary parameters.
    """

    def __init__(self, validated: ValidatedArchitecture, device: torch.device | None = None,
                 table_optimizer: TableOptimizer | None = None) -> None:
        super().__init__()
        schema = validated.schema
        self.validated = validated
        self.register_buffer("dense_mean", torch.tensor([c.mean for c in schema.dense],
                                                        dtype=torch.float32, device=device))
        self.register_buffer("dense_inv_std", torch.tensor([1.0 / c.std for c in schema.dense],
                                                           dtype=torch.float32, device=device))
        self.dense_prep = DensePrep(schema, device)
        self.embedding = (embedding_block().build_for(schema, validated.embedding_params, device, table_optimizer)
                          if validated.uses_sparse and schema.num_sparse else None)
        self.dense_buckets = (DenseBuckets(schema, validated.embedding_dim, device)
                              if validated.uses_sparse and validated.embedding_params["dense_buckets"] else None)
        self.blocks = nn.ModuleDict({
            n.id: get_block(n.block).build(list(n.input_shapes), n.params) for n in validated.nodes})
        if device is not None:
            self.blocks.to(device)
        self.plan = [(n.id, n.inputs) for n in validated.nodes]
        self.output = validated.output

    @property
    def architecture(self) -> Architecture:
        return self.validated.arch

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor) -> torch.Tensor:
        embedded = self.embedding(sparse) if self.embedding is not None else None
        return self.interact(dense, embedded)

    def interact(self, dense: torch.Tensor, embedded: torch.Tensor | None) -> torch.Tensor:
        """Everything after the lookup: dense (B, D) stored columns, embedded (B, F, E) -> logits (B,)."""
        values: dict[str, torch.Tensor] = {}
        clipped = self.dense_prep.clipped(dense) if self.validated.uses_dense or self.dense_buckets is not None else dense
        if self.validated.uses_dense:
            values[INPUT_DENSE] = self.dense_prep.normalized(clipped, self.dense_mean, self.dense_inv_std)
        if self.dense_buckets is not None:
            buckets = self.dense_buckets(clipped)  # (B, D, E)
            embedded = buckets if embedded is None else torch.cat([embedded, buckets], 1)
        if embedded is not None:
            values[INPUT_SPARSE] = embedded
        for node_id, inputs in self.plan:
            values[node_id] = self.blocks[node_id](*[values[i] for i in inputs])
        return values[self.output].squeeze(1)


def build_model(arch: Architecture, schema: Schema, device: torch.device | str | None = None,
                table_optimizer: TableOptimizer | None = None) -> RankingModel:
    """Validate `arch` for `schema` (ArchitectureError naming node and field) and build it on
    `device`; with `table_optimizer`, on fused embedding tables trained by it."""
    return RankingModel(validate(arch, schema), torch.device(device) if device is not None else None,
                        table_optimizer)
