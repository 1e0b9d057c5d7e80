"""The optimizer of a training run, with the option of row-sparse embedding updates.

Plain (`sparse_embeddings` off): one optimizer over every parameter; an embedding table's
gradient is dense (every row, zeros for the rows the batch did not look up), and the update
touches the whole table each step. With `sparse_embeddings`, every `nn.EmbeddingBag` of the
model (torchrec's EmbeddingBagCollection is made of them) returns row-sparse gradients and
the tables get an optimizer of their own that updates only the rows a batch used: Adam ->
torch.optim.SparseAdam (lazy Adam: a row's moments move only when it is seen), Adagrad and
SGD -> the same optimizer, which takes sparse gradients. Dense parameters keep the chosen
optimizer. Measured on an H200 (benchmarks/bench_gpu.py; 26 tables x 100k rows, batch 8192):
with SGD a training step is 1.5-1.6x faster than with dense gradients, but torch's SparseAdam
and sparse Adagrad run many small kernels per table and are slower than their dense forms
(0.47x and 0.67x of dense Adam), so the setting pays with SGD and is off by default. Its NE
matched dense Adam's there (0.72611 both, mean of 2 seeds).
"""

from __future__ import annotations

from typing import Any

import torch
from torch import nn

from rankitect.train.config import TrainConfig, make_optimizer


class SplitOptimizer:
    """`dense` over the dense parameters and `tables` over the embedding tables, behind the part
    of torch.optim.Optimizer's interface the Trainer uses (step, zero_grad, param_groups,
    state_dict / load_state_dict)."""

    def __init__(self, dense: torch.optim.Optimizer | None, tables: torch.optim.Optimizer) -> None:
        self.parts = {"tables": tables} if dense is None else {"dense": dense, "tables": tables}

    @property
    def param_groups(self) -> list[dict[str, Any]]:
        return [group for part in self.parts.values() for group in part.param_groups]

    def zero_grad(self, set_to_none: bool = True) -> None:
        for part in self.parts.values():
            part.zero_grad(set_to_none=set_to_none)

    def step(self) -> None:
        for part in self.parts.values():
            part.step()

    def state_dict(self) -> dict[str, Any]:
        return {name: part.state_dict() for name, part in self.parts.items()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        if set(state) != set(self.parts):
            raise ValueError(f"optimizer state holds {sorted(state)}, this optimizer has {sorted(self.parts)}")
        for name, part in self.parts.items():
            part.load_state_dict(state[name])


def embedding_tables(model: nn.Module) -> list[nn.EmbeddingBag]:
    return [m for m in model.modules() if isinstance(m, nn.EmbeddingBag)]


def model_optimizer(model: nn.Module, cfg: TrainConfig) -> torch.optim.Optimizer | SplitOptimizer:
    """The optimizer of `model` under `cfg` (see the module doc). With sparse_embeddings it sets
    `sparse=True` on the model's embedding bags (only their backward changes)."""
    bags = embedding_tables(model)
    if not cfg.sparse_embeddings or not bags:
        return make_optimizer(model.parameters(), cfg)
    for bag in bags:
        bag.sparse = True
    tables = [bag.weight for bag in bags]
    table_ids = {id(t) for t in tables}
    dense = [p for p in model.parameters() if id(p) not in table_ids]
    # weight_decay is 0 with sparse tables (TrainConfig.check), so adagrad and sgd are make_optimizer's
    table_opt = torch.optim.SparseAdam(tables, lr=cfg.lr) if cfg.optimizer == "adam" else make_optimizer(tables, cfg)
    return SplitOptimizer(make_optimizer(dense, cfg) if dense else None, table_opt)
