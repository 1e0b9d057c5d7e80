"""Find and check what an export reads: a `rankitect train` run, or a search run's `best/`.

A run folder holds arch.json, config.json (with the dataset's path and the dates), checkpoint.pt
and metrics.json; a search run holds result.json and `best/`, laid out like a train run. Every
problem is an ExportError naming the folder and the file.
"""

from __future__ import annotations

import dataclasses
import json
from dataclasses import dataclass
from pathlib import Path
from typing import Any

from rankitect.arch.graph import Architecture
from rankitect.data.dataset import Dataset
from rankitect.errors import DataError, ExportError, UserError
from rankitect.model import RankingModel, build_model
from rankitect.schema import Schema
from rankitect.train.checkpoint import CHECKPOINT_FILE, load_checkpoint
from rankitect.train.run import ARCH_FILE, CONFIG_FILE, METRICS_FILE

BEST_DIR = "best"
SEARCH_MARKERS = ("result.json", "study.db", BEST_DIR)
REQUIRED_FILES = (ARCH_FILE, CONFIG_FILE, CHECKPOINT_FILE, METRICS_FILE)
NOT_KEPT_FILE = "checkpoint_not_kept.json"  # left by a search that removed the checkpoint (retention.py)
_EMBEDDING_WEIGHT = "embedding.ebc.embedding_bags."
_WIDEN_WEIGHT = "embedding.widen.weights."


@dataclass(frozen=True)
class RunFolder:
    """A checked run: `folder` holds the files (RUN, or RUN/best for a search run)."""

    run: Path
    folder: Path
    kind: str  # "train" or "search"
    arch: Architecture
    config: dict[str, Any]
    metrics: dict[str, Any]

    @property
    def eval_dates(self) -> list[str]:
        return list(self.metrics.get("eval_dates") or [])

    @property
    def data_path(self) -> str:
        """config.json's data path: {"data": {"path": ...}} (a plain string before one shape)."""
        data = self.config["data"]
        return data if isinstance(data, str) else data["path"]


def open_run(run: Path) -> RunFolder:
    """The run at `run` with its JSON files parsed; ExportError naming what is missing or bad."""
    run = Path(run)
    if not run.is_dir():
        raise ExportError(f"run {str(run)!r} does not exist or is not a folder")
    folder, kind = run, "train"
    if not (run / ARCH_FILE).exists() and any((run / m).exists() for m in SEARCH_MARKERS):
        folder, kind = run / BEST_DIR, "search"
        if not folder.is_dir():
            raise ExportError(f"{run} is a search run without {BEST_DIR}/: no trial has completed yet")
    missing = [name for name in REQUIRED_FILES if not (folder / name).is_file()]
    if CHECKPOINT_FILE in missing and (folder / NOT_KEPT_FILE).is_file():
        note = _json(folder / NOT_KEPT_FILE)
        setting = f"budget.keep_checkpoints={note.get('keep_checkpoints', '?')}"
        raise ExportError(f"{folder} has no {CHECKPOINT_FILE}: the search did not keep it ({setting} keeps "
                          f"{note.get('kept', 'fewer checkpoints')}). Export the search run "
                          f"{note.get('search', '')} (its best/), retrain this architecture with `rankitect "
                          f"train --arch {folder / ARCH_FILE} ...`, or set budget.keep_checkpoints: all (or "
                          f"top_k with budget.keep_top_k) in the search config to keep trials' checkpoints")
    if missing:
        if len(missing) == len(REQUIRED_FILES) and kind == "train":
            raise ExportError(f"{run} is not a run folder: it has none of {', '.join(REQUIRED_FILES)}")
        why = " (training has not finished)" if missing == [METRICS_FILE] else ""
        raise ExportError(f"run {folder} is incomplete: {missing[0]} is missing{why}")
    config, metrics = _json(folder / CONFIG_FILE), _json(folder / METRICS_FILE)
    try:
        arch = Architecture.load(folder / ARCH_FILE)
    except UserError as exc:
        raise ExportError(f"{folder / ARCH_FILE}: {exc}") from None
    status = metrics.get("status", "complete")
    if status != "complete":
        raise ExportError(f"{folder / METRICS_FILE}: the run's status is {status!r}; only a complete run "
                          f"is exported")
    data = config.get("data")
    if not isinstance(data, str) and not (isinstance(data, dict) and isinstance(data.get("path"), str)):
        raise ExportError(f"{folder / CONFIG_FILE}: field 'data.path' (the dataset's path) is missing")
    return RunFolder(run, folder, kind, arch, config, metrics)


