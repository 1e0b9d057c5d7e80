"""Open a dataset folder (local path or any URI pyarrow can open) and check it against its schema."""

from __future__ import annotations

import functools
import json
from dataclasses import dataclass

import pyarrow as pa
import pyarrow.fs as pafs
import pyarrow.parquet as pq

from rankitect.data.dates import resolve_dates
from rankitect.errors import DataError, SchemaMismatchError
from rankitect.schema import SCHEMA_FILE, Schema

PARTITION_PREFIX = "date="


def _filesystem(uri: str) -> tuple[pafs.FileSystem, str]:
    if "://" in uri:
        try:
            return pafs.FileSystem.from_uri(uri)
        except (pa.ArrowInvalid, pa.ArrowNotImplementedError) as exc:
            raise DataError(f"cannot open dataset {uri!r}: {exc}") from None
    return pafs.LocalFileSystem(), str(pafs.LocalFileSystem().normalize_path(uri))


@dataclass(frozen=True)
class Dataset:
    """A dataset's schema and its parquet files by date (sorted), already checked to agree."""

    uri: str
    fs: pafs.FileSystem
    root: str
    schema: Schema
    files: dict[str, tuple[str, ...]]

    @staticmethod
    def shared(uri: str) -> "Dataset":
        """The dataset at `uri`, opened once per process (for workers that run many trials or
        planning jobs on the same data)."""
        return _open_shared(str(uri))

    @staticmethod
    def open(uri: str, check_files: bool = True) -> "Dataset":
        """Read schema.json and list `date=*/` partitions; SchemaMismatchError names the column."""
        uri = str(uri)
        fs, root = _filesystem(uri)
        info = fs.get_file_info(root)
        if info.type != pafs.FileType.Directory:
            raise DataError(f"dataset {uri!r} does not exist or is not a folder")
        schema_path = f"{root.rstrip('/')}/{SCHEMA_FILE}"
        if fs.get_file_info(schema_path).type != pafs.FileType.File:
            raise DataError(f"{uri}: no {SCHEMA_FILE}; is this a dataset made by 'rankitect data'?")
        with fs.open_input_stream(schema_path) as stream:
            try:
                raw = json.loads(stream.read().decode("utf-8"))
            except (json.JSONDecodeError, UnicodeDecodeError) as exc:
                raise DataError(f"{schema_path}: not valid JSON: {exc}") from None
        schema = Schema.from_dict(raw, where=schema_path)
        files = _list_partitions(fs, root)
        dataset = Dataset(uri=uri, fs=fs, root=root, schema=schema, files=files)
        if check_files:
            dataset.check_files()
        return dataset

    @property
    def dates(self) -> list[str]:
        return sorted(self.files)

    def select_dates(self, spec: str, field: str = "dates") -> list[str]:
        return resolve_dates(spec, self.dates, field)

    def files_of(self, dates: list[str]) -> list[str]:
        missing = [d for d in dates if d not in self.files]
        if missing:
            raise DataError(f"dates {missing} are not in dataset {self.uri}")
        return [f for d in sorted(dates) for f in self.files[d]]

    def rows_of(self, dates: list[str]) -> int:
        return sum(self.schema.dates[d].rows for d in dates if d in self.schema.dates)

    def check_files(self) -> None:
        """Every file holds exactly the schema's columns with compatible types."""
        listed, recorded = set(self.files), set(self.schema.dates)
        if listed != recorded and recorded:
            only_files = sorted(listed - recorded)
            only_schema = sorted(recorded - listed)
            raise SchemaMismatchError(
                f"{self.uri}: column {self.schema.date_column!r}: partitions on disk and "
                f"{SCHEMA_FILE} disagree (only on disk: {only_files}, only in schema: {only_schema})")
        expected = _expected_kinds(self.schema)
        for path in (f for paths in self.files.values() for f in paths):
            with self.fs.open_input_file(path) as handle:
                arrow_schema = pq.read_schema(handle)
            for name, kind in expected.items():
                idx = arrow_schema.get_field_index(name)
                if idx < 0:
                    raise SchemaMismatchError(f"{path}: column {name!r} of {SCHEMA_FILE} is "
                                              f"missing from the file")
                if not _is_kind(arrow_schema.field(idx).type, kind):
                    raise SchemaMismatchError(
                        f"{path}: column {name!r} is {arrow_schema.field(idx).type} in the file "
                        f"but {SCHEMA_FILE} says {kind}")
            extra = [n for n in arrow_schema.names if n not in expected]
            if extra:
                raise SchemaMismatchError(f"{path}: column {extra[0]!r} is in the file but not "
                                          f"in {SCHEMA_FILE}")


def _list_partitions(fs: pafs.FileSystem, root: str) -> dict[str, tuple[str, ...]]:
    files: dict[str, list[str]] = {}
    for entry in fs.get_file_info(pafs.FileSelector(root, recursive=False)):
        if entry.type != pafs.FileType.Directory or not entry.base_name.startswith(PARTITION_PREFIX):
            continue
        date = entry.base_name[len(PARTITION_PREFIX):]
        parts = [f.path for f in fs.get_file_info(pafs.FileSelector(entry.path))
                 if f.type == pafs.FileType.File and f.base_name.endswith(".parquet")]
        if parts:
            files[date] = sorted(parts)
    return {d: tuple(files[d]) for d in sorted(files)}


def _expected_kinds(schema: Schema) -> dict[str, str]:
    kinds = {schema.label: "number"}
    kinds.update({c.name: "number" for c in schema.dense})
    kinds.update({c.name: ("list<integer>" if c.multi else "integer") for c in schema.sparse})
    return kinds


def _is_kind(t: pa.DataType, kind: str) -> bool:
    if kind == "number":
        return pa.types.is_integer(t) or pa.types.is_floating(t) or pa.types.is_boolean(t)
    if kind == "integer":
        return pa.types.is_integer(t)
    return (pa.types.is_list(t) or pa.types.is_large_list(t)) and pa.types.is_integer(t.value_type)


@functools.lru_cache(maxsize=8)
def _open_shared(uri: str) -> Dataset:
    return Dataset.open(uri)
