"""Training settings, checked once; nobody mutates them."""

from __future__ import annotations

import math
from dataclasses import asdict, dataclass
from typing import TYPE_CHECKING, Any

from rankitect.errors import ConfigError

if TYPE_CHECKING:  # torch is imported where a device or optimizer is made: the CLI's parsers read this module
    import torch

OPTIMIZERS = ("adam", "adagrad", "sgd")
# The table optimizers of fused tables (rankitect.blocks.fused_tables), and "dense": the tables
# as ordinary parameters of `optimizer`.
EMBEDDING_OPTIMIZERS = ("rowwise_adagrad", "adagrad", "sgd", "adam", "rowwise_adam", "dense")
LR_SCHEDULES = ("constant", "linear", "cosine")
PRECISIONS = ("fp32", "bf16")


@dataclass(frozen=True)
class TrainConfig:
    """The one set of training settings: `rankitect train`, search trials, baselines and
    supernets all start from these defaults (chosen by measurement: benchmarks/bench_defaults.py)."""

    epochs: int = 20  # at most: with validation dates a run stops early (early_stopping)
    batch_size: int = 512
    lr: float = 3e-3  # the dense parameters' (embedding_lr is the tables')
    optimizer: str = "adam"
    lr_schedule: str = "cosine"  # decay from lr to 0 over all steps; "constant" keeps lr
    weight_decay: float = 0.0
    seed: int = 0
    # With validation dates: stop after this many epochs in a row without a better validation
    # NE, and keep the best epoch's weights (rankitect.train.early_stopping); 0: train every epoch
    # and keep the last.
    early_stopping: int = 2
    device: str = "cpu"
    shuffle_buffer: int = 200_000  # rows; at least a batch is always shuffled
    checkpoint_every: int = 500  # steps between checkpoints; epoch ends always checkpoint
    eval_batch_size: int = 8192
    # "bf16": forward and loss under torch.autocast(bfloat16) on the training device: matrix
    # products run in bfloat16, parameters, optimizer state and the loss stay float32. On CUDA
    # that is mixed-precision training (tensor cores); on CPU torch's CPU autocast does the same
    # in software (runs anywhere, usually slower than fp32 without AMX / AVX512-BF16): use it
    # there to check a bf16 run, not for speed. Evaluation always runs in float32.
    precision: str = "fp32"
    # The embedding tables' optimizer, applied inside the backward pass to the rows a batch
    # touched (fused tables, rankitect.blocks.fused_tables; "adam" and "rowwise_adam" on CUDA
    # only), at its own learning rate under the same schedule; or "dense": the tables are
    # ordinary parameters of `optimizer` (every row updated every step). `optimizer`, `lr` and
    # `weight_decay` are the dense parameters'.
    embedding_optimizer: str = "rowwise_adagrad"
    embedding_lr: float = 0.05
    # Training batches made by this many worker processes into pinned shared memory
    # (rankitect.data.loader_workers), or 0: by a thread of the training process. -1: up to 4
    # on CUDA (a fast GPU step leaves a loader thread too little of the interpreter), 0 on CPU.
    # The batches' order depends on it (one shuffle per worker), so a resumed run keeps it.
    loader_workers: int = -1

    def check(self, prefix: str = "") -> "TrainConfig":
        """Self, or ConfigError naming `prefix` + the field, the rule and the value. The device is
        not looked for here (a search's driver may have no GPU its workers have): training
        resolves it and says when it is missing."""
        from rankitect.blocks.fused_tables import CUDA_ONLY_OPTIMIZERS

        rules = (
            ("epochs", self.epochs >= 1, ">= 1"), ("batch_size", self.batch_size >= 1, ">= 1"),
            ("lr", self.lr > 0 and math.isfinite(self.lr), "> 0"),
            ("weight_decay", self.weight_decay >= 0, ">= 0"),
            ("early_stopping", self.early_stopping >= 0, ">= 0 (0: train every epoch)"), ("shuffle_buffer", self.shuffle_buffer >= 1, ">= 1"),
            ("checkpoint_every", self.checkpoint_every >= 0, ">= 0"),
            ("eval_batch_size", self.eval_batch_size >= 1, ">= 1"),
            ("optimizer", self.optimizer in OPTIMIZERS, f"one of {OPTIMIZERS}"),
            ("lr_schedule", self.lr_schedule in LR_SCHEDULES, f"one of {LR_SCHEDULES}"),
            ("precision", self.precision in PRECISIONS, f"one of {PRECISIONS}"),
            ("embedding_optimizer", self.embedding_optimizer in EMBEDDING_OPTIMIZERS, f"one of {EMBEDDING_OPTIMIZERS}"),
            ("embedding_lr", self.embedding_lr > 0 and math.isfinite(self.embedding_lr), "> 0"),
            ("loader_workers", self.loader_workers >= -1, ">= 0, or -1 (auto)"),
            ("device", self.device == "auto" or self.device.split(":")[0] in ("cpu", "cuda"), "cpu, cuda, cuda:N or auto"),
            ("embedding_optimizer", self.embedding_optimizer not in CUDA_ONLY_OPTIMIZERS or self.device.startswith("cuda"),
             f"one of rowwise_adagrad, adagrad, sgd, dense on {prefix}device={self.device!r} (fbgemm runs "
             f"{' and '.join(CUDA_ONLY_OPTIMIZERS)} on CUDA only)"),
        )
        for name, ok, rule in rules:
            if not ok:
                raise ConfigError(f"{prefix}{name}: must be {rule}, got {getattr(self, name)!r}")
        return self

    def to_dict(self) -> dict[str, Any]:
        return asdict(self)


