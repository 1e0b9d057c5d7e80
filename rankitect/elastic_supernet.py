"""The weight-sharing supernet of any space that gives a `rankitect.elastic.Template`.

One embedding (the schema's tables at the space's pooling), the dense normalization, the dense
buckets' table when the space may use it, and the shared block weights. A path (a choices
mapping) is decoded by the space, validated, and run node by node with each block's own module
on its slices; `inherit` hands those slices out as the standalone model's state_dict.
"""

from __future__ import annotations

import json
from collections import OrderedDict
from collections.abc import Mapping
from typing import TYPE_CHECKING, Any

import torch
from torch import nn
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.arch.graph import INPUT_DENSE, INPUT_SPARSE
from rankitect.arch.validate import ValidatedArchitecture, validate
from rankitect.blocks.embedding import EmbeddingModule
from rankitect.dense_prep import DenseBuckets, DensePrep
from rankitect.elastic import ElasticWeights, Layout, Template, layouts
from rankitect.supernet import WeightSharingSupernet

if TYPE_CHECKING:
    from rankitect.space import SearchSpace

_PATHS = 4096


class ElasticBase(nn.Module):
    """What every supernet over a template holds: the embedding, the dense normalization, the
    dense buckets' table, and the shared block weights (`blocks`).

    `template.extra` may set "pooling" (the embedding's, default "sum") and "dense_buckets"
    (True when a path may feed the dense columns' buckets as rows). Paths whose embedding
    differs otherwise (rows, dim) are refused by the space before a supernet is built.
    """

    def __init__(self, space: SearchSpace, template: Template) -> None:
        super().__init__()
        schema = space.schema
        self.space = space
        self.embedding = EmbeddingModule(schema, schema.embedding_dim, template.extra.get("pooling", "sum"))
        self.register_buffer("dense_mean", torch.tensor([c.mean for c in schema.dense], dtype=torch.float32))
        self.register_buffer("dense_inv_std", torch.tensor([1.0 / c.std for c in schema.dense],
                                                           dtype=torch.float32))
        self.dense_prep = DensePrep(schema)
        self.dense_buckets = (DenseBuckets(schema, schema.embedding_dim)
                              if template.extra.get("dense_buckets") else None)
        self.blocks = ElasticWeights(template)
        self._paths: OrderedDict[str, tuple[ValidatedArchitecture, dict[str, Layout]]] = OrderedDict()

    def embed(self, sparse: KeyedJaggedTensor) -> torch.Tensor:
        """The lookup of the sparse columns: KJT -> (B, F, E)."""
        return self.embedding(sparse)

    def inputs(self, dense: torch.Tensor, embedded: torch.Tensor,
               validated: ValidatedArchitecture) -> dict[str, torch.Tensor]:
        """The graph inputs of a path, as `RankingModel.interact` makes them: dense (B, D)
        normalized, sparse (B, F (+ D buckets), E)."""
        values: dict[str, torch.Tensor] = {}
        buckets = self.dense_buckets is not None and validated.embedding_params.get("dense_buckets")
        clipped = self.dense_prep.clipped(dense) if validated.uses_dense or buckets else dense
        if validated.uses_dense:
            values[INPUT_DENSE] = self.dense_prep.normalized(clipped, self.dense_mean, self.dense_inv_std)
        if buckets:
            assert self.dense_buckets is not None
            embedded = torch.cat([embedded, self.dense_buckets(clipped)], 1)
        values[INPUT_SPARSE] = embedded
        return values

    def path(self, choices: Mapping[str, Any]) -> ValidatedArchitecture:
        """The validated architecture of `choices` (ConfigError from the space when they are bad)."""
        return self.compiled(choices)[0]

    def compiled(self, choices: Mapping[str, Any]) -> tuple[ValidatedArchitecture, dict[str, Layout]]:
        """The validated architecture of `choices` and the layouts of its values (cached: a
        training step of a path seen before decodes nothing)."""
        c = self.space.check_choices(choices)
        key = json.dumps(c, sort_keys=True)
        found = self._paths.get(key)
        if found is None:
            validated = validate(self.space.decode(c), self.space.schema)
            found = self._paths[key] = (validated, layouts(validated, self.blocks.template))
            if len(self._paths) > _PATHS:
                self._paths.popitem(last=False)
        return found


class ElasticSupernet(ElasticBase, WeightSharingSupernet):
    """forward(dense (B, D) stored columns, sparse KJT, choices) -> logits (B,) of that path."""

    def forward(self, dense: torch.Tensor, sparse: KeyedJaggedTensor,
                choices: Mapping[str, Any]) -> torch.Tensor:
        return self.interact(dense, self.embed(sparse), choices)

    def interact(self, dense: torch.Tensor, embedded: torch.Tensor,
                 choices: Mapping[str, Any]) -> torch.Tensor:
        """Everything after the lookup: dense (B, D), embedded (B, F, E) -> logits (B,)."""
        validated, lay = self.compiled(choices)
        return self.blocks.run(validated, lay, self.inputs(dense, embedded, validated))

    def inherit(self, choices: Mapping[str, Any]) -> dict[str, torch.Tensor]:
        """State dict of `build_model(space.decode(choices), schema)` holding the path's slices
        (copies, detached)."""
        validated, lay = self.compiled(choices)
        out: dict[str, torch.Tensor] = {"dense_mean": self.dense_mean, "dense_inv_std": self.dense_inv_std}
        if validated.uses_sparse:
            out |= self.embedding.state_dict(prefix="embedding.")
            if validated.embedding_params.get("dense_buckets"):
                assert self.dense_buckets is not None
                out |= self.dense_buckets.state_dict(prefix="dense_buckets.")
        out |= dict(self.blocks.state_of(validated, lay))
        return {k: v.detach().clone() for k, v in out.items()}
