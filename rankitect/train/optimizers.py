"""The optimizer of a training run: dense parameters by `optimizer`, tables by `embedding_optimizer`.

With fused tables (the default, `embedding_optimizer` one of rankitect.blocks.fused_tables'
TABLE_OPTIMIZERS) the tables update themselves inside the backward pass, touching only the rows
a batch looked up; `TablesOptimizer` is their face towards the Trainer: it carries their
learning rate (pushed into the kernel at `zero_grad`, before the backward that uses it, as
torchrec's fused optimizers do) and their state for checkpoints. With `embedding_optimizer:
dense` the tables are ordinary parameters of the dense optimizer: every row moves at every
step (Adam), which costs what the tables hold, not what a batch touches.

Every param group carries `base_lr`, the rate the lr schedule scales.
"""

from __future__ import annotations

import contextlib
import warnings
from collections.abc import Iterator
from typing import Any

import torch
from torch import nn

from rankitect.blocks.embedding import EmbeddingModule
from rankitect.blocks.fused_tables import FusedTables, TableOptimizer, fused_tables_unavailable
from rankitect.errors import ConfigError
from rankitect.train.config import TrainConfig, make_optimizer

_WARNED: set[str] = set()


class TablesOptimizer:
    """The learning rate and state of fused tables behind torch.optim.Optimizer's interface."""

    def __init__(self, tables: FusedTables) -> None:
        self.tables = tables
        lr = tables.optimizer.lr
        self.param_groups: list[dict[str, Any]] = [{"params": [], "lr": lr, "base_lr": lr}]

    def zero_grad(self, set_to_none: bool = True) -> None:
        self.tables.set_lr(self.param_groups[0]["lr"])

    def step(self) -> None:
        """Nothing: the tables stepped in the backward, at the rate `zero_grad` gave them."""

    def state_dict(self) -> dict[str, Any]:
        return {"lr": self.param_groups[0]["lr"], **self.tables.optimizer_state_dict()}

    def load_state_dict(self, state: dict[str, Any]) -> None:
        self.tables.load_optimizer_state_dict(state)
        self.param_groups[0]["lr"] = state["lr"]
        self.tables.set_lr(state["lr"])


class SplitOptimizer:
    """`parts` (name -> an optimizer) behind the part of torch.optim.Optimizer's interface the
    Trainer uses (step, zero_grad, param_groups, state_dict / load_state_dict)."""

    def __init__(self, parts: dict[str, Any]) -> None:
        self.parts = parts

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
        base = [group["base_lr"] for group in self.param_groups]  # a state of an older version has none
        for name, part in self.parts.items():
            part.load_state_dict(state[name])
        for group, lr in zip(self.param_groups, base):
            group["base_lr"] = lr


def table_optimizer(cfg: TrainConfig, device: torch.device) -> TableOptimizer | None:
    """The fused tables' optimizer of `cfg` on `device`, or None for tables trained as dense
    parameters: asked for (`embedding_optimizer: dense`), or on a device where fbgemm has no
    kernels for fused tables (its CPU-only build on a CUDA machine), with one warning."""
    if cfg.embedding_optimizer == "dense":
        return None
    why = fused_tables_unavailable(device)
    if why is not None:
        if why not in _WARNED:
            _WARNED.add(why)
            warnings.warn(f"fused embedding tables are not available on {device} ({why}); the tables "
                          f"train as dense parameters with optimizer={cfg.optimizer!r} instead, which "
                          f"updates every row at every step", RuntimeWarning, stacklevel=2)
        return None
    try:
        return TableOptimizer(cfg.embedding_optimizer, cfg.embedding_lr).check(device)
    except ValueError as exc:
        raise ConfigError(f"embedding_optimizer={exc}") from None


@contextlib.contextmanager
def tables_frozen(model: nn.Module, frozen: bool = True) -> Iterator[None]:
    """Inside, `model`'s embedding lookups run without grad when `frozen`: a backward then
    neither updates fused tables (which update in any backward through them) nor computes
    gradients for plain ones. For steps that train other parameters only."""
    embeddings = [m for m in model.modules() if isinstance(m, EmbeddingModule)] if frozen else []
    for embedding in embeddings:
        embedding.frozen = True
    try:
        yield
    finally:
        for embedding in embeddings:
            embedding.frozen = False


def embedding_training(model: nn.Module, cfg: TrainConfig) -> str:
    """How `model`'s tables train, for metrics.json: "fused rowwise_adagrad, lr 0.05", "dense
    parameters of adam" (asked for, or the fallback where fused tables cannot run), or "none"."""
    fused = fused_tables_of(model)
    if fused:
        return f"fused {fused[0].optimizer.name}, lr {fused[0].optimizer.lr:g}"
    if any(isinstance(m, EmbeddingModule) for m in model.modules()):
        return f"dense parameters of {cfg.optimizer}, lr {cfg.lr:g}"
    return "none"


def fused_tables_of(model: nn.Module) -> list[FusedTables]:
    return [m for m in model.modules() if isinstance(m, FusedTables)]


def model_optimizer(model: nn.Module, cfg: TrainConfig, device: torch.device,
                    exclude: list[nn.Parameter] | None = None) -> SplitOptimizer:
    """The optimizer of `model` under `cfg`, over its parameters but `exclude` (e.g. a DNAS
    supernet's architecture logits). A model whose tables are plain while `cfg` asks for fused
    ones has them fused here (build it with the table optimizer to avoid holding the tables
    twice for a moment); a model already fused must be so with `cfg`'s optimizer."""
    wanted = table_optimizer(cfg, device)
    for embedding in (m for m in model.modules() if isinstance(m, EmbeddingModule)):
        if wanted is not None and not embedding.fused:
            embedding.fuse(wanted)
        elif embedding.fused and (wanted is None or embedding.ebc.optimizer != wanted):
            raise ValueError(f"the model's tables are fused with {embedding.ebc.optimizer}, the training "
                             f"config asks for {wanted or 'dense tables'}")
    parts: dict[str, Any] = {}
    excluded = {id(p) for p in exclude or ()}
    dense = [p for p in model.parameters() if p.requires_grad and id(p) not in excluded]
    if dense:
        parts["dense"] = make_optimizer(dense, cfg)
        for group in parts["dense"].param_groups:
            group["base_lr"] = cfg.lr
    for i, tables in enumerate(fused_tables_of(model)):
        parts["tables" if i == 0 else f"tables{i}"] = TablesOptimizer(tables)
    return SplitOptimizer(parts)
