"""Zero-cost (training-free) proxies that rank ranking-model architectures from one mini-batch.

Every proxy is `fn(target, batch_or_batches, seed) -> float` and follows one sign convention:
**higher = predicted better** (lower NE). They score a `ProxyTarget`, a small protocol that a
standalone `RankingModel` and one path through a weight-sharing supernet both fit:

    embed(sparse KJT) -> (B, F, E) or None            the embedding lookup
    interact(dense (B, D), embedded (B, F, E)) -> (B,) everything after it (logits)
    parameters                                        the weights that are scored

Adapting image-classification proxies to ranking models: ids are integers and take no
gradient, so proxies that need input gradients (jacob_cov) or all-ones inputs (synflow) act on
the embedded rows (B, F, E) and on the dense input after normalization. The loss is the
log-loss (binary cross-entropy with logits) on the batch's labels.

Everything runs on the target's device (CPU in practice) in train mode with the torch RNG
seeded from `seed` inside a forked RNG (the caller's RNG state is untouched); the modules'
train/eval modes, weights and `.grad` fields are as before afterwards (synflow's |w| and
float64 included). Not thread-safe: scoring temporarily changes module state.

Registry: `PROXIES[name](target, batches, seed)`, and `score(name, target, batches, seed)`
which checks the name (ValueError listing valid ones) and the number of batches.
"""

from __future__ import annotations

import contextlib
import functools
import math
from collections.abc import Callable, Iterable, Iterator, Sequence
from dataclasses import dataclass
from typing import Any

import torch
import torch.nn.functional as F
from torch import nn

from rankitect.data.batch import Batch
from rankitect.searchers.proxy_target import (  # noqa: F401  (ProxyTarget and the parameter helpers re-exported)
    EMBEDDING_MODULES,
    Grads,
    ProxyTarget,
    dense_norm,
    embedding_parameters,
    grads_of,
    log_loss,
    logits_of,
    loss_and_grads,
    normalized_dense,
    raw_dense,
    scored_parameters,
    scoring,
    trainable,
)
from rankitect.train.trainer import TrainingDiverged

JACOB_COV_K = 1e-5  # Mellor et al. 2021: -sum(log(eig + k) + 1 / (eig + k))
FR_EPS = 1e-10  # SiGeo reference code: log(|theta . g| + 1e-10)


# -- gradient-based proxies ------------------------------------------------------------------
def grad_norm(target: ProxyTarget, batch: Batch, seed: int = 0) -> float:
    """Sum over weight tensors of the L2 norm of the log-loss gradient, higher = better.

    score = sum_p ||dL/dp||_2, L = mean log-loss of the batch (Abdelfattah et al. 2021,
    "Zero-Cost Proxies for Lightweight NAS", ICLR; a tensor that gets no gradient adds 0).
    """
    with scoring(target, seed):
        _, _, grads = loss_and_grads(target, batch)
    return float(sum(g.norm(2).item() for g in grads if g is not None))


def snip(target: ProxyTarget, batch: Batch, seed: int = 0) -> float:
    """Connection sensitivity, higher = better: score = sum_w |w * dL/dw|.

    Lee et al. 2019, "SNIP: Single-shot Network Pruning based on Connection Sensitivity", ICLR;
    summed over all scored weights as in Abdelfattah et al. 2021. L = mean log-loss.
    """
    with scoring(target, seed):
        _, params, grads = loss_and_grads(target, batch)
    return float(sum((p.detach() * g).abs().sum().item() for p, g in zip(params, grads) if g is not None))


def _linear_layers(target: ProxyTarget) -> list[nn.Linear]:
    """The nn.Linear layers of the target's modules whose weight is scored."""
    scored = {id(p) for p in target.parameters}
    layers = {id(m): m for root in target.modules for m in root.modules()
              if isinstance(m, nn.Linear) and id(m.weight) in scored}
    return list(layers.values())


