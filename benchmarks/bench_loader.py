"""Loader rows/s over a bare pyarrow scan of the same files, and over the DLRM training rate.

The bare scan reads the same columns of the same parquet files and does nothing else: the
ceiling of any parquet loader. The loader also shuffles (bounded buffer), builds tensors and
a KeyedJaggedTensor per batch.
"""

from __future__ import annotations

import argparse
import tempfile
from pathlib import Path

import pyarrow.parquet as pq

from benchmarks.common import interleaved_rates, print_table
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.data.synth import SynthConfig, generate


def _bare_scan(ds: Dataset):
    columns = [ds.schema.label, *ds.schema.dense_names, *ds.schema.sparse_names]

    def run() -> int:
        n = 0
        for path in ds.files_of(ds.dates):
            for rb in pq.ParquetFile(path).iter_batches(batch_size=65_536, columns=columns):
                n += rb.num_rows
        return n

    return run


def _loader(ds: Dataset, batch_size: int, epochs: list[int]):
    loader = BatchLoader(ds, ds.dates, batch_size, shuffle=True, seed=0)

    def run() -> int:
        epochs[0] += 1
        return sum(len(b) for b in loader.epoch(epochs[0]))

    return run


def measure(rows: int = 1_000_000, batch_size: int = 2048, rounds: int = 3,
            workdir: Path | None = None) -> dict[str, float]:
    work = Path(workdir or tempfile.mkdtemp(prefix="rk-bench-"))
    cfg = SynthConfig(days=2, rows_per_day=rows // 2, num_sparse=26, num_dense=13,
                      cardinality=19_999, tag_mean_len=0.0)
    generate(work / "loader", cfg, force=True)
    ds = Dataset.open(str(work / "loader"))
    rates = interleaved_rates({"bare pyarrow scan": _bare_scan(ds),
                               "rankitect loader": _loader(ds, batch_size, [0])}, rounds)
    rates["rows"] = rows
    return rates


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--rows", type=int, default=1_000_000)
    args = parser.parse_args()
    r = measure(rows=args.rows)
    print_table(f"Loader throughput ({r['rows']:,} rows, 26 sparse + 13 dense, batch 2048, shuffled)",
                ["reader", "rows/s"], [[k, r[k]] for k in ("bare pyarrow scan", "rankitect loader")])
    print(f"loader / bare scan = {r['rankitect loader'] / r['bare pyarrow scan']:.3f}")


if __name__ == "__main__":
    main()