def _json(path: Path) -> dict[str, Any]:
    try:
        raw = json.loads(path.read_text())
    except (json.JSONDecodeError, UnicodeDecodeError) as exc:
        raise ExportError(f"{path}: not valid JSON ({exc})") from None
    if not isinstance(raw, dict):
        raise ExportError(f"{path}: expected a JSON object, got {type(raw).__name__}")
    return raw


def open_dataset(run: RunFolder, data: str | None = None) -> Dataset:
    """The run's dataset (config.json 'data', or `data`), holding the run's eval dates."""
    uri = data or run.data_path
    try:
        dataset = Dataset.open(uri)
    except DataError as exc:
        where = "--data" if data else f"{run.folder / CONFIG_FILE} field 'data.path'"
        raise ExportError(f"the run's dataset {uri!r} ({where}) cannot be opened: {exc}; "
                          f"pass --data to point at it") from None
    missing = [d for d in run.eval_dates if d not in dataset.files]
    if not run.eval_dates or missing:
        raise ExportError(f"dataset {uri!r} lacks the run's eval dates {missing or '(none recorded)'} "
                          f"({run.folder / METRICS_FILE} field 'eval_dates')")
    return dataset


def load_model(run: RunFolder, schema: Schema) -> tuple[RankingModel, Schema]:
    """The trained model in eval mode, and the schema it was built for.

    A run trained with `--embedding-dim` has a default dim other than the dataset's; it is read
    off the checkpoint's embedding tables (or their projections, when columns have their own widths), and so are their rows (a dataset given with --data
    may count other distinct ids than the one the run trained on).
    """
    path = run.folder / CHECKPOINT_FILE
    try:
        state = load_checkpoint(path)
        weights = state["model"]
    except (RuntimeError, OSError, KeyError, TypeError, EOFError) as exc:
        raise ExportError(f"{path}: not a readable Rankitect checkpoint "
                          f"({type(exc).__name__}: {exc})") from None
    if state.get("arch") not in (None, run.arch.to_dict()):
        raise ExportError(f"{path} holds another architecture than {run.folder / ARCH_FILE}")
    dims = {t.shape[1] for k, t in weights.items() if k.startswith(_EMBEDDING_WEIGHT) and t.dim() == 2}
    widened = {t.shape[0] for k, t in weights.items() if k.startswith(_WIDEN_WEIGHT)}  # (E, d) projections
    dims = widened or dims
    if not run.arch.embedding.get("dim") and len(dims) == 1:
        schema = dataclasses.replace(schema, embedding_dim=int(dims.pop()))
    arch = run.arch
    rows = {k[len(_EMBEDDING_WEIGHT):].split(".")[0].removeprefix("t_"): int(t.shape[0])
            for k, t in weights.items() if k.startswith(_EMBEDDING_WEIGHT) and t.dim() == 2}
    if rows and set(rows) <= set(schema.sparse_names):
        arch = dataclasses.replace(arch, embedding={**arch.embedding, "rows": rows})
    model = build_model(arch, schema)
    try:
        model.load_state_dict(weights)
    except RuntimeError as exc:
        first = str(exc).strip().splitlines()[0]
        raise ExportError(f"{path} does not match {run.folder / ARCH_FILE} and the dataset's schema: "
                          f"{first}") from None
    for p in model.parameters():
        p.requires_grad_(False)
    return model.eval(), schema