def fisher(target: ProxyTarget, batch: Batch, seed: int = 0) -> float:
    """Activation-level empirical Fisher information, higher = better.

    For each call of an nn.Linear layer with output activations a (B, ..., C) and per-example
    gradients g = d l_n / d a of the per-example log-loss l_n (loss summed over the batch, so
    g is not scaled by 1/B), per output channel c:
        Delta_c = 1/(2B) * sum_n (sum_s a_nsc * g_nsc)^2     (s: any middle dims, e.g. rows)
    and score = sum over layers and channels of Delta_c. This is the Fisher pruning signal of
    Theis et al. 2018 used as a NAS proxy by Turner et al. 2020 ("BlockSwap", ICLR) and
    Abdelfattah et al. 2021, with the hooked activation being the linear layer's output
    (before its activation function) as in their reference code. Layers called through
    `F.linear` instead of the module (e.g. sliced supernet weights) are not seen.
    """
    layers = _linear_layers(target)
    if not layers and not target.modules:
        raise ValueError("fisher needs target.modules to find nn.Linear layers; got none")
    outputs: list[torch.Tensor] = []

    def record(_module: nn.Module, _inputs: Any, output: torch.Tensor) -> None:
        outputs.append(output)

    handles = [layer.register_forward_hook(record) for layer in layers]
    try:
        with scoring(target, seed):
            loss = log_loss(target, batch, reduction="sum")
            grads = grads_of(loss, outputs)
    finally:
        for handle in handles:
            handle.remove()
    total = 0.0
    for act, grad in zip(outputs, grads):
        if grad is None:
            continue
        prod = (act.detach() * grad).reshape(act.shape[0], -1, act.shape[-1]).sum(1)  # (B, C)
        total += 0.5 * prod.pow(2).mean(0).sum().item()
    return total


# -- synflow ---------------------------------------------------------------------------------
def _interaction_tensors(target: ProxyTarget) -> tuple[list[torch.Tensor], list[torch.Tensor]]:
    """(parameters, floating buffers) of the target outside its embedding tables."""
    tables = {id(p) for root in target.modules for p in embedding_parameters(root)}
    table_buffers = {id(b) for root in target.modules for m in root.modules()
                     if isinstance(m, EMBEDDING_MODULES) for b in m.buffers()}
    params = {id(p): p for root in target.modules for p in root.parameters() if id(p) not in tables}
    params.update({id(p): p for p in target.parameters if id(p) not in tables})
    buffers = {id(b): b for root in target.modules for b in root.buffers()
               if b.is_floating_point() and id(b) not in table_buffers}
    return list(params.values()), list(buffers.values())


@contextlib.contextmanager
def _linearized(target: ProxyTarget) -> Iterator[None]:
    """Weights replaced by |w| in float64 (buffers cast to float64) for the block; the original
    tensors are put back afterwards, bit for bit."""
    params, buffers = _interaction_tensors(target)
    saved = [(t, t.data) for t in params + buffers]
    try:
        for p in params:
            p.data = p.data.abs().double()
        for b in buffers:
            b.data = b.data.double()
        yield
    finally:
        for tensor, data in saved:
            tensor.data = data


def synflow(target: ProxyTarget, batch: Batch, seed: int = 0) -> float:
    """Synaptic flow, higher = better (Tanaka et al. 2020, "Pruning neural networks without any
    data by iteratively conserving synaptic flow", NeurIPS).

    With every weight replaced by |w| and float64 arithmetic (products over layers overflow
    float32), one example of all-ones inputs is fed: dense = 1 after normalization (raw
    mean + std) and embedded rows = 1 (B=1, F, E); the embedding tables are bypassed.
    R = sum of the logits; score = sum_w |w * dR/dw|. Labels are not used; `batch` only gives
    the input shapes.
    """
    with torch.no_grad():
        embedded = target.embed(batch.sparse)
    device = batch.dense.device
    ones_dense = torch.ones(1, batch.dense.shape[1], dtype=torch.float64, device=device)
    ones_rows = (torch.ones(1, *embedded.shape[1:], dtype=torch.float64, device=device)
                 if embedded is not None else None)
    with scoring(target, seed), _linearized(target):
        params = trainable(target)
        logits = target.interact(raw_dense(target, ones_dense), ones_rows)
        grads = grads_of(logits.sum(), params)
        return float(sum((p.detach() * g).abs().sum().item() for p, g in zip(params, grads) if g is not None))


# -- jacob_cov -------------------------------------------------------------------------------
def _input_jacobian(target: ProxyTarget, batch: Batch) -> torch.Tensor:
    """(B, D + F*E): d logit_n / d [normalized dense_n, embedded_n] for each example n.

    Examples do not interact in these models, so one backward of sum(logits) gives every row.
    """
    with torch.no_grad():
        embedded = target.embed(batch.sparse)
    z = normalized_dense(target, batch.dense).detach().requires_grad_(True)
    inputs = [z]
    if embedded is not None:
        embedded = embedded.detach().requires_grad_(True)
        inputs.append(embedded)
    logits = target.interact(raw_dense(target, z), embedded)
    grads = grads_of(logits.sum(), inputs)
    rows = [torch.zeros_like(x) if g is None else g for x, g in zip(inputs, grads)]
    return torch.cat([r.reshape(r.shape[0], -1) for r in rows], dim=1)


