"""`rankitect export`: a run's model as one self-contained folder that serves without Rankitect.

    DIR/model.pt2             torch.export program (dense, values, lengths) -> logits
    DIR/model_int8.pt2        the same with int8 embedding tables (--int8)
    DIR/rankitect_serving.py  the loader (torch + fbgemm_gpu only): load(DIR).score_rows(rows)
    DIR/preprocessing.json    raw column -> model input, exactly as the importer did it
    DIR/arch.json, schema.json, metrics.json (the run's, + FLOPs, params, int8 vs fp32)
    DIR/samples.pt            sample inputs and the eager model's outputs on them
    DIR/manifest.json         signature, versions of torch / torchrec / fbgemm, SHA-256 of files

Everything is written into a hidden sibling folder and renamed into place at the end, so a
failure (an incomplete run, a block torch.export cannot trace) leaves nothing behind.
"""

from __future__ import annotations

import dataclasses
import datetime as dt
import json
import os
import platform
import shutil
from collections.abc import Callable
from dataclasses import dataclass
from importlib import metadata
from pathlib import Path
from typing import Any

import torch

import rankitect
from rankitect.cost import cost_of
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.errors import ExportError
from rankitect.export import serving
from rankitect.export.int8 import embedding_bytes, fbgemm_fake_classes, quantize
from rankitect.export.preprocessing import preprocessing_spec
from rankitect.export.program import (
    INPUT_NAMES,
    Exported,
    ProgramAsModel,
    ProgramInputs,
    ServingModule,
    export_program,
    program_inputs,
    quiet_export,
)
from rankitect.export.run_folder import RunFolder, load_model, open_dataset, open_run
from rankitect.schema import SCHEMA_FILE
from rankitect.train.run import ARCH_FILE, METRICS_FILE
from rankitect.train.trainer import evaluate

MODEL_FILE = "model.pt2"
INT8_FILE = "model_int8.pt2"
LOADER_FILE = "rankitect_serving.py"
README_FILE = "README.md"
SAMPLE_ROWS = 16
_PUBLISHED = (MODEL_FILE, INT8_FILE, LOADER_FILE, serving.PREPROCESSING_FILE, ARCH_FILE, SCHEMA_FILE,
              METRICS_FILE, serving.SAMPLES_FILE, README_FILE)

Log = Callable[[str], None]


@dataclass(frozen=True)
class _Model:
    """One exported form: the eager module, its program reloaded from `path`."""

    module: torch.nn.Module
    exported: Exported
    program: Callable[..., torch.Tensor]
    path: Path
    sample_logits: torch.Tensor  # the eager module's, on the first example


@dataclass(frozen=True)
class ExportResult:
    out: Path
    manifest: dict[str, Any]
    metrics: dict[str, Any]


def export_run(run: Path, out: Path, *, int8: bool = False, force: bool = False, data: str | None = None,
               log: Log | None = None) -> ExportResult:
    """Export the model of `run` (a train run, or a search run's best/) to `out`.

    ExportError (a UserError) for an incomplete run, a dataset that cannot be opened, a block
    that cannot be exported, or an existing `out` without `force`. `out` is written atomically.
    """
    say = log or (lambda _msg: None)
    run_folder = open_run(Path(run))
    out = Path(out)
    check_target(out, force)
    dataset = open_dataset(run_folder, data)
    model, schema = load_model(run_folder, dataset.schema)
    run_folder = dataclasses.replace(run_folder, arch=model.architecture)  # table rows as trained
    if int8 and model.embedding is None:
        raise ExportError(f"--int8: architecture {run_folder.arch.name!r} has no embedding tables to "
                          f"quantize")
    keys = schema.sparse_names
    examples = _sample_inputs(dataset, run_folder.eval_dates)
    tmp = out.parent / f".{out.name}.export-{os.getpid()}"
    made = [p for p in reversed(out.parents) if not p.exists()]
    try:
        tmp.mkdir(parents=True)
        say(f"exporting {run_folder.folder} ({run_folder.arch.name or 'architecture'}) with torch.export")
        forms = [_export(model, keys, examples, tmp / MODEL_FILE)]
        if int8:
            say("quantizing the embedding tables to int8 and exporting")
            with fbgemm_fake_classes():
                forms.append(_export(quantize(model), keys, examples, tmp / INT8_FILE))
        metrics = _metrics(run_folder, schema, forms, dataset, say)
        _write_files(tmp, run_folder, schema, forms, examples[0], metrics)
        manifest = _manifest(tmp, run_folder, schema, forms)
        _publish(tmp, out, force)
    except BaseException:
        shutil.rmtree(tmp, ignore_errors=True)
        for parent in reversed(made):
            if parent.is_dir() and not any(parent.iterdir()):
                parent.rmdir()
        raise
    say(f"wrote {out}")
    return ExportResult(out, manifest, metrics)


