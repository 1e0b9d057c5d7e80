"""Stream batches from chosen dates of a dataset, shuffling inside a bounded buffer.

Files are read one record batch at a time with pyarrow; at most `buffer_rows` rows (plus one
record batch) are held in memory, whatever the size of the dataset. With `shuffle`, the file
order and the rows inside each buffer are permuted by a generator seeded with (seed, epoch),
so the same seed gives the same batches. A background thread prepares `prefetch` batches
ahead of the consumer (and, with `pin_memory`, copies them to page-locked memory there), and
another decodes the parquet files ahead of it.
`to_device` moves batches to the training device, on CUDA copying the next batch on a side
stream while the current one is computed on.
"""

from __future__ import annotations

import queue
import threading
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from typing import Any

import numpy as np
import pyarrow as pa
import pyarrow.compute as pc
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.data.batch import Batch
from rankitect.data.dataset import Dataset
from rankitect.errors import DataError
from rankitect.schema import Schema

READ_BATCH_ROWS = 65_536
READ_AHEAD = 2  # record batches decoded ahead of the shuffle (with prefetch > 0)


@dataclass(frozen=True)
class _Chunk:
    """Rows in columnar numpy form. The single-id columns are the rows of one (S, n) block: a
    batch's rows are one gather along its second axis (one numpy call for every column), which
    gives the feature-major ids of a KeyedJaggedTensor as they are; list columns keep (values,
    offsets)."""

    labels: np.ndarray  # (n,) float32
    dense: np.ndarray  # (n, D) float32
    single: np.ndarray  # (S, n) int64: the single-id columns, in schema order
    multi: tuple[tuple[np.ndarray, np.ndarray], ...]  # per list column: (values, offsets (n + 1,) int64)

    def __len__(self) -> int:
        return int(self.labels.shape[0])


def _chunk_from_arrow(rb: pa.RecordBatch, schema: Schema, path: str) -> _Chunk:
    labels = rb.column(schema.label).to_numpy(zero_copy_only=False).astype(np.float32)
    n = rb.num_rows
    dense = np.empty((n, schema.num_dense), np.float32)
    for j, col in enumerate(schema.dense):
        dense[:, j] = rb.column(col.name).to_numpy(zero_copy_only=False)
    singles = [c for c in schema.sparse if not c.multi]
    single = np.empty((len(singles), n), np.int64)
    for j, col in enumerate(singles):
        arr = rb.column(col.name)
        if arr.null_count:
            arr = pc.fill_null(arr, 0)
        bounds = pc.min_max(arr)
        _check_ids(bounds["min"].as_py() or 0, bounds["max"].as_py() or 0, col.hash_size, col.name, path)
        single[j] = arr.to_numpy(zero_copy_only=False)
    multi = []
    for col in (c for c in schema.sparse if c.multi):
        arr = rb.column(col.name)
        if arr.null_count:
            arr = pc.fill_null(arr, pa.scalar([], arr.type))
        values = arr.flatten().to_numpy(zero_copy_only=False).astype(np.int64)
        off = np.zeros(n + 1, np.int64)
        np.cumsum(pc.list_value_length(arr).to_numpy(zero_copy_only=False), out=off[1:])
        if values.size:
            _check_ids(int(values.min()), int(values.max()), col.hash_size, col.name, path)
        multi.append((values, off))
    return _Chunk(labels, dense, single, tuple(multi))


def _check_ids(low: int, high: int, hash_size: int, column: str, path: str) -> None:
    """DataError unless a column's smallest and largest ids lie in [0, hash_size)."""
    if low < 0 or high >= hash_size:
        raise DataError(f"{path}: column {column!r} holds id {high if high >= hash_size else low}, outside "
                        f"[0, {hash_size}) (its hash_size in schema.json)")


def _concat(chunks: list[_Chunk]) -> _Chunk:
    if len(chunks) == 1:
        return chunks[0]
    multi = []
    for j in range(len(chunks[0].multi)):
        lengths = np.concatenate([np.diff(c.multi[j][1]) for c in chunks])
        off = np.zeros(lengths.size + 1, np.int64)
        np.cumsum(lengths, out=off[1:])
        multi.append((np.concatenate([c.multi[j][0] for c in chunks]), off))
    return _Chunk(np.concatenate([c.labels for c in chunks]), np.concatenate([c.dense for c in chunks]),
                  np.concatenate([c.single for c in chunks], axis=1), tuple(multi))


