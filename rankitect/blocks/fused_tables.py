"""Embedding tables that update themselves in the backward pass: fbgemm's table-batched kernel.

All of a model's tables live in one `SplitTableBatchedEmbeddingBagsCodegen` (TBE), the kernel
under torchrec's FusedEmbeddingBagCollection and its sharded tables: one call looks up every
feature of a batch, and its backward applies the table optimizer to the rows the batch touched
only (never the whole table), with no gradient tensor for the tables. An update costs what a
batch touches, whatever the table's size.

Optimizers (`TABLE_OPTIMIZERS`): rowwise Adagrad (one accumulator per row: DLRM's usual choice,
the default), Adagrad and SGD run on CPU and CUDA; Adam (lazy: a row's moments move only when
the row is looked up) and rowwise Adam (Adam with one second moment per row) on CUDA only,
fbgemm having no CPU kernels for them. All are fbgemm's "exact" forms: duplicate ids in a batch
are summed before the update, so results do not depend on thread timing.

The weights are seen as one `embedding_bags.<table>.weight` parameter per table, views of the
kernel's storage, so `state_dict()` has torchrec's EmbeddingBagCollection's keys and the same
checkpoint loads into either form. The optimizer's state travels apart
(`optimizer_state_dict`). The tables are built on their device and stay there. The kernel takes
rows of a multiple of 4 floats: a width E that is not is padded with columns that stay zero
(their gradient is zero). The rowwise forms average a row's squared gradient over the padded
width, which would make their steps sqrt(padded / E) times larger: their learning rate is
scaled by sqrt(E / padded) to take the steps of unpadded rows.

fbgemm's Adam forms count their steps (bias correction) in every forward pass; a forward pass
without grad (evaluation) leaves the count as it was.
"""

from __future__ import annotations

import itertools
import math
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

import torch
from fbgemm_gpu.split_embedding_configs import EmbOptimType
from fbgemm_gpu.split_table_batched_embeddings_ops_common import EmbeddingLocation, PoolingMode
from fbgemm_gpu.split_table_batched_embeddings_ops_training import (
    ComputeDevice,
    SplitTableBatchedEmbeddingBagsCodegen,
)
from torch import nn

TABLE_OPTIMIZERS: dict[str, EmbOptimType] = {
    "rowwise_adagrad": EmbOptimType.EXACT_ROWWISE_ADAGRAD,
    "adagrad": EmbOptimType.EXACT_ADAGRAD,
    "sgd": EmbOptimType.EXACT_SGD,
    "adam": EmbOptimType.ADAM,
    "rowwise_adam": EmbOptimType.PARTIAL_ROWWISE_ADAM,
}
CUDA_ONLY_OPTIMIZERS = ("adam", "rowwise_adam")


@dataclass(frozen=True)
class TableOptimizer:
    """The optimizer applied inside the tables' backward pass, and its settings."""

    name: str = "rowwise_adagrad"
    lr: float = 0.05
    eps: float = 1e-8
    beta1: float = 0.9  # Adam forms only
    beta2: float = 0.999

    def check(self, device: torch.device) -> "TableOptimizer":
        """Self, or ValueError starting with the optimizer's name (callers prefix the config key)."""
        if self.name not in TABLE_OPTIMIZERS:
            raise ValueError(f"{self.name!r} is not one of {sorted(TABLE_OPTIMIZERS)}")
        if self.name in CUDA_ONLY_OPTIMIZERS and device.type != "cuda":
            raise ValueError(f"{self.name!r} runs on CUDA only (fbgemm has no CPU kernel for it); on "
                             f"{device.type} use rowwise_adagrad, adagrad or sgd")
        if not (self.lr > 0 and math.isfinite(self.lr)):
            raise ValueError(f"{self.name!r}: lr must be > 0, got {self.lr!r}")
        return self


_UNAVAILABLE: dict[str, str | None] = {}


def fused_tables_unavailable(device: torch.device) -> str | None:
    """Why fused tables cannot run on `device` (fbgemm's CPU-only build has no CUDA kernels),
    or None when they can; found by building a one-row table there once per device type."""
    if device.type not in _UNAVAILABLE:
        try:
            with torch.random.fork_rng(devices=[]):  # the probe's init leaves the seeded stream alone
                FusedTables(["probe"], [2], 4, "sum", TableOptimizer("sgd"), device)
            _UNAVAILABLE[device.type] = None
        except Exception as exc:  # noqa: BLE001 - whatever fbgemm raises, the answer is "not here"
            _UNAVAILABLE[device.type] = f"{type(exc).__name__}: {str(exc).splitlines()[0][:200]}"
    return _UNAVAILABLE[device.type]


def _pooling_mode(pooling: str) -> PoolingMode:
    return PoolingMode.SUM if pooling == "sum" else PoolingMode.MEAN


