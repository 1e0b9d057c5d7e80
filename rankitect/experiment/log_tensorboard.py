"""TensorBoard logger: `logging: {tensorboard: DIR}`, or `TensorBoardLogger(DIR)` as a callback.

DIR holds one TensorBoard run per trial (`trial_0007/`) and baseline (`baseline_dlrm/`), so
TensorBoard overlays their learning curves, plus `search/` for the search as a whole:

    trial_NNNN/    valid/<metric> per epoch (the curve); the final valid/, test/, cost/, time/
                   scalars; the trial's choices as hparams (TensorBoard's HParams tab)
    baseline_X/    the same for a baseline
    search/        per trial number: valid/ne and cost/flops_per_example of each trial;
                   best/valid_ne when the best changes, front/size and front/table (text)
                   when the front changes (step: trials told); the config (text); the
                   NE-vs-FLOPs plot (image) at the end
"""

from __future__ import annotations

import json
import os
from pathlib import Path
from typing import Any

from rankitect.errors import UserError
from rankitect.experiment.events import SearchEvents
from rankitect.experiment.log_values import choice_params, front_table, record_scalars


def _summary_writer_class() -> Any:
    try:
        from torch.utils.tensorboard import SummaryWriter
    except ImportError:
        raise UserError("logging.tensorboard: needs the tensorboard package; "
                        "pip install 'rankitect[tensorboard]'") from None
    return SummaryWriter


class TensorBoardLogger(SearchEvents):
    """Writes a search's trials, baselines and front as TensorBoard event files under `folder`."""

    def __init__(self, folder: str | Path) -> None:
        self.writer_class = _summary_writer_class()
        self.folder = Path(folder)
        try:
            self.folder.mkdir(parents=True, exist_ok=True)
        except OSError as exc:
            raise UserError(f"logging.tensorboard: cannot create the folder {str(folder)!r}: {exc.strerror}") from None
        if not os.access(self.folder, os.W_OK | os.X_OK):
            raise UserError(f"logging.tensorboard: the folder {str(folder)!r} is not writable")
        self.search_writer: Any = None
        self.objectives: list[str] = ["ne", "flops"]
        self.told = 0

    def _writer(self, name: str) -> Any:
        return self.writer_class(log_dir=str(self.folder / name))

    def _search(self) -> Any:
        if self.search_writer is None:
            self.search_writer = self._writer("search")
        return self.search_writer

    def search_started(self, run_dir: Path, config: dict[str, Any], continued: bool) -> None:
        self.objectives = list(config.get("objectives", self.objectives))
        text = json.dumps(config, indent=2, default=str).replace("\n", "\n    ")
        self._search().add_text("config", f"run folder: `{run_dir}`\n\n    {text}")

    def _entry(self, folder: str, record: dict[str, Any], hparams: dict[str, Any]) -> None:
        """One trial's or baseline's run: its curve, final scalars and hparams."""
        writer = self._writer(folder)
        try:
            curve = record.get("curve")
            if curve:
                for epoch, value in zip(curve["epochs"], curve["values"]):
                    writer.add_scalar(f"valid/{curve['metric']}", value, epoch)
            scalars = record_scalars(record)
            for tag, value in scalars.items():
                if not (curve and tag == f"valid/{curve['metric']}"):  # the curve's last point holds it
                    writer.add_scalar(tag, value, 0)
            metric_dict = {f"hparam/{tag.replace('/', '_')}": v for tag, v in scalars.items()
                           if tag.split("/")[0] in ("valid", "test", "cost")}
            if metric_dict:  # a failed trial has no metric to show beside its choices
                writer.add_hparams(hparams, metric_dict, run_name=".")
        finally:
            writer.close()

    def trial(self, trial: dict[str, Any], done: int, total: int) -> None:
        self.told = done
        hparams = {**choice_params(trial.get("choices") or {}), "status": trial["status"]}
        if trial.get("baseline"):
            hparams["baseline"] = trial["baseline"]
        self._entry(f"trial_{trial['number']:04d}", trial, hparams)
        scalars = record_scalars(trial)
        for tag in ("valid/ne", "cost/flops_per_example"):
            if tag in scalars:
                self._search().add_scalar(tag, scalars[tag], trial["number"])

    def baseline(self, name: str, record: dict[str, Any]) -> None:
        self._entry(f"baseline_{name}", record, {"baseline": name, "status": record.get("status", "")})

    def best(self, trial: dict[str, Any]) -> None:
        value = record_scalars(trial).get("valid/ne")
        if value is not None:
            self._search().add_scalar("best/valid_ne", value, self.told)

    def pareto(self, points: list[dict[str, Any]]) -> None:
        self._search().add_scalar("front/size", len(points), self.told)
        self._search().add_text("front/table", front_table(points, self.objectives), self.told)

    def search_finished(self, result: Any) -> None:
        plot = Path(result.run_dir) / "pareto.png"
        if plot.is_file():
            import matplotlib.image

            self._search().add_image("front/plot", matplotlib.image.imread(str(plot))[..., :3], self.told,
                                     dataformats="HWC")
        self._search().flush()

    def close(self) -> None:
        if self.search_writer is not None:
            self.search_writer.close()
            self.search_writer = None