def jacob_cov(target: ProxyTarget, batch: Batch, seed: int = 0) -> float:
    """Jacobian covariance, higher = better (Mellor et al. 2021, "Neural Architecture Search
    without Training", arXiv:2006.04647v1, the score also used by Abdelfattah et al. 2021).

    J (B, P): per example the gradient of its logit w.r.t. the concatenation of the normalized
    dense input and the embedded rows (P = D + F*E). C = corrcoef(J) (B, B) in float64, its
    eigenvalues lambda (clamped at 0); score = -sum_i (log(lambda_i + k) + 1 / (lambda_i + k)),
    k = 1e-5. Uncorrelated Jacobians (C near I) score high; a linear model, whose Jacobian is
    the same for every example, scores very low. An example with a constant Jacobian row
    (zero variance, e.g. a dead ReLU path) has an undefined correlation; it is counted as
    fully correlated (1), the conservative choice.
    """
    with scoring(target, seed):
        jac = _input_jacobian(target, batch).detach().double()
    if jac.shape[0] < 2:
        raise ValueError(f"jacob_cov needs a batch of >= 2 examples, got {jac.shape[0]}")
    corr = torch.nan_to_num(torch.corrcoef(jac), nan=1.0)
    eig = torch.linalg.eigvalsh(corr).clamp(min=0.0)
    return float(-(torch.log(eig + JACOB_COV_K) + 1.0 / (eig + JACOB_COV_K)).sum())


# -- multi-batch proxies: ZiCo and SiGeo ------------------------------------------------------
@dataclass(frozen=True)
class _GradStats:
    """Per-batch statistics of one target over several batches."""

    losses: list[float]  # mean log-loss of each batch
    params: list[nn.Parameter]  # the trainable scored weights
    grads: list[Grads]  # grads[b][i]: dL_b / d params[i], None when unused


def _grad_stats(target: ProxyTarget, batches: Sequence[Batch], seed: int, name: str) -> _GradStats:
    if len(batches) < 2:
        raise ValueError(f"{name} needs >= 2 batches (gradient statistics across batches), "
                         f"got {len(batches)}")
    losses, grads, params = [], [], []
    with scoring(target, seed):
        for batch in batches:
            loss, params, batch_grads = loss_and_grads(target, batch)
            losses.append(loss)
            grads.append(batch_grads)
    return _GradStats(losses, params, grads)


def _zico_of(stats: _GradStats) -> float:
    """sum over weight matrices of log(sum_w mean_b|g_bw| / std_b(g_bw)), over w with std > 0."""
    total = 0.0
    for i, param in enumerate(stats.params):
        per_batch = [g[i] for g in stats.grads]
        if param.dim() < 2 or all(g is None for g in per_batch):
            continue
        stacked = torch.stack([torch.zeros_like(param) if g is None else g for g in per_batch])
        stacked = stacked.reshape(len(per_batch), -1).double()
        std = stacked.std(dim=0, correction=0)
        keep = std > 0
        ratio = (stacked.abs().mean(dim=0)[keep] / std[keep]).sum().item()
        if ratio > 0:
            total += math.log(ratio)
    return total


def zico(target: ProxyTarget, batches: Sequence[Batch], seed: int = 0) -> float:
    """ZiCo, higher = better (Li et al. 2023, "ZiCo: Zero-shot NAS via Inverse Coefficient of
    Variation on Gradients", ICLR).

    g_bw = dL_b/dw, the mean log-loss gradient of batch b (>= 2 batches). For each weight
    matrix theta (scored parameters with >= 2 dims, as the reference code takes the Linear /
    Conv weights and skips biases):
        score = sum_theta log( sum_{w in theta, std>0} mean_b |g_bw| / std_b(g_bw) )
    with the population std (ddof 0) as in the reference code; a matrix whose sum is 0 adds 0.
    """
    return _zico_of(_grad_stats(target, batches, seed, "zico"))


@dataclass(frozen=True)
class SiGeoWeights:
    """lambda_1..3 of SiGeo. Defaults 1, 1, 1: the defaults of `compute_zero_shot_metric` in the
    authors' code (zico_coef = fr_coef = loss_coef = 1). The paper finds the loss term useful
    only after a warm-up (its zero-shot example sets loss_coef = 0: pass `loss=0.0` there)."""

    zico: float = 1.0
    fisher_rao: float = 1.0
    loss: float = 1.0


def _log_fisher_rao_of(stats: _GradStats) -> float:
    """log ||theta||_fr with ||theta||_fr^2 ~= mean_b (sum_w w * dL_b/dw)^2."""
    terms = []
    for grads in stats.grads:
        inner = sum((p.detach().double() * g.double()).sum() for p, g in zip(stats.params, grads)
                    if g is not None)
        terms.append(float(inner) ** 2)
    return math.log(math.sqrt(sum(terms) / len(terms)) + FR_EPS)


