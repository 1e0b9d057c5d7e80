"""What a zero-cost proxy scores (rankitect.searchers.proxies): `ProxyTarget`, the protocol a
standalone model and one supernet path both fit, and the machinery every proxy shares: scoring
under a forked RNG with module state restored, the log-loss, gradients, the dense input in and
out of its normalization.
"""

from __future__ import annotations

import contextlib
from collections.abc import Callable, Iterator, Mapping, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.data.batch import Batch
from rankitect.dense_prep import DensePrep
from rankitect.model import RankingModel

EMBEDDING_MODULES: tuple[type[nn.Module], ...] = (nn.Embedding, nn.EmbeddingBag, EmbeddingBagCollection)

Embed = Callable[[KeyedJaggedTensor], torch.Tensor | None]
Interact = Callable[[torch.Tensor, torch.Tensor | None], torch.Tensor]
Grads = list[torch.Tensor | None]


# -- the target protocol ---------------------------------------------------------------------
def embedding_parameters(module: nn.Module) -> list[nn.Parameter]:
    """Parameters of the embedding tables (nn.Embedding, nn.EmbeddingBag, torchrec EBC) in `module`."""
    seen: dict[int, nn.Parameter] = {}
    for sub in module.modules():
        if isinstance(sub, EMBEDDING_MODULES):
            seen.update({id(p): p for p in sub.parameters()})
    return list(seen.values())


def scored_parameters(module: nn.Module, include_embeddings: bool = False) -> list[nn.Parameter]:
    """Trainable parameters of `module`, without the embedding tables unless `include_embeddings`.

    Tables are left out by default: they hold most of a ranking model's weights (hash size x E
    per column) yet one batch touches only the few rows it looks up, so their gradients are
    mostly zero and their size would drown the interaction weights, which are what an
    architecture search changes.
    """
    tables = set() if include_embeddings else {id(p) for p in embedding_parameters(module)}
    return [p for p in module.parameters() if p.requires_grad and id(p) not in tables]


@dataclass(frozen=True)
class DenseNorm:
    """How `interact` turns stored dense columns into normalized ones: its DensePrep (clip,
    log1p) and the `dense_mean` / `dense_inv_std` buffers (D,)."""

    prep: DensePrep
    mean: torch.Tensor
    inv_std: torch.Tensor

    def normalize(self, dense: torch.Tensor) -> torch.Tensor:
        """Stored (B, D) -> normalized (B, D)."""
        return self.prep(dense, self.mean, self.inv_std)

    def stored(self, normalized: torch.Tensor) -> torch.Tensor:
        """Normalized (B, D) -> stored values that normalize back to it (inside the clip)."""
        return self.prep.inverse(normalized, self.mean, self.inv_std)


def dense_norm(module: nn.Module) -> DenseNorm | None:
    """The DenseNorm of a RankingModel-style module (`dense_prep`, `dense_mean`, `dense_inv_std`)."""
    prep = getattr(module, "dense_prep", None)
    mean, inv_std = getattr(module, "dense_mean", None), getattr(module, "dense_inv_std", None)
    if not (isinstance(prep, DensePrep) and isinstance(mean, torch.Tensor) and isinstance(inv_std, torch.Tensor)):
        return None
    return DenseNorm(prep, mean.detach(), inv_std.detach())


