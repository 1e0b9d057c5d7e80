"""The training loop: log-loss on the train dates, checkpoints, evaluation on other dates."""

from __future__ import annotations

import math
import sys
import time
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import numpy as np
import torch
import torch.nn.functional as F
from tqdm import tqdm

from rankitect.arch.graph import Architecture
from rankitect.arch.validate import ValidatedArchitecture, validate
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader, to_device
from rankitect.data.loader_workers import WorkerLoader, default_workers
from rankitect.errors import UserError
from rankitect.metrics import EvalMetrics, evaluate_logits
from rankitect.model import RankingModel
from rankitect.schema import Schema
from rankitect.train.checkpoint import load_checkpoint, optimizer_state, save_checkpoint, saved_settings
from rankitect.train.config import (
    TrainConfig,
    autocast,
    lr_factor,
    resolve_device,
)
from rankitect.train.interrupt import DeferredInterrupt
from rankitect.train.optimizers import embedding_training, model_optimizer, table_optimizer

LOSS_SYNC_EVERY = 100  # on CUDA, steps between reads of the loss (each read drains the GPU's queue)
CUDA_PREFETCH = 16  # batches ready ahead per loader worker on CUDA (slots of its pinned ring)


class TrainingDiverged(UserError):
    """The training loss became NaN or infinite (a learning rate too high, usually)."""


class TrainingInterrupted(UserError):
    """Training stopped by the user (Ctrl-C); a checkpoint was saved when a run folder exists."""


@dataclass(frozen=True)
class TrainStats:
    steps: int
    examples: int
    seconds: float  # time spent in training steps (data wait included), evaluation excluded
    last_epoch_logloss: float

    @property
    def examples_per_second(self) -> float:
        return self.examples / self.seconds if self.seconds > 0 else 0.0


@torch.no_grad()
def predict(model: torch.nn.Module, batches: Iterable[Any], device: torch.device) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N], labels [N]) of a model over batches, in eval mode (float32). The outputs
    stay on the device until the end: one copy back, no wait per batch."""
    was_training = model.training
    model.eval()
    logits, labels = [], []
    for batch in batches:
        batch = batch.to(device, non_blocking=True)
        logits.append(model(batch.dense, batch.sparse).float())
        labels.append(batch.labels)
    model.train(was_training)
    if not logits:
        return np.zeros(0), np.zeros(0)
    return torch.cat(logits).cpu().numpy(), torch.cat(labels).cpu().numpy()


def evaluate(model: torch.nn.Module, dataset: Dataset, dates: list[str], batch_size: int = 8192,
             device: torch.device | str = "cpu") -> tuple[EvalMetrics, dict[str, EvalMetrics]]:
    """Metrics over all `dates` together and per date."""
    return scored(predict_dates(model, dataset, dates, batch_size, device))


def predict_dates(model: torch.nn.Module, dataset: Dataset, dates: list[str], batch_size: int = 8192,
                  device: torch.device | str = "cpu") -> dict[str, tuple[np.ndarray, np.ndarray]]:
    """{date: (logits [N_d], labels [N_d])} in `dates` order, rows in the dataset's order."""
    device = torch.device(device)
    out = {}
    for date in dates:
        loader = BatchLoader(dataset, [date], batch_size, shuffle=False, pin_memory=device.type == "cuda")
        out[date] = predict(model, to_device(loader, device), device)
    return out


