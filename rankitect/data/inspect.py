"""Summaries of a dataset: its schema, and rows / positive rate per date read from the files."""

from __future__ import annotations

from typing import Any

import pyarrow.compute as pc
import pyarrow.parquet as pq

from rankitect.blocks.table_rows import default_rows
from rankitect.data.dataset import Dataset
from rankitect.schema import SparseColumn


def inspect_dataset(dataset: Dataset) -> dict[str, Any]:
    """{'schema': schema dict, 'dates': {date: {'rows', 'positives', 'positive_rate'}}, 'rows'}.

    Per-date counts are read from the label column of the files, not copied from schema.json.
    """
    label = dataset.schema.label
    dates: dict[str, dict[str, float]] = {}
    for date in dataset.dates:
        rows = positives = 0
        for path in dataset.files[date]:
            with dataset.fs.open_input_file(path) as handle:
                column = pq.read_table(handle, columns=[label]).column(label)
            rows += len(column)
            positives += int(pc.sum(column).as_py() or 0)
        dates[date] = {"rows": rows, "positives": positives,
                       "positive_rate": positives / rows if rows else 0.0}
    return {"uri": dataset.uri, "schema": dataset.schema.to_dict(), "dates": dates,
            "rows": sum(int(d["rows"]) for d in dates.values())}


def format_inspection(info: dict[str, Any]) -> list[str]:
    """Human-readable lines of `inspect_dataset`'s result."""
    schema = info["schema"]
    out = [f"dataset {info['uri']}  ({schema.get('source') or 'imported'}; "
           f"{info['rows']} rows, {len(info['dates'])} dates)",
           f"label: {schema['label']}    embedding_dim: {schema['embedding_dim']}",
           f"dense columns ({len(schema['dense'])}):"]
    for c in schema["dense"]:
        clip = "-" if c.get("clip_min") is None else f"[{c['clip_min']:.4g}, {c['clip_max']:.4g}]"
        out.append(f"  {c['name']:<16} transform={c['transform']:<6} clip={clip:<20} scale={c.get('scale', 'linear'):<6} "
                   f"mean={c['mean']:.4g} std={c['std']:.4g} buckets={len(c.get('buckets', ())) + 1}")
    out.append(f"sparse columns ({len(schema['sparse'])}):")
    for c in schema["sparse"]:
        kind = f"list (avg {c['avg_len']:.2f} ids)" if c["multi"] else "single id"
        distinct = "?" if c.get("distinct") is None else c["distinct"]
        rows = default_rows(SparseColumn(**c))
        out.append(f"  {c['name']:<16} hash_size={c['hash_size']:<9} distinct={distinct:<9} table rows={rows:<9} "
                   f"hashing={c['hashing']:<8} {kind}")
    if schema.get("preprocessing"):
        out.append("preprocessing: " + "; ".join(f"{k}: {v}" for k, v in schema["preprocessing"].items()))
    out.append(f"{'date':<12} {'rows':>10} {'positives':>10} {'rate':>8}")
    for date, d in info["dates"].items():
        out.append(f"{date:<12} {d['rows']:>10} {d['positives']:>10} {d['positive_rate']:>8.4f}")
    return out