def check_target(out: Path, force: bool) -> None:
    """Refuse an existing `out` without `force`, and anything but an earlier export even with it."""
    if not out.exists():
        return
    if not force:
        raise ExportError(f"{out} already exists; pass --force to replace it")
    if not out.is_dir() or (any(out.iterdir()) and not (out / serving.MANIFEST_FILE).is_file()):
        raise ExportError(f"{out} exists and is not a Rankitect export (no {serving.MANIFEST_FILE}); "
                          f"refusing to replace it even with --force")


def _sample_inputs(dataset: Dataset, dates: list[str]) -> list[ProgramInputs]:
    """The first SAMPLE_ROWS rows of the eval dates (traced, stored) and the first row alone."""
    examples = []
    for rows in (SAMPLE_ROWS, 1):
        batch = next(iter(BatchLoader(dataset, dates, rows, shuffle=False, prefetch=0)), None)
        if batch is None or (rows > 1 and len(batch) < 2):
            raise ExportError(f"the eval dates {dates} hold fewer than 2 rows; export traces a sample batch")
        examples.append(program_inputs(batch.dense, batch.sparse))
    return examples


def _export(module: torch.nn.Module, keys: list[str], examples: list[ProgramInputs], path: Path) -> _Model:
    """Export on the first example, save, reload, and check the reloaded program against the
    eager module as it trained (its own lookup of a KeyedJaggedTensor) on every example (the
    batch size is dynamic)."""
    serving_module = ServingModule(module, keys).eval()
    exported = export_program(serving_module, examples[0])
    with quiet_export():
        torch.export.save(exported.program, path)
        program = torch.export.load(path).module()
    reference = ServingModule(module, keys, fused=False).eval()
    with torch.inference_mode():
        expected = [reference(*inputs) for inputs in examples]
        for inputs, want in zip(examples, expected):
            diff = float((program(*inputs) - want).abs().max())
            if not diff <= serving.SAMPLE_TOLERANCE:
                raise ExportError(f"the exported program disagrees with the model by {diff:.3g} on "
                                  f"{inputs[0].shape[0]} sample rows")
    return _Model(module, exported, program, path, expected[0])


def _metrics(run: RunFolder, schema: Any, forms: list[_Model], dataset: Dataset, say: Log) -> dict[str, Any]:
    cost = cost_of(run.arch, schema)
    metrics = {**run.metrics, "flops_per_example": cost.flops, "params": cost.params,
               "embedding_params": cost.embedding_params}
    if len(forms) == 1:
        return metrics
    fp32, q = forms
    dates = run.eval_dates
    say(f"measuring NE of the fp32 and int8 programs on {', '.join(dates)}")
    batch_size = int(run.config.get("eval_batch_size", 8192))
    base, base_by_date = evaluate(ProgramAsModel(fp32.program), dataset, dates, batch_size)
    quant, quant_by_date = evaluate(ProgramAsModel(q.program), dataset, dates, batch_size)
    fp32_bytes, int8_bytes = embedding_bytes(fp32.module), embedding_bytes(q.module)
    metrics["int8"] = {
        "form": f"torch.export program ({q.exported.mode}); torchrec QuantEmbeddingBagCollection, "
                f"int8 rows with a per-row scale and bias (fbgemm); dense layers float32",
        "eval_dates": dates,
        "ne_fp32": base.ne, "ne_int8": quant.ne, "ne_change": quant.ne - base.ne,
        "ne_change_relative": (quant.ne - base.ne) / base.ne if base.ne else None,
        "logloss_fp32": base.logloss, "logloss_int8": quant.logloss,
        "auc_fp32": base.auc, "auc_int8": quant.auc,
        "by_date": {d: {"ne_fp32": base_by_date[d].ne, "ne_int8": quant_by_date[d].ne} for d in dates},
        "embedding_bytes_fp32": fp32_bytes, "embedding_bytes_int8": int8_bytes,
        "embedding_size_ratio": int8_bytes / fp32_bytes if fp32_bytes else None,
        "file_bytes_fp32": fp32.path.stat().st_size, "file_bytes_int8": q.path.stat().st_size,
        "file_size_ratio": q.path.stat().st_size / fp32.path.stat().st_size,
    }
    return metrics