class FusedTables(nn.Module):
    """Tables `names` with `rows[i]` rows of `dims[i]` floats (one `dims` int: every table),
    one per feature, in one fbgemm kernel.

    forward(values int64 [N], offsets int64 [F * B + 1]) -> (B, sum dims): ids feature-major
    (as a KeyedJaggedTensor holds them), pooled by `pooling` ("sum" or "mean"). With grad
    enabled, backward updates the tables by `optimizer` at the learning rate last given to
    `set_lr`. Tables start uniform in +-sqrt(1 / rows), torchrec's default. A width that is not
    a multiple of 4 is padded with zeros in the kernel; the rowwise optimizers, whose row
    statistic then averages over the padding too, get their learning rate scaled back by
    sqrt(dim / padded width) (of the first padded table when widths differ).
    """

    def __init__(self, names: list[str], rows: list[int], dims: int | list[int], pooling: str,
                 optimizer: TableOptimizer, device: torch.device | None = None) -> None:
        super().__init__()
        device = torch.device(device or "cpu")
        if device.type == "cuda" and device.index is None:
            device = torch.device("cuda", torch.cuda.current_device())
        optimizer.check(device)
        location, compute = ((EmbeddingLocation.DEVICE, ComputeDevice.CUDA) if device.type == "cuda"
                             else (EmbeddingLocation.HOST, ComputeDevice.CPU))
        self.dims = [dims] * len(rows) if isinstance(dims, int) else list(dims)
        self.widths = [-(-d // 4) * 4 for d in self.dims]
        tbe = SplitTableBatchedEmbeddingBagsCodegen(
            [(r, w, location, compute) for r, w in zip(rows, self.widths)], optimizer=TABLE_OPTIMIZERS[optimizer.name],
            learning_rate=optimizer.lr, eps=optimizer.eps, beta1=optimizer.beta1, beta2=optimizer.beta2,
            pooling_mode=_pooling_mode(pooling), device=device)
        self._kernel = [tbe]  # a list: not a child module, its own buffers stay out of state_dict()
        self.device, self.optimizer, self.names = device, optimizer, list(names)
        rowwise = optimizer.name in ("rowwise_adagrad", "rowwise_adam")
        padded = [(d, w) for d, w in zip(self.dims, self.widths) if d != w]
        self._lr_scale = math.sqrt(padded[0][0] / padded[0][1]) if rowwise and padded else 1.0
        kept = [torch.arange(o, o + d) for o, d in zip([0, *itertools.accumulate(self.widths)], self.dims)]
        self._kept = torch.cat(kept).to(device) if padded else None  # the unpadded columns of the output
        self._counts_steps = optimizer.name in CUDA_ONLY_OPTIMIZERS
        self.set_lr(optimizer.lr)
        self.embedding_bags = nn.ModuleDict()
        with torch.no_grad():
            for name, r, dim, padded in zip(names, rows, self.dims, tbe.split_embedding_weights()):
                padded[:, dim:].zero_()
                weight = padded[:, :dim]
                bound = math.sqrt(1.0 / r)
                weight.uniform_(-bound, bound)
                holder = nn.Module()
                holder.register_parameter("weight", nn.Parameter(weight, requires_grad=False))
                self.embedding_bags[name] = holder

    @property
    def kernel(self) -> SplitTableBatchedEmbeddingBagsCodegen:
        return self._kernel[0]

    def forward(self, values: torch.Tensor, offsets: torch.Tensor) -> torch.Tensor:
        if self._counts_steps and not torch.is_grad_enabled():
            counters = [t for t in (getattr(self.kernel, "iter", None), getattr(self.kernel, "iter_cpu", None))
                        if isinstance(t, torch.Tensor)]
            before = [t.clone() for t in counters]
            pooled = self.kernel(indices=values, offsets=offsets)
            for counter, value in zip(counters, before):
                counter.copy_(value)
        else:
            pooled = self.kernel(indices=values, offsets=offsets)  # (B, F * width)
        return pooled if self._kept is None else pooled.index_select(1, self._kept)  # (B, sum widths) -> (B, sum dims)

    def set_lr(self, lr: float) -> None:
        self.kernel.set_learning_rate(lr * self._lr_scale)

    def _apply(self, fn: Callable[[torch.Tensor], torch.Tensor], recurse: bool = True) -> "FusedTables":
        """`.to()`, `.cuda()`, `.double()` and the like: the kernel's storage cannot move, so a
        conversion to the device and dtype the tables already have is a no-op, others an error."""
        probe = fn(torch.zeros(1, device=self.device))
        if probe.device != self.device or probe.dtype != torch.float32:
            raise RuntimeError(f"fused embedding tables live on {self.device} in float32 and cannot be "
                               f"moved to {probe.device} / {probe.dtype}; build the model on that device")
        return self

    def _states(self) -> list[list[torch.Tensor]]:
        """Each table's optimizer state tensors (views); SGD has none."""
        return list(self.kernel.split_optimizer_states()) or [[] for _ in self.names]

    def optimizer_state_dict(self) -> dict[str, Any]:
        """The optimizer's state: its name, and per table its state tensors (copies) and step."""
        states = {name: [s.detach().to("cpu", copy=True) for s in table_states]
                  for name, table_states in zip(self.names, self._states())}
        return {"optimizer": self.optimizer.name, "states": states,
                "iter": self.kernel.iter.detach().cpu().clone()}

    def load_optimizer_state_dict(self, state: dict[str, Any]) -> None:
        """Restore what `optimizer_state_dict` gave; ValueError if it is of another optimizer
        or other tables."""
        if state.get("optimizer") != self.optimizer.name or sorted(state.get("states", {})) != sorted(self.names):
            raise ValueError(f"table optimizer state of {state.get('optimizer')!r} over tables "
                             f"{sorted(state.get('states', {}))} does not fit {self.optimizer.name!r} over "
                             f"{sorted(self.names)}")
        with torch.no_grad():
            for name, table_states in zip(self.names, self._states()):
                saved = state["states"][name]
                if len(saved) != len(table_states):
                    raise ValueError(f"table {name!r}: {len(saved)} optimizer states saved, "
                                     f"{len(table_states)} expected")
                for target, value in zip(table_states, saved):
                    target.copy_(value.reshape(target.shape))
            self.kernel.iter.copy_(state["iter"].to(self.kernel.iter.device))