@dataclass
class ProxyTarget:
    """What a proxy scores: an embedding lookup, the interaction on top, and its weights.

    embed:      sparse KJT -> embedded (B, F, E), or None when the target uses no sparse input.
    interact:   (dense (B, D) raw columns, embedded (B, F, E) or None) -> logits (B,).
    parameters: the weights scored (sums run over these); by default the trainable parameters
                that are not embedding tables (see `scored_parameters`).
    modules:    the modules that own the weights: their train/eval mode is set and restored,
                synflow converts them, fisher hooks their nn.Linear layers.
    dense_norm: (mean (D,), std (D,)) when `interact` normalizes dense as (dense - mean) / std;
                synflow's all-ones input and jacob_cov's Jacobian are taken after that
                normalization. None: `interact` takes dense as it is.
    """

    embed: Embed
    interact: Interact
    parameters: list[nn.Parameter]
    modules: tuple[nn.Module, ...] = ()
    dense_norm: DenseNorm | None = None

    @staticmethod
    def from_model(model: RankingModel, include_embeddings: bool = False) -> "ProxyTarget":
        """The target of a standalone RankingModel (its `embedding` may be None)."""
        embedding = model.embedding

        def embed(sparse: KeyedJaggedTensor) -> torch.Tensor | None:
            return embedding(sparse) if embedding is not None else None

        return ProxyTarget(embed=embed, interact=model.interact,
                           parameters=scored_parameters(model, include_embeddings),
                           modules=(model,), dense_norm=dense_norm(model))

    @staticmethod
    def from_supernet(supernet: nn.Module, choices: Mapping[str, Any],
                      include_embeddings: bool = False) -> "ProxyTarget":
        """One path of a weight-sharing supernet with `embed(sparse)` and
        `interact(dense, embedded, choices)` methods. Every shared weight is listed; weights off
        the path get no gradient and add nothing to the sums."""
        path = dict(choices)
        if not callable(getattr(supernet, "embed", None)) or not callable(getattr(supernet, "interact", None)):
            raise TypeError(f"{type(supernet).__name__} has no embed(sparse) / "
                            f"interact(dense, embedded, choices) methods")

        def interact(dense: torch.Tensor, embedded: torch.Tensor | None) -> torch.Tensor:
            return supernet.interact(dense, embedded, path)

        return ProxyTarget(embed=supernet.embed, interact=interact,
                           parameters=scored_parameters(supernet, include_embeddings),
                           modules=(supernet,), dense_norm=dense_norm(supernet))


# -- shared machinery ------------------------------------------------------------------------
@contextlib.contextmanager
def scoring(target: ProxyTarget, seed: int) -> Iterator[None]:
    """Train mode and a seeded, forked torch RNG for the block; modes restored afterwards."""
    modes = [(m, m.training) for root in target.modules for m in root.modules()]
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        for root in target.modules:
            root.train()
        try:
            yield
        finally:
            for module, training in modes:
                module.training = training


def trainable(target: ProxyTarget) -> list[nn.Parameter]:
    return [p for p in target.parameters if p.requires_grad]


def logits_of(target: ProxyTarget, batch: Batch) -> torch.Tensor:
    """(B,) logits of the target on the batch."""
    return target.interact(batch.dense, target.embed(batch.sparse))


def log_loss(target: ProxyTarget, batch: Batch, reduction: str = "mean") -> torch.Tensor:
    return F.binary_cross_entropy_with_logits(logits_of(target, batch), batch.labels, reduction=reduction)


def grads_of(output: torch.Tensor, params: Sequence[torch.Tensor]) -> Grads:
    """d output / d p for each p (None where p does not reach `output`); .grad is not touched."""
    if not params:
        return []
    return list(torch.autograd.grad(output, list(params), allow_unused=True))


def loss_and_grads(target: ProxyTarget, batch: Batch) -> tuple[float, list[nn.Parameter], Grads]:
    """(mean log-loss, the trainable scored weights, dL/dw of each)."""
    params = trainable(target)
    loss = log_loss(target, batch)
    return float(loss.detach()), params, grads_of(loss, params)


def normalized_dense(target: ProxyTarget, dense: torch.Tensor) -> torch.Tensor:
    """Raw dense (B, D) -> the normalized values `interact` computes from it."""
    return dense if target.dense_norm is None else target.dense_norm.normalize(dense)


def raw_dense(target: ProxyTarget, normalized: torch.Tensor) -> torch.Tensor:
    """Normalized dense (B, D) -> raw columns `interact` normalizes back to `normalized`."""
    return normalized if target.dense_norm is None else target.dense_norm.stored(normalized)
