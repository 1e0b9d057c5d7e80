"""The preprocessing spec of an artifact: how each raw column became a model input at import.

The schema records most of it per column (dense `fill` and `transform`, sparse `hash_size`,
`hashing`, `multi`); what only the importer knew is filled in here from the dataset's `source`:
Criteo clamps counts at 0 before log1p, Avazu derives `hour_of_day` from HH of `hour`, and a
table import splits list text on its `list_sep`. `rankitect.export.serving` applies the spec;
the tests check it against each importer's output on the same raw rows.
"""

from __future__ import annotations

from typing import Any

from rankitect.data import avazu, criteo
from rankitect.export.serving import FORMAT
from rankitect.schema import Schema


def preprocessing_spec(schema: Schema) -> dict[str, Any]:
    """The JSON form read by `rankitect_serving` (see its module docstring for the rules)."""
    source = schema.source
    dense = [{"name": c.name, "column": c.name, "fill": c.fill, "transform": c.transform,
              "clamp_min": 0.0 if source == criteo.SOURCE else None} for c in schema.dense]
    sparse = []
    for c in schema.sparse:
        entry: dict[str, Any] = {"name": c.name, "column": c.name, "hash_size": c.hash_size,
                                 "hashing": c.hashing, "multi": c.multi, "list_sep": None,
                                 "slice": None, "pattern": None}
        if c.multi and c.hashing != "identity":
            entry["list_sep"] = schema.preprocessing.get("list_sep")  # None: lists only
        if source == avazu.SOURCE and c.name == avazu.HOUR_OF_DAY:
            entry.update(column=avazu.HOUR, slice=list(avazu.HOUR_OF_DAY_SLICE), pattern=avazu.HOUR_PATTERN)
        sparse.append(entry)
    return {"format": FORMAT, "source": source, "label": schema.label,
            "importer": dict(schema.preprocessing), "dense": dense, "sparse": sparse}
