"""Small builders shared by tests: schemas, KJTs, tiny synthetic datasets."""

from __future__ import annotations

import csv
import gzip
import io
from collections.abc import Mapping
from pathlib import Path
from typing import Any

import pyarrow as pa
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.data.dataset import Dataset
from rankitect.data.synth import SynthConfig, generate
from rankitect.schema import DenseColumn, Schema, SparseColumn


def toy_schema(num_dense: int = 3, num_sparse: int = 4, dim: int = 8, multi: bool = True) -> Schema:
    dense = tuple(DenseColumn(f"d{i}", mean=float(i), std=2.0) for i in range(num_dense))
    sparse = tuple(SparseColumn(f"s{i}", hash_size=50 + i) for i in range(num_sparse))
    if multi:
        sparse += (SparseColumn("tags", hash_size=30, multi=True, avg_len=3.0),)
    return Schema(label="label", dense=dense, sparse=sparse, embedding_dim=dim)


def random_kjt(schema: Schema, batch: int, seed: int = 0, list_len: int = 3) -> KeyedJaggedTensor:
    """Single-id columns get one id per row; multi columns `list_len` ids per row."""
    gen = torch.Generator().manual_seed(seed)
    values, lengths = [], []
    for col in schema.sparse:
        n = list_len if col.multi else 1
        values.append(torch.randint(0, col.hash_size, (batch * n,), generator=gen))
        lengths.append(torch.full((batch,), n, dtype=torch.int32))
    return KeyedJaggedTensor(keys=schema.sparse_names, values=torch.cat(values),
                             lengths=torch.cat(lengths), stride=batch)


def tiny_synth(out: Path, days: int = 3, rows_per_day: int = 2000, seed: int = 0, **kw) -> Path:
    generate(out, SynthConfig(days=days, rows_per_day=rows_per_day, seed=seed, **kw))
    return out


def read_dates(out: Path) -> dict[str, pa.Table]:
    """Every partition of the dataset at `out` as one table (rows in file order)."""
    ds = Dataset.open(str(out))
    return {d: pa.concat_tables([pq.read_table(f) for f in ds.files[d]]) for d in ds.dates}


def write_csv(path: Path, header: list[str] | None, rows: list[list[str]], sep: str = ",") -> Path:
    """Rows written with the csv module (gzipped when `path` ends in .gz)."""
    buf = io.StringIO()
    writer = csv.writer(buf, delimiter=sep, lineterminator="\n")
    if header is not None:
        writer.writerow(header)
    writer.writerows(rows)
    data = buf.getvalue().encode()
    path.write_bytes(gzip.compress(data) if path.suffix == ".gz" else data)
    return path


def random_batch(schema: Schema, batch: int, seed: int = 1) -> tuple[torch.Tensor, KeyedJaggedTensor]:
    """Dense (B, D) ~ N(1, 3^2) and `random_kjt` ids, both from `seed`."""
    gen = torch.Generator().manual_seed(seed)
    dense = torch.randn(batch, schema.num_dense, generator=gen) * 3 + 1
    return dense, random_kjt(schema, batch, seed=seed)


def prefer(mixed: Any, choices: Mapping[str, Any], strength: float = 50.0) -> None:
    """A mixed-op supernet's logits +strength on each chosen option and -strength on the others
    (near one-hot); choices not in `choices` are left as they are."""
    with torch.no_grad():
        for name, options in mixed.choice_options().items():
            if name in choices:
                logits = mixed.logits(name)
                logits.fill_(-strength)
                logits[options.index(choices[name])] = strength
