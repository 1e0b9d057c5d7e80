"""Early stopping on the validation dates: a run keeps its best epoch.

After each epoch the run's validation NE is recorded; when it is the best so far the weights
are written to `best.pt` beside the checkpoint. Training stops once `patience` epochs in a row
did not improve on the best, and the run ends on the best epoch's weights (written into
checkpoint.pt, so export and `--resume` see them). The curve and the best epoch live in
`early_stopping.json`, so a resumed run knows them.
"""

from __future__ import annotations

import json
import math
from pathlib import Path
from typing import Any

import torch
from torch import nn

from rankitect.train.checkpoint import load_checkpoint, save_checkpoint

BEST_FILE = "best.pt"
STATE_FILE = "early_stopping.json"


class EarlyStopping:
    """Tracks validation NE per epoch for one run folder; `patience` 0 only records the curve."""

    def __init__(self, run_dir: Path, patience: int, resume: bool = False) -> None:
        self.run_dir, self.patience = Path(run_dir), patience
        self.curve: dict[int, float] = {}
        self.best_epoch = 0
        state = self.run_dir / STATE_FILE
        if resume and state.is_file():
            raw = json.loads(state.read_text())
            self.curve = {int(k): float(v) for k, v in raw["curve"].items()}
            self.best_epoch = int(raw["best_epoch"])
        elif not resume:
            for name in (BEST_FILE, STATE_FILE):
                (self.run_dir / name).unlink(missing_ok=True)

    @property
    def best(self) -> float:
        return self.curve.get(self.best_epoch, math.inf)

    def record(self, epoch: int, ne: float, model: nn.Module) -> bool:
        """Note epoch `epoch`'s validation NE (saving the weights when best); True: stop now."""
        self.curve[epoch] = ne
        if math.isfinite(ne) and ne < self.best:
            self.best_epoch = epoch
            save_checkpoint(self.run_dir / BEST_FILE, {"model": model.state_dict(), "epoch": epoch})
        self._write()
        return self.patience > 0 and epoch - self.best_epoch >= self.patience

    def restore_best(self, model: nn.Module, last_epoch: int) -> bool:
        """Load the best epoch's weights into `model` when an earlier epoch beat `last_epoch`'s;
        True when it did."""
        if self.best_epoch in (0, last_epoch) or not (self.run_dir / BEST_FILE).is_file():
            return False
        state = load_checkpoint(self.run_dir / BEST_FILE)
        with torch.no_grad():
            model.load_state_dict(state["model"])
        return True

    def finish(self) -> None:
        """The run ended: its best weights are in checkpoint.pt; drop the copy."""
        (self.run_dir / BEST_FILE).unlink(missing_ok=True)

    def summary(self) -> dict[str, Any]:
        """What metrics.json records: the best epoch and the validation NE of every epoch."""
        return {"best_epoch": self.best_epoch, "valid_ne_by_epoch": {str(k): v for k, v in sorted(self.curve.items())}}

    def _write(self) -> None:
        tmp = self.run_dir / f"{STATE_FILE}.tmp"
        tmp.write_text(json.dumps({"curve": {str(k): v for k, v in self.curve.items()},
                                   "best_epoch": self.best_epoch}) + "\n")
        tmp.replace(self.run_dir / STATE_FILE)
