"""The model builder: (architecture, schema) -> a torch module over the embedding tables and blocks."""

from __future__ import annotations

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE, Architecture
from rankitect.arch.validate import ValidatedArchitecture, embedding_block, validate
from rankitect.blocks import get_block
from rankitect.blocks.fused_tables import TableOptimizer
from rankitect.schema import Schema


class RankingModel(nn.Module):
    """forward(dense (B, D) raw float columns, sparse KJT of the schema's keys) -> logits (B,).

    Dense inputs are normalized with the schema's mean / std inside the model, so the model
    takes columns exactly as the dataset stores them. With `table_optimizer` the embedding
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
        self.embedding = (embedding_block().build_for(schema, validated.embedding_params, device, table_optimizer)
                          if validated.uses_sparse else None)
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
        """Everything after the lookup: dense (B, D), embedded (B, F, E) -> logits (B,)."""
        values: dict[str, torch.Tensor] = {INPUT_DENSE: (dense - self.dense_mean) * self.dense_inv_std}
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