def _write_files(tmp: Path, run: RunFolder, schema: Any, forms: list[_Model], example: ProgramInputs,
                 metrics: dict[str, Any]) -> None:
    _json(tmp / METRICS_FILE, metrics)
    _json(tmp / serving.PREPROCESSING_FILE, preprocessing_spec(schema))
    run.arch.save(tmp / ARCH_FILE)
    schema.save(tmp)
    samples = dict(zip(INPUT_NAMES, example))
    samples.update(zip(("logits", "logits_int8"), (form.sample_logits for form in forms)))
    torch.save(samples, tmp / serving.SAMPLES_FILE)
    shutil.copyfile(serving.__file__, tmp / LOADER_FILE)
    (tmp / README_FILE).write_text(_readme(bool(metrics.get("int8"))))


def _manifest(tmp: Path, run: RunFolder, schema: Any, forms: list[_Model]) -> dict[str, Any]:
    def entry(form: _Model) -> dict[str, Any]:
        return {"file": form.path.name, "export": f"torch.export ({form.exported.mode})",
                "bytes": form.path.stat().st_size}

    manifest = {
        "format": serving.FORMAT,
        "created": dt.datetime.now(dt.timezone.utc).isoformat(timespec="seconds"),
        "run": {"path": str(run.run.resolve()), "kind": run.kind, "folder": str(run.folder.resolve()),
                "data": run.data_path, "eval_dates": run.eval_dates},
        "arch": run.arch.name,
        "program": entry(forms[0]),
        "int8": entry(forms[1]) if len(forms) > 1 else None,
        "inputs": {"dense": f"float32 [B, {schema.num_dense}]: {schema.dense_names}",
                   "values": "int64 [N]: the ids of every feature, feature-major",
                   "lengths": f"int64 [{schema.num_sparse}, B]: ids per (feature, row)"},
        "output": "logits float32 [B]; sigmoid gives the click probability",
        "sparse_keys": schema.sparse_names,
        "dense_columns": schema.dense_names,
        "versions": versions(),
        "files": {},
    }
    manifest["files"] = {name: serving.sha256_file(tmp / name) for name in _PUBLISHED
                         if (tmp / name).is_file()}
    _json(tmp / serving.MANIFEST_FILE, manifest)
    return manifest


def versions() -> dict[str, str]:
    """Versions of what made the artifact (and what loading it needs)."""
    import fbgemm_gpu
    import torchrec

    def dist(name: str, module: Any) -> str:
        try:
            return metadata.version(name)
        except metadata.PackageNotFoundError:
            return str(getattr(module, "__version__", "unknown"))

    return {"torch": torch.__version__, "torchrec": dist("torchrec", torchrec),
            "fbgemm_gpu": dist("fbgemm-gpu-cpu", fbgemm_gpu), "python": platform.python_version(),
            "rankitect": rankitect.__version__}


def _publish(tmp: Path, out: Path, force: bool) -> None:
    """Rename `tmp` to `out`; an earlier export there (with `force`) is removed only after."""
    old = out.parent / f".{out.name}.old-{os.getpid()}"
    if out.exists():
        check_target(out, force)  # re-checked: it may have appeared while exporting
        os.rename(out, old)
    try:
        os.rename(tmp, out)
    except OSError:
        if old.exists():
            os.rename(old, out)
        raise
    shutil.rmtree(old, ignore_errors=True)


def _json(path: Path, value: Any) -> None:
    path.write_text(json.dumps(value, indent=2) + "\n")


def _readme(int8: bool) -> str:
    lines = ["# Exported ranking model", "",
             "Serves with torch and fbgemm_gpu (torchrec's operators); nothing of Rankitect.", "",
             "```python", "import sys; sys.path.insert(0, DIR)", "import rankitect_serving",
             "model = rankitect_serving.load(DIR)" + ("  # int8=True: int8 embedding tables" if int8 else ""),
             "model.score_rows([{...raw columns...}])   # click probabilities", "```", "",
             "`python rankitect_serving.py DIR ROWS.jsonl` prints one probability per row.",
             "See manifest.json (inputs, versions), preprocessing.json, metrics.json."]
    return "\n".join(lines) + "\n"
