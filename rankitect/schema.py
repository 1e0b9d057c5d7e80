"""The dataset schema: what `schema.json` beside the date partitions says about the columns.

Stored values are already preprocessed: dense columns hold the transformed value (e.g.
log1p of a count, missing filled), sparse columns hold ids in `[0, hash_size)` with 0 meaning
"missing". The model then clips a dense column to [clip_min, clip_max], applies its `scale`
and normalizes with `mean` / `std`, all recorded here (chosen at import:
rankitect.data.dense_stats; applied by rankitect.dense_prep).
"""

from __future__ import annotations

import json
import math
from dataclasses import asdict, dataclass, field, replace
from pathlib import Path
from typing import Any

from rankitect.errors import DataError

SCHEMA_FILE = "schema.json"
SCHEMA_VERSION = 1
DENSE_TRANSFORMS = ("none", "log1p")
DENSE_SCALES = ("linear", "log1p")
HASHINGS = ("identity", "fnv1a64")


@dataclass(frozen=True)
class DenseColumn:
    """A float feature. `transform` was applied at import after filling missing values with `fill`.

    The model reads a stored value v as `scale(clip(v, clip_min, clip_max))` normalized with
    `mean` / `std` (the statistics of that scaled value); `buckets` are ascending quantile
    boundaries of the clipped stored values, for feeding the column as a categorical feature.
    Datasets written before these were chosen have scale "linear", no clip and no buckets.
    """

    name: str
    mean: float = 0.0
    std: float = 1.0
    transform: str = "none"
    fill: float = 0.0
    scale: str = "linear"
    clip_min: float | None = None
    clip_max: float | None = None
    buckets: tuple[float, ...] = ()


@dataclass(frozen=True)
class SparseColumn:
    """A categorical feature: one id per row, or a list of ids (`multi`, jagged).

    `hashing` says how a raw value became an id: "identity" (the raw value is already the id)
    or "fnv1a64" (see rankitect.data.hashing). `avg_len` is the mean number of ids per row.
    `distinct` is the number of distinct non-missing ids the import saw (exact up to 65,536,
    a sketch's estimate above: rankitect.data.distinct); None for datasets written before it
    was counted. A model's table for the column gets its rows from it (rankitect.blocks.table_rows).
    """

    name: str
    hash_size: int
    multi: bool = False
    hashing: str = "fnv1a64"
    avg_len: float = 1.0
    distinct: int | None = None


@dataclass(frozen=True)
class DateStats:
    rows: int
    positives: int


