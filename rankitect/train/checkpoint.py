"""Checkpoints written atomically (temp file + rename), so a kill never leaves a torn one."""

from __future__ import annotations

import os
from pathlib import Path
from typing import Any

import torch

from rankitect.errors import UserError

CHECKPOINT_FILE = "checkpoint.pt"


def save_checkpoint(path: Path, state: dict[str, Any]) -> None:
    tmp = Path(f"{path}.tmp-{os.getpid()}")
    torch.save(state, tmp)
    os.replace(tmp, path)


def load_checkpoint(path: Path) -> dict[str, Any]:
    return torch.load(path, map_location="cpu", weights_only=True)


# What a checkpoint written before a setting existed trained with; settings since removed.
LEGACY_SETTINGS: dict[str, Any] = {"embedding_optimizer": "dense", "loader_workers": 0}
REMOVED_SETTINGS: dict[str, str] = {
    "sparse_embeddings": "row-sparse table gradients, which fused tables (embedding_optimizer) replaced",
}


def saved_settings(config: dict[str, Any], defaults: dict[str, Any], path: Path) -> dict[str, Any]:
    """The training settings of a checkpoint's `config`, completed for one written by an older
    version: a setting added since with the value that version used (LEGACY_SETTINGS), or else
    its default. UserError if the run used a setting since removed."""
    config = dict(config)
    for key, what in REMOVED_SETTINGS.items():
        if config.pop(key, False):
            raise UserError(f"--resume: {path} was trained with {key}=True ({what}); this version cannot "
                            f"continue it: start over with --force")
    return {**defaults, **{k: v for k, v in LEGACY_SETTINGS.items() if k not in config}, **config}


def optimizer_state(saved: dict[str, Any]) -> dict[str, Any]:
    """A checkpoint's optimizer state in this version's form: one written before the optimizer
    was split into parts (a plain torch optimizer's state) is the dense part."""
    if "state" in saved and "param_groups" in saved:
        return {"dense": saved}
    return saved