def _take(chunk: _Chunk, idx: np.ndarray) -> _Chunk:
    """The rows `idx` of `chunk` (np.take: faster than fancy indexing for these gathers)."""
    multi = []
    for values, off in chunk.multi:
        starts, lengths = off[idx], off[idx + 1] - off[idx]
        new_off = np.zeros(idx.size + 1, np.int64)
        np.cumsum(lengths, out=new_off[1:])
        gather = np.repeat(starts - new_off[:-1], lengths) + np.arange(new_off[-1])
        multi.append((values[gather], new_off))
    return _Chunk(np.take(chunk.labels, idx), np.take(chunk.dense, idx, axis=0),
                  np.take(chunk.single, idx, axis=1), tuple(multi))


def _slice(chunk: _Chunk, start: int, stop: int) -> _Chunk:
    multi = tuple((values[off[start]:off[stop]], off[start:stop + 1] - off[start]) for values, off in chunk.multi)
    return _Chunk(chunk.labels[start:stop], chunk.dense[start:stop], chunk.single[:, start:stop], multi)


def _sparse_arrays(chunk: _Chunk, schema: Schema) -> tuple[np.ndarray, np.ndarray, list[int]]:
    """`chunk`'s ids as a KeyedJaggedTensor holds them: (values int64 [N] feature-major in
    schema order, lengths int32 [F * n], ids per key)."""
    n = len(chunk)
    if not chunk.multi:  # every column one id per row: the block is the ids, lengths all 1
        values = chunk.single.ravel()
        lengths = np.ones(values.size, np.int32)
        length_per_key = [n] * chunk.single.shape[0]
    else:
        parts, lens, length_per_key = [], [], []
        singles, lists = iter(chunk.single), iter(chunk.multi)
        for col in schema.sparse:
            if col.multi:
                ids, off = next(lists)
                parts.append(ids)
                lens.append(np.diff(off).astype(np.int32))
                length_per_key.append(int(off[-1]))
            else:
                parts.append(next(singles))
                lens.append(np.ones(n, np.int32))
                length_per_key.append(n)
        values = np.concatenate(parts) if parts else np.zeros(0, np.int64)
        lengths = np.concatenate(lens) if lens else np.zeros(0, np.int32)
    return values, lengths, length_per_key


def _to_batch(chunk: _Chunk, schema: Schema) -> Batch:
    """A Batch of `chunk`: ids feature-major in schema order (KeyedJaggedTensor's layout)."""
    values, lengths, length_per_key = _sparse_arrays(chunk, schema)
    # The ids per key, known here for free: given to the KJT, torchrec's embedding lookup need
    # not compute them from the lengths (a .tolist(), i.e. a device sync per step on CUDA).
    sparse = KeyedJaggedTensor(keys=schema.sparse_names, values=torch.from_numpy(values),
                               lengths=torch.from_numpy(lengths), stride=len(chunk), length_per_key=length_per_key)
    return Batch(dense=torch.from_numpy(chunk.dense), sparse=sparse, labels=torch.from_numpy(chunk.labels))


class BatchLoader:
    """Iterable of `Batch` over `dates` of `dataset`; `epoch(k)` gives epoch k's order.

    Memory is bounded by `buffer_rows` (+ READ_AHEAD + 1 parquet record batches + `prefetch`
    batches).
    Iterating is not thread-safe; each iteration starts its own reader thread. `pin_memory`
    (CUDA only) hands out batches in page-locked memory, pinned in the reader thread.
    """

    def __init__(self, dataset: Dataset, dates: list[str], batch_size: int,
                 shuffle: bool = False, seed: int = 0, buffer_rows: int = 200_000,
                 prefetch: int = 4, drop_last: bool = False, pin_memory: bool = False) -> None:
        if batch_size < 1:
            raise ValueError(f"batch_size must be >= 1, got {batch_size=}")
        if buffer_rows < batch_size:
            raise ValueError(f"buffer_rows must be >= batch_size, got {buffer_rows=}, {batch_size=}")
        self.dataset = dataset
        self.schema = dataset.schema
        self.dates = sorted(dates)
        self.files = dataset.files_of(self.dates)
        self.batch_size = batch_size
        self.shuffle = shuffle
        self.seed = seed
        self.buffer_rows = buffer_rows
        self.prefetch = prefetch
        self.drop_last = drop_last
        self.pin_memory = pin_memory
        self.keys = self.schema.sparse_names

    @property
    def num_rows(self) -> int:
        return self.dataset.rows_of(self.dates)

    def __len__(self) -> int:
        """Number of batches of one epoch."""
        full, rest = divmod(self.num_rows, self.batch_size)
        return full + (1 if rest and not self.drop_last else 0)

    def __iter__(self) -> Iterator[Batch]:
        return self.epoch(0)

    def epoch(self, epoch: int) -> Iterator[Batch]:
        batches = self._batches(epoch)
        if self.pin_memory:
            batches = (b.pin_memory() for b in batches)
        if self.prefetch <= 0:
            return batches
        return _prefetched(batches, self.prefetch)

    def _record_batches(self, files: list[str]) -> Iterator[_Chunk]:
        columns = [self.schema.label, *self.schema.dense_names, *self.schema.sparse_names]
        for path in files:
            with self.dataset.fs.open_input_file(path) as handle:
                reader = pq.ParquetFile(handle, pre_buffer=False)
                for rb in reader.iter_batches(batch_size=READ_BATCH_ROWS, columns=columns):
                    yield _chunk_from_arrow(rb, self.schema, path)

    def _batches(self, epoch: int) -> Iterator[Batch]:
        rng = np.random.default_rng([self.seed, epoch]) if self.shuffle else None
        files = list(self.files)
        if rng is not None:
            files = [files[i] for i in rng.permutation(len(files))]
        chunks = self._record_batches(files)
        if self.prefetch > 0:  # parquet decoding in a thread of its own, beside the shuffling
            chunks = _prefetched(chunks, READ_AHEAD)
        pending: list[_Chunk] = []
        pending_rows = 0
        for chunk in chunks:
            pending.append(chunk)
            pending_rows += len(chunk)
            if pending_rows >= self.buffer_rows:
                rest = yield from self._emit(_concat(pending), rng, final=False)
                pending, pending_rows = [rest], len(rest)
        if pending_rows:
            yield from self._emit(_concat(pending), rng, final=True)

    def _emit(self, buf: _Chunk, rng: np.random.Generator | None, final: bool):
        """Yield the batches of `buf` (see `batch_rows`); return the rows left over."""
        return (yield from batch_rows(buf, self.batch_size, rng, final, self.drop_last,
                                      make=lambda rows: _to_batch(rows, self.schema)))