def sigeo(target: ProxyTarget, batches: Sequence[Batch], seed: int = 0,
          weights: SiGeoWeights = SiGeoWeights()) -> float:
    """SiGeo, higher = better (Pan et al. 2023, "SiGeo: Sub-One-Shot NAS via Information Theory
    and Geometry of Loss Landscape"); meant to be computed after a short `warm_up`.

        score = lambda_1 * ZiCo + lambda_2 * log ||theta||_fr - lambda_3 * L_train
    ZiCo as in `zico` over the same batches; L_train = mean over batches of the batch log-loss
    at the current weights; the Fisher-Rao norm (Liang et al. 2019, ||theta||_fr^2 =
    E[<theta, grad l>^2]) is approximated per batch with the batch-mean gradient:
    ||theta||_fr^2 ~= mean_b (sum_w w * dL_b/dw)^2, and enters through its log (plus 1e-10),
    as log|theta . g| in the authors' code. Unlike the authors' code, no optimizer step is
    taken between the batches: scoring leaves the weights as they are.
    """
    stats = _grad_stats(target, batches, seed, "sigeo")
    loss = sum(stats.losses) / len(stats.losses)
    return (weights.zico * _zico_of(stats) + weights.fisher_rao * _log_fisher_rao_of(stats)
            - weights.loss * loss)


# -- warm-up ---------------------------------------------------------------------------------
def warm_up(model: nn.Module, loader_batches: Iterable[Batch], steps: int, lr: float, seed: int) -> None:
    """Train `model(dense, sparse) -> logits (B,)` in place for up to `steps` Adam steps of
    log-loss, one per batch of `loader_batches` (fewer when the batches run out).

    The torch RNG is seeded from `seed` in a forked RNG; the model's train/eval mode is restored
    and no `.grad` is left behind. TrainingDiverged when the loss becomes NaN or infinite.
    """
    if steps < 0:
        raise ValueError(f"warm_up: steps must be >= 0, got {steps=}")
    if not lr > 0:
        raise ValueError(f"warm_up: lr must be > 0, got {lr=}")
    params = [p for p in model.parameters() if p.requires_grad]
    if steps == 0 or not params:
        return
    modes = [(m, m.training) for m in model.modules()]
    optimizer = torch.optim.Adam(params, lr=lr)
    with torch.random.fork_rng(devices=[]):
        torch.manual_seed(seed)
        model.train()
        try:
            for step, batch in zip(range(steps), loader_batches):
                loss = F.binary_cross_entropy_with_logits(model(batch.dense, batch.sparse), batch.labels)
                if not torch.isfinite(loss):
                    raise TrainingDiverged(f"warm_up: the loss became {loss.item()} at step {step + 1}; "
                                           f"try a lower learning rate ({lr=})")
                optimizer.zero_grad(set_to_none=True)
                loss.backward()
                optimizer.step()
        finally:
            optimizer.zero_grad(set_to_none=True)
            for module, training in modes:
                module.training = training


# -- registry --------------------------------------------------------------------------------
Proxy = Callable[[ProxyTarget, Sequence[Batch], int], float]
SingleBatchProxy = Callable[[ProxyTarget, Batch, int], float]


def _on_first_batch(fn: SingleBatchProxy) -> Proxy:
    """A single-batch proxy as a registry entry: it scores the first of the batches."""

    @functools.wraps(fn)
    def proxy(target: ProxyTarget, batches: Sequence[Batch], seed: int = 0) -> float:
        return fn(target, batches[0], seed)

    return proxy


PROXIES: dict[str, Proxy] = {
    "grad_norm": _on_first_batch(grad_norm),
    "snip": _on_first_batch(snip),
    "synflow": _on_first_batch(synflow),
    "fisher": _on_first_batch(fisher),
    "jacob_cov": _on_first_batch(jacob_cov),
    "zico": zico,
    "sigeo": sigeo,
}
MIN_BATCHES: dict[str, int] = {"zico": 2, "sigeo": 2}  # the others use the first batch only


def proxy_names() -> list[str]:
    return sorted(PROXIES)


def score(name: str, target: ProxyTarget, batches: Batch | Sequence[Batch], seed: int = 0) -> float:
    """Proxy `name` of `target` (higher = predicted better). Single-batch proxies use the first
    batch; zico and sigeo use all (>= 2). ValueError for an unknown name (listing the valid
    ones) or too few batches."""
    if name not in PROXIES:
        raise ValueError(f"unknown proxy {name!r}; valid proxies: {proxy_names()}")
    listed = [batches] if isinstance(batches, Batch) else list(batches)
    need = MIN_BATCHES.get(name, 1)
    if len(listed) < need:
        raise ValueError(f"proxy {name!r} needs >= {need} batches, got {len(listed)}")
    return PROXIES[name](target, listed, seed)