def scored(predictions: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[EvalMetrics, dict[str, EvalMetrics]]:
    """Metrics of `predict_dates`' output over all dates together and per date."""
    by_date = {d: evaluate_logits(logits, labels) for d, (logits, labels) in predictions.items()}
    logits, labels = concatenated(predictions)
    return evaluate_logits(logits, labels), by_date


def concatenated(predictions: dict[str, tuple[np.ndarray, np.ndarray]]) -> tuple[np.ndarray, np.ndarray]:
    """(logits [N], labels [N]) of every date, in order."""
    if not predictions:
        return np.zeros(0), np.zeros(0)
    return (np.concatenate([p[0] for p in predictions.values()]), np.concatenate([p[1] for p in predictions.values()]))


def training_model(arch: Architecture | ValidatedArchitecture, schema: Schema, config: TrainConfig) -> RankingModel:
    """`arch` built for training under `config`: on its device, with the tables fused with its
    embedding optimizer (unless that is "dense" or the device cannot run fused tables). An
    Architecture is validated for `schema` first; a ValidatedArchitecture is built as it is."""
    device = resolve_device(config.device)
    validated = arch if isinstance(arch, ValidatedArchitecture) else validate(arch, schema)
    return RankingModel(validated, device, table_optimizer(config, device))


class Trainer:
    """Trains `model` on `train_dates` of `dataset` with `config`.

    With `run_dir`, a checkpoint is written every `checkpoint_every` steps and at each epoch
    end, and `fit(resume=True)` continues from it (the same seed replays the same batches,
    so the steps already done are skipped). Ctrl-C finishes the current step, saves a
    checkpoint and raises TrainingInterrupted. `on_epoch(epochs_done)` runs after each epoch
    but the last; returning True stops training there (pruning). Not thread-safe.

    On CUDA the batches are made by `config.loader_workers` processes into pinned shared memory
    (rankitect.data.loader_workers; with 0, by the loader's thread, pinned there), which go on
    to the next epoch's batches while an epoch ends and `on_epoch` runs; the next
    batch is copied to the GPU on a side stream while the current step runs, and the loss is
    read back every LOSS_SYNC_EVERY steps rather than every step (so the CPU queues steps ahead
    of the GPU), unless `on_step` wants each step's loss; a non-finite loss is then reported at
    its step, up to LOSS_SYNC_EVERY steps later. `config.precision` "bf16" runs the forward pass under
    bfloat16 autocast.
    """

    def __init__(self, model: RankingModel, dataset: Dataset, train_dates: list[str],
                 config: TrainConfig, run_dir: Path | None = None, progress: bool | None = None,
                 on_step: Callable[[int, float], None] | None = None,
                 on_epoch: Callable[[int], bool] | None = None) -> None:
        self.config = config.check()
        self.device = resolve_device(config.device)
        self.model = model.to(self.device)
        cuda = self.device.type == "cuda"
        workers = default_workers(config.loader_workers, self.device)
        self.loader = BatchLoader(dataset, train_dates, config.batch_size, shuffle=True, seed=config.seed,
                                  buffer_rows=max(config.shuffle_buffer, config.batch_size), pin_memory=cuda and not workers)
        self._workers_count = workers
        self._workers: WorkerLoader | None = None
        self.optimizer = model_optimizer(self.model, config, self.device)
        self.embedding_training = embedding_training(self.model, config)
        self.run_dir = Path(run_dir) if run_dir is not None else None
        self.progress = sys.stderr.isatty() if progress is None else progress
        self.on_step = on_step
        self.on_epoch = on_epoch
        self.stopped_early = False
        self._epoch = self._step_in_epoch = self._global_step = self._examples = 0
        self._seconds = 0.0
        self._saved_step = -1
        self._epoch_loss_sum = 0.0
        self._epoch_rows = 0
        self._lazy_loss = cuda and on_step is None
        self._pending: list[tuple[int, int, torch.Tensor]] = []  # (step, rows, loss on the device)
        self._last_loss = float("nan")

    @property
    def epochs_done(self) -> int:
        return self._epoch

    @property
    def checkpoint_path(self) -> Path | None:
        return self.run_dir / "checkpoint.pt" if self.run_dir is not None else None

    def _state(self) -> dict[str, Any]:
        return {
            "model": self.model.state_dict(), "optimizer": self.optimizer.state_dict(),
            "epoch": self._epoch, "step_in_epoch": self._step_in_epoch,
            "global_step": self._global_step, "examples": self._examples, "seconds": self._seconds,
            "epoch_loss_sum": self._epoch_loss_sum, "epoch_rows": self._epoch_rows,
            "config": self.config.to_dict(), "arch": self.model.architecture.to_dict(),
            "torch_rng": torch.get_rng_state(),
        }

    def save(self) -> None:
        self._take_losses()  # the epoch's loss sums in the checkpoint cover every step done
        if self.checkpoint_path is not None:
            save_checkpoint(self.checkpoint_path, self._state())
            self._saved_step = self._global_step

    def _restore(self) -> None:
        path = self.checkpoint_path
        if path is None or not path.is_file():
            raise UserError(f"--resume: no checkpoint at {path}")
        state = load_checkpoint(path)
        if state["arch"] != self.model.architecture.to_dict():
            raise UserError(f"--resume: {path} was trained with another architecture")
        saved = saved_settings(state["config"], TrainConfig().to_dict(), path)
        now = self.config.to_dict()
        for settings in (saved, now):  # the number of loader workers as this device resolves it
            settings["loader_workers"] = default_workers(settings["loader_workers"], self.device)
        diff = sorted(k for k in set(saved) | set(now) if k != "epochs" and saved.get(k) != now.get(k))  # more
        if diff:                                                                      # epochs extend a run
            raise UserError("--resume: settings differ from the checkpoint's: " + ", ".join(
                f"{k}={saved.get(k, '(unknown here)')!r} there, {now.get(k, '(unknown here)')!r} now" for k in diff))
        try:
            self.model.load_state_dict(state["model"])
        except RuntimeError as exc:
            first = str(exc).strip().splitlines()[-1].strip()
            raise UserError(f"--resume: {path}'s weights do not fit the model built now ({first}); its tables "
                            f"may have other rows than the dataset's distinct ids give now (e.g. data imported "
                            f"again): resume with the same data, or start over with --force") from None
        try:
            self.optimizer.load_state_dict(optimizer_state(state["optimizer"]))
        except (ValueError, KeyError) as exc:
            raise UserError(f"--resume: {path} holds optimizer state this version cannot continue ({exc}); "
                            f"start over with --force") from None
        for key in ("epoch", "step_in_epoch", "global_step", "examples", "seconds",
                    "epoch_loss_sum", "epoch_rows"):
            setattr(self, f"_{key}", state[key])
        torch.set_rng_state(state["torch_rng"])

    def fit(self, resume: bool = False) -> TrainStats:
        if resume:
            self._restore()
        if self._workers_count:
            self._workers = WorkerLoader(self.loader, self._workers_count, self.device, depth=CUDA_PREFETCH,
                                         last_epoch=self.config.epochs - 1)
        self._saved_step = self._global_step if resume else -1
        steps_per_epoch = len(self.loader)
        total = steps_per_epoch * self.config.epochs
        bar = tqdm(total=total, initial=min(self._global_step, total), disable=not self.progress,
                   unit="step", dynamic_ncols=True, file=sys.stderr)
        self.model.train()
        try:
            with DeferredInterrupt() as interrupt:
                while self._epoch < self.config.epochs:
                    self._run_epoch(bar, interrupt)
                    self._epoch += 1
                    self._step_in_epoch = 0
                    if self._epoch < self.config.epochs:
                        self._epoch_loss_sum, self._epoch_rows = 0.0, 0
                    self.save()
                    if self.on_epoch is not None and self._epoch < self.config.epochs \
                            and self.on_epoch(self._epoch):
                        self.stopped_early = True
                        break
        except KeyboardInterrupt:  # a second Ctrl-C, or one raised inside a step: state may be torn
            raise TrainingInterrupted(self._interrupted_message(saved_now=False)) from None
        finally:
            bar.close()
            if self._workers is not None:
                self._workers.close()
                self._workers = None
        last = self._epoch_loss_sum / self._epoch_rows if self._epoch_rows else float("nan")
        return TrainStats(self._global_step, self._examples, self._seconds, last)

    def _interrupted_message(self, saved_now: bool) -> str:
        text = f"training interrupted at step {self._global_step}"
        if self.run_dir is None:
            return text
        if saved_now or self._saved_step >= 0:
            step = self._global_step if saved_now else self._saved_step
            return f"{text}; resume with --resume (checkpoint of step {step}: {self.checkpoint_path})"
        return f"{text}; no checkpoint was written yet"

    def _epoch_batches(self) -> Iterator[Any]:
        """This epoch's batches on the device: from the worker processes when there are some,
        else from the loader's thread, the next one's copy overlapped with the step."""
        if self._workers is not None:
            return self._workers.epoch(self._epoch)
        return to_device(self.loader.epoch(self._epoch), self.device)

    def _run_epoch(self, bar: tqdm, interrupt: DeferredInterrupt) -> None:
        batches = self._epoch_batches()
        try:
            for _ in range(self._step_in_epoch):  # resumed mid-epoch: skip the steps done, unclocked
                next(batches, None)
            clock = time.perf_counter()
            for batch in batches:
                loss = self._step(batch)
                rows = len(batch)
                self._examples += rows
                self._step_in_epoch += 1
                self._global_step += 1
                self._pending.append((self._global_step, rows, loss))
                if not self._lazy_loss or self._global_step % LOSS_SYNC_EVERY == 0:
                    self._take_losses()
                now = time.perf_counter()
                self._seconds += now - clock
                clock = now
                bar.update(1)
                if self._global_step % 20 == 0 and self._epoch_rows:
                    bar.set_postfix(epoch=self._epoch, logloss=f"{self._epoch_loss_sum / self._epoch_rows:.4f}")
                if self.on_step is not None:
                    self.on_step(self._global_step, self._last_loss)
                if interrupt.requested:
                    self._take_losses()
                    self.save()
                    raise TrainingInterrupted(self._interrupted_message(saved_now=True))
                every = self.config.checkpoint_every
                if every and self._global_step % every == 0:
                    self._take_losses()
                    self._seconds += time.perf_counter() - clock
                    self.save()
                    clock = time.perf_counter()
            self._take_losses()  # waits for the GPU: the epoch's time includes its last steps
            self._seconds += time.perf_counter() - clock
        finally:
            batches.close()  # type: ignore[attr-defined]  (a generator: stops the reader thread)

    def _take_losses(self) -> None:
        """Add the pending steps' losses to the epoch's sums (one read from the device);
        TrainingDiverged at the first that is not finite."""
        if not self._pending:
            return
        pending, self._pending = self._pending, []
        if len(pending) == 1:
            values = [float(pending[0][2])]
        else:
            values = torch.stack([loss for _, _, loss in pending]).tolist()
        for (step, rows, _), value in zip(pending, values):
            if not math.isfinite(value):
                raise TrainingDiverged(f"the training loss became {value} at step {step}; "
                                       f"try a lower learning rate (lr={self.config.lr})")
            self._epoch_loss_sum += value * rows
            self._epoch_rows += rows
        self._last_loss = values[-1]

    def _set_lr(self) -> None:
        total = len(self.loader) * self.config.epochs
        factor = lr_factor(self.config.lr_schedule, self._global_step, total)
        for group in self.optimizer.param_groups:
            group["lr"] = group["base_lr"] * factor

    def _step(self, batch: Any) -> torch.Tensor:
        """One optimizer step; the loss (detached, still on the device)."""
        self._set_lr()
        with autocast(self.device, self.config.precision):
            logits = self.model(batch.dense, batch.sparse)
        loss = F.binary_cross_entropy_with_logits(logits.float(), batch.labels)
        self.optimizer.zero_grad(set_to_none=True)
        loss.backward()
        self.optimizer.step()
        return loss.detach()