def batch_rows(buf: _Chunk, batch_size: int, rng: np.random.Generator | None, final: bool,
               drop_last: bool = False, make: Callable[[_Chunk], Any] = lambda rows: rows):
    """Yield `make(rows)` for the rows of each full batch of `buf` (with `final`, also of a last
    partial one, unless `drop_last`); return the rows left over. Shuffled (`rng`): batch k holds
    rows perm[k*B:(k+1)*B] of one permutation, gathered batch by batch, so no permuted copy of
    the buffer is made and no batch waits for one."""
    n, b = len(buf), batch_size
    perm = rng.permutation(n) if rng is not None else None

    def rows(start: int, end: int) -> _Chunk:
        return _slice(buf, start, end) if perm is None else _take(buf, perm[start:end])

    stop = n if final else n - n % b
    for start in range(0, stop, b):
        end = min(start + b, n)
        if end - start < b and drop_last:
            break
        yield make(rows(start, end))
    return rows(stop, n)


_DONE = object()


def _prefetched(batches: Iterator[Batch], depth: int) -> Iterator[Batch]:
    """Run `batches` in a daemon thread, `depth` items ahead; errors re-raise in the consumer."""
    q: queue.Queue = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def put(item: object) -> bool:
        while not stop.is_set():
            try:
                q.put(item, timeout=0.1)
                return True
            except queue.Full:
                continue
        return False

    def produce() -> None:
        try:
            for item in batches:
                if not put(item):
                    return
            put(_DONE)
        except BaseException as exc:  # noqa: BLE001 - handed to the consumer, which re-raises
            put(exc)

    thread = threading.Thread(target=produce, name="rankitect-loader", daemon=True)
    thread.start()
    try:
        while True:
            item = q.get()
            if item is _DONE:
                return
            if isinstance(item, BaseException):
                raise item
            yield item
    finally:
        stop.set()
        thread.join(timeout=5)


def to_device(batches: Iterable[Batch], device: torch.device, overlap: bool = True) -> Iterator[Batch]:
    """`batches` moved to `device`, in order.

    On CUDA with `overlap`, the copy of batch n+1 is issued on a side stream before batch n is
    handed out, so it runs while the caller computes on batch n (asynchronous when the batches
    are in pinned memory: `BatchLoader(pin_memory=True)`); the current stream waits for a copy
    before its batch is handed out. Without `overlap`, each batch is copied when it is reached.
    On CPU the batches pass through unchanged.
    """
    if device.type != "cuda":
        yield from batches
        return
    if not overlap:
        for batch in batches:
            yield batch.to(device, non_blocking=True)
        return
    copier = torch.cuda.Stream(device)
    compute = torch.cuda.current_stream(device)

    def start(batch: Batch | None) -> Batch | None:
        if batch is None:
            return None
        with torch.cuda.stream(copier):
            return batch.to(device, non_blocking=True)

    source = iter(batches)
    pending = start(next(source, None))
    while pending is not None:
        compute.wait_stream(copier)
        ready = pending
        ready.record_stream(compute)  # allocated on the side stream, used on this one
        pending = start(next(source, None))
        yield ready
