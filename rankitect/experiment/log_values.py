"""What the TensorBoard and MLflow loggers record of a trial or baseline record (its
result.json form): the same names in both, so a run reads alike in either tool."""

from __future__ import annotations

import json
import math
from typing import Any

MODEL_METRICS = ("ne", "logloss", "auc", "calibration")  # on the validation and test dates
COST_METRICS = ("flops_per_example", "params", "embedding_params", "dense_params", "latency")
TIME_METRICS = ("seconds", "wall_seconds")


def _number(value: Any) -> float | None:
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if math.isfinite(value) else None


def record_scalars(record: dict[str, Any]) -> dict[str, float]:
    """{"valid/ne": .., "test/ne": .., "cost/flops_per_example": .., "time/seconds": ..} of a
    finished trial or baseline: the finite numbers among them (a failed trial has few)."""
    metrics, test = record.get("metrics") or {}, record.get("test_metrics") or {}
    out: dict[str, float] = {}
    for name in MODEL_METRICS:
        for prefix, source in (("valid", metrics), ("test", test)):
            value = _number(source.get(name))
            if value is not None:
                out[f"{prefix}/{name}"] = value
    for name in COST_METRICS:
        value = _number(metrics.get(name))
        if value is not None:
            out[f"cost/{name}"] = value
    for name in TIME_METRICS:
        value = _number(record.get(name))
        if value is not None:
            out[f"time/{name}"] = value
    return out


def choice_params(choices: dict[str, Any]) -> dict[str, str | int | float | bool]:
    """A trial's choices as flat parameter values (lists and mappings as JSON text), for
    TensorBoard's hparams and MLflow's params."""
    return {key: value if isinstance(value, (str, int, float, bool)) else json.dumps(value, sort_keys=True)
            for key, value in sorted(choices.items())}


def run_name(record: dict[str, Any]) -> str:
    """"trial 0007", or "trial 0007 (baseline dlrm)" for a baseline's member of the space."""
    number = f"trial {record['number']:04d}"
    return f"{number} (baseline {record['baseline']})" if record.get("baseline") else number


def front_table(points: list[dict[str, Any]], objectives: list[str]) -> str:
    """The front as a Markdown table (TensorBoard's text panel renders it)."""
    lines = ["| point | " + " | ".join(objectives) + " |", "|---|" + "---|" * len(objectives)]
    for point in points:
        label = f"trial {point['number']}" if "number" in point else f"baseline {point['baseline']}"
        values = point.get("values") or []
        lines.append(f"| {label} | " + " | ".join(f"{v:.6g}" for v in values) + " |")
    return "\n".join(lines)