def resolve_device(name: str) -> torch.device:
    """'cpu', 'cuda', 'cuda:N' or 'auto' (CUDA when present); ConfigError when unavailable."""
    import torch

    if name == "auto":
        return torch.device("cuda" if torch.cuda.is_available() else "cpu")
    try:
        device = torch.device(name)
    except RuntimeError:
        raise ConfigError(f"device={name!r} is not a device name (cpu, cuda, cuda:N, auto)") from None
    if device.type == "cuda" and not torch.cuda.is_available():
        raise ConfigError(f"device={name!r}: CUDA is not available on this machine")
    if device.type not in ("cpu", "cuda"):
        raise ConfigError(f"device={name!r}: only cpu and cuda are supported")
    return device


def autocast(device: torch.device, precision: str) -> torch.autocast:
    """The autocast context of `precision` on `device` (a disabled one for "fp32")."""
    import torch

    return torch.autocast(device_type=device.type, dtype=torch.bfloat16, enabled=precision == "bf16")


def make_optimizer(params: Any, cfg: TrainConfig) -> torch.optim.Optimizer:
    """`cfg.optimizer` over `params`; on CUDA, Adam and SGD in torch's fused form (one kernel
    for all parameters: fewer launches per step, the same arithmetic)."""
    import torch

    params = list(params)
    fused = {"fused": True} if params and all(p.is_cuda for p in params) else {}
    if cfg.optimizer == "adam":
        return torch.optim.Adam(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)
    if cfg.optimizer == "adagrad":
        return torch.optim.Adagrad(params, lr=cfg.lr, weight_decay=cfg.weight_decay)
    return torch.optim.SGD(params, lr=cfg.lr, weight_decay=cfg.weight_decay, **fused)


def lr_factor(schedule: str, step: int, total_steps: int) -> float:
    """Multiplier of the base learning rate at `step` (0-based) of `total_steps`."""
    if schedule == "constant" or total_steps <= 1:
        return 1.0
    progress = min(step / total_steps, 1.0)
    if schedule == "linear":
        return 1.0 - progress
    return 0.5 * (1.0 + math.cos(math.pi * progress))