@dataclass(frozen=True)
class Schema:
    """Columns of a dataset. `embedding_dim` is the default E of every sparse column."""

    label: str
    dense: tuple[DenseColumn, ...]
    sparse: tuple[SparseColumn, ...]
    embedding_dim: int = 16
    date_column: str = "date"
    source: str = ""
    preprocessing: dict[str, Any] = field(default_factory=dict)
    dates: dict[str, DateStats] = field(default_factory=dict)

    @property
    def dense_names(self) -> list[str]:
        return [c.name for c in self.dense]

    @property
    def sparse_names(self) -> list[str]:
        return [c.name for c in self.sparse]

    @property
    def num_dense(self) -> int:
        return len(self.dense)

    @property
    def num_sparse(self) -> int:
        return len(self.sparse)

    def sorted_dates(self) -> list[str]:
        return sorted(self.dates)

    def to_dict(self) -> dict[str, Any]:
        out = asdict(self)
        out["version"] = SCHEMA_VERSION
        out["dense"] = [asdict(c) for c in self.dense]
        out["sparse"] = [asdict(c) for c in self.sparse]
        out["dates"] = {d: asdict(s) for d, s in sorted(self.dates.items())}
        return out

    @staticmethod
    def from_dict(raw: dict[str, Any], where: str = "schema") -> "Schema":
        """Parse and check a schema dict; errors name the field and the value."""
        try:
            schema = Schema(
                label=_require(raw, "label", str, where),
                dense=tuple(_dense_column(c) for c in raw.get("dense", [])),
                sparse=tuple(SparseColumn(**c) for c in raw.get("sparse", [])),
                embedding_dim=int(raw.get("embedding_dim", 16)),
                date_column=str(raw.get("date_column", "date")),
                source=str(raw.get("source", "")),
                preprocessing=dict(raw.get("preprocessing", {})),
                dates={d: DateStats(**s) for d, s in raw.get("dates", {}).items()},
            )
        except TypeError as exc:  # unknown or missing keys in a column entry
            raise DataError(f"{where}: malformed column entry: {exc}") from None
        schema.check(where)
        return schema

    def check(self, where: str = "schema") -> None:
        names = [self.label, *self.dense_names, *self.sparse_names]
        seen: set[str] = set()
        for name in names:
            if name in seen:
                raise DataError(f"{where}: column {name!r} appears twice")
            seen.add(name)
        if self.embedding_dim < 1:
            raise DataError(f"{where}: embedding_dim must be >= 1, got {self.embedding_dim}")
        for c in self.dense:
            if c.transform not in DENSE_TRANSFORMS:
                raise DataError(f"{where}: dense column {c.name!r}: transform {c.transform!r} "
                                f"is not one of {DENSE_TRANSFORMS}")
            if not (math.isfinite(c.mean) and math.isfinite(c.std) and c.std > 0):
                raise DataError(f"{where}: dense column {c.name!r}: needs finite mean and "
                                f"std > 0, got mean={c.mean}, std={c.std}")
            _check_scaling(c, where)
        for s in self.sparse:
            if s.hash_size < 2:
                raise DataError(f"{where}: sparse column {s.name!r}: hash_size must be >= 2, "
                                f"got {s.hash_size}")
            if s.distinct is not None and (not isinstance(s.distinct, int) or isinstance(s.distinct, bool)
                                           or s.distinct < 0):
                raise DataError(f"{where}: sparse column {s.name!r}: distinct must be an integer >= 0, "
                                f"got {s.distinct!r}")
            if s.hashing not in HASHINGS:
                raise DataError(f"{where}: sparse column {s.name!r}: hashing {s.hashing!r} "
                                f"is not one of {HASHINGS}")

    def save(self, directory: Path) -> None:
        path = Path(directory) / SCHEMA_FILE
        path.write_text(json.dumps(self.to_dict(), indent=2) + "\n")

    @staticmethod
    def load(directory: Path) -> "Schema":
        path = Path(directory) / SCHEMA_FILE
        if not path.is_file():
            raise DataError(f"{directory}: no {SCHEMA_FILE}; is this a dataset made by "
                            f"'rankitect data'?")
        try:
            raw = json.loads(path.read_text())
        except json.JSONDecodeError as exc:
            raise DataError(f"{path}: not valid JSON: {exc}") from None
        return Schema.from_dict(raw, where=str(path))


def _dense_column(raw: dict[str, Any]) -> DenseColumn:
    column = DenseColumn(**raw)
    if isinstance(column.buckets, list):
        column = replace(column, buckets=tuple(column.buckets))
    return column


def _check_scaling(c: DenseColumn, where: str) -> None:
    """DataError naming the column and field unless scale, clip and buckets are sound."""
    if c.scale not in DENSE_SCALES:
        raise DataError(f"{where}: dense column {c.name!r}: scale {c.scale!r} is not one of {DENSE_SCALES}")
    bounds = (c.clip_min, c.clip_max)
    if (bounds[0] is None) != (bounds[1] is None):
        raise DataError(f"{where}: dense column {c.name!r}: clip_min and clip_max are set together, "
                        f"got clip_min={c.clip_min}, clip_max={c.clip_max}")
    if bounds[0] is not None and not (_is_number(bounds[0]) and _is_number(bounds[1]) and bounds[0] < bounds[1]):
        raise DataError(f"{where}: dense column {c.name!r}: needs finite clip_min < clip_max, "
                        f"got clip_min={c.clip_min}, clip_max={c.clip_max}")
    if c.scale == "log1p" and c.clip_min is not None and c.clip_min < 0:
        raise DataError(f"{where}: dense column {c.name!r}: scale 'log1p' needs clip_min >= 0 "
                        f"(the model takes log1p of max(v, 0)), got clip_min={c.clip_min}")
    if not isinstance(c.buckets, tuple) or not all(_is_number(b) for b in c.buckets) \
            or any(a >= b for a, b in zip(c.buckets, c.buckets[1:])):
        raise DataError(f"{where}: dense column {c.name!r}: buckets must be finite numbers in "
                        f"ascending order, got {str(c.buckets)[:200]}")


def _is_number(value: Any) -> bool:
    return isinstance(value, (int, float)) and not isinstance(value, bool) and math.isfinite(value)


def _require(raw: dict[str, Any], key: str, kind: type, where: str) -> Any:
    if key not in raw:
        raise DataError(f"{where}: missing field {key!r}")
    if not isinstance(raw[key], kind):
        raise DataError(f"{where}: field {key!r} must be {kind.__name__}, got {raw[key]!r}")
    return raw[key]
