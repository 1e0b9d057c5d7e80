"""Training batches made by worker processes into pinned shared memory, for fast GPU steps.

A GPU steps a DLRM on fused tables in a few ms per 8192 rows; a loader thread in the training
process then cannot keep up: decoding, shuffling and batching need the interpreter as much as
the training loop does. `WorkerLoader` makes them in `workers` forked processes instead:

- The epoch's parquet row groups are permuted by a generator seeded with (seed, epoch) and dealt
  out round-robin; worker w reads its share, shuffles it in buffers of buffer_rows / workers
  rows with a generator seeded with (seed, epoch, w + 1), and writes whole batches into slots of
  its own ring of shared memory. The rings are page-locked once (cudaHostRegister), so a slot is
  copied to the GPU as it is, asynchronously, on a side stream, while the previous batch trains.
- The training process takes batches from the workers in turn (worker 0, 1, ..., 0, ...), so
  the order depends on the seed, the epoch and the number of workers only, never on timing;
  each worker's last rows (fewer than a batch) are put together into the epoch's last batches,
  so an epoch has the in-process loader's number of batches. The batches differ from the
  in-process loader's (other shuffle), as they differ between numbers of workers.
- A slot goes back to its worker once the copy that read it is done (a CUDA event). A worker's
  error (bad data) is raised in the training process as itself; a worker that dies is a
  RuntimeError; workers ignore Ctrl-C, which the training process handles by closing the epoch,
  and die with it when it is killed (Linux's parent-death signal).
- Workers are forked, as torch's DataLoader forks its workers: they run numpy and pyarrow only,
  never CUDA, and inherit the rings.
"""

from __future__ import annotations

import ctypes
import math
import mmap
import multiprocessing as mp
import os
import signal
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from rankitect.data.batch import Batch
from rankitect.data.loader import (
    BatchLoader,
    _Chunk,
    _chunk_from_arrow,
    _concat,
    _sparse_arrays,
    _to_batch,
    batch_rows,
)
from rankitect.schema import Schema

ALIGN = 64
POLL_S = 0.2
PR_SET_PDEATHSIG = 1
# Looked up here, before any fork: a forked child only calls it (no dynamic loading after fork).
try:
    _PRCTL: Any = ctypes.CDLL(None, use_errno=True).prctl
except (OSError, AttributeError):  # not Linux: workers end when they find their pipe closed
    _PRCTL = None


def default_workers(setting: int, device: torch.device) -> int:
    """Worker processes of a training loader: `setting`, or with -1 (auto) on CUDA up to 4 and
    at most half the CPUs this process may run on (at least 1), and none on CPU (the cores
    train there)."""
    if setting >= 0:
        return setting
    if device.type != "cuda":
        return 0
    cpus = len(os.sched_getaffinity(0)) if hasattr(os, "sched_getaffinity") else (os.cpu_count() or 2)
    return min(4, max(1, cpus // 2))


def _aligned(n: int) -> int:
    return -(-n // ALIGN) * ALIGN


class _Layout:
    """Byte offsets of one batch in a slot: labels, dense, ids, lengths."""

    def __init__(self, rows: int, dense: int, ids: int, features: int) -> None:
        self.labels = 0
        self.dense = _aligned(4 * rows)
        self.ids = self.dense + _aligned(4 * rows * dense)
        self.lengths = self.ids + _aligned(8 * ids)
        self.end = self.lengths + _aligned(4 * rows * features)


def _slot_bytes(loader: BatchLoader) -> int:
    """A slot holds a full batch; list columns get 4x their mean ids (a larger batch travels
    through the queue instead)."""
    s, b = loader.schema, loader.batch_size
    ids = sum(b if not c.multi else math.ceil(4 * max(c.avg_len, 1.0) * b) for c in s.sparse)
    return _Layout(b, s.num_dense, ids, s.num_sparse).end


def _units(loader: BatchLoader) -> list[tuple[str, int]]:
    """(file, row group) of every row group of the loader's files, in file order."""
    out = []
    for path in loader.files:
        with loader.dataset.fs.open_input_file(path) as handle:
            out += [(path, g) for g in range(pq.ParquetFile(handle).metadata.num_row_groups)]
    return out


# -- the worker side -------------------------------------------------------------------------------
def _worker_chunks(loader: BatchLoader, units: list[tuple[str, int]], epoch: int, worker: int,
                   workers: int) -> Iterator[tuple[str, _Chunk]]:
    """("batch", rows) for each full batch of this worker's share, then ("tail", rows left)."""
    schema, b = loader.schema, loader.batch_size
    order = np.random.default_rng([loader.seed, epoch]).permutation(len(units)) if loader.shuffle \
        else np.arange(len(units))
    rng = np.random.default_rng([loader.seed, epoch, worker + 1]) if loader.shuffle else None
    columns = [schema.label, *schema.dense_names, *schema.sparse_names]
    buffer_rows = max(b, loader.buffer_rows // workers)
    pending: list[_Chunk] = []

    def emit() -> Iterator[tuple[str, _Chunk]]:
        """Full batches of the pending rows (shuffled); the rows left over stay pending."""
        rest = yield from batch_rows(_concat(pending), b, rng, final=False, make=lambda rows: ("batch", rows))
        pending[:] = [rest]

    for i in order[worker::workers]:
        path, group = units[int(i)]
        with loader.dataset.fs.open_input_file(path) as handle:
            table = pq.ParquetFile(handle, pre_buffer=False).read_row_group(group, columns=columns)
        pending += [_chunk_from_arrow(rb, schema, path) for rb in table.combine_chunks().to_batches()]
        if sum(len(c) for c in pending) >= buffer_rows:
            yield from emit()
    if pending:
        yield from emit()
    yield "tail", pending[0] if pending and len(pending[0]) else None


def _write(ring: np.ndarray, offset: int, slot_bytes: int, rows: _Chunk, schema: Schema) -> dict[str, Any] | None:
    """Copy a batch of `rows` into the slot at `offset` of `ring` (uint8), laid out as `_Layout`
    says; its shape, or None if it is larger than a slot."""
    values, lengths, per_key = _sparse_arrays(rows, schema)
    layout = _Layout(len(rows), schema.num_dense, values.size, schema.num_sparse)
    if layout.end > slot_bytes:
        return None
    for start, array in ((layout.labels, rows.labels), (layout.dense, rows.dense), (layout.ids, values),
                         (layout.lengths, lengths)):
        ring[offset + start:offset + start + array.nbytes] = np.ascontiguousarray(array).reshape(-1).view(np.uint8)
    return {"rows": len(rows), "ids": int(values.size), "per_key": per_key}


def _worker(loader: BatchLoader, units: list[tuple[str, int]], epoch: int, worker: int, workers: int,
            ring: mmap.mmap, slots: int, slot_bytes: int, conn: Connection, parent: int,
            inherited: list[Connection]) -> None:
    """Write this worker's batches into its ring; messages to the training process over `conn`,
    which sends back the slots it is done with (and None to stop). `inherited`: the other pipe
    ends this fork holds, closed here (a pipe reads as closed only once nobody else holds it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for other in inherited:
        other.close()
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the training process died before the signal was set
        return
    view = np.frombuffer(ring, dtype=np.uint8)
    free = list(range(slots))
    try:
        for kind, rows in _worker_chunks(loader, units, epoch, worker, workers):
            if kind == "tail":
                conn.send(("tail", rows))
                continue
            while not free or conn.poll():
                slot = conn.recv()
                if slot is None:
                    return
                free.append(slot)
            slot = free.pop()
            shape = _write(view, slot * slot_bytes, slot_bytes, rows, loader.schema)
            if shape is None:  # larger than a slot: through the pipe
                free.append(slot)
                conn.send(("rows", rows))
            else:
                conn.send(("batch", slot, shape))
        conn.send(("done",))
    except (BrokenPipeError, EOFError):
        return  # the training process closed the epoch
    except BaseException as exc:  # noqa: BLE001 - raised as itself in the training process
        conn.send(("error", exc))


# -- the training side -----------------------------------------------------------------------------
class WorkerLoader:
    """Epochs of `loader` made by `workers` processes, handed out on `device` (see the module
    doc): `epoch(k)` yields device batches; `close()` frees the rings. `depth` slots per worker
    (batches ready ahead). Not thread-safe; one epoch at a time."""

    def __init__(self, loader: BatchLoader, workers: int, device: torch.device, depth: int = 8) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers=}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth=}")
        self.loader, self.workers, self.device, self.depth = loader, workers, torch.device(device), depth
        self.units = _units(loader)
        self.slot_bytes = _slot_bytes(loader)
        self.rings = [mmap.mmap(-1, depth * self.slot_bytes) for _ in range(workers)]
        self.bases = [torch.frombuffer(ring, dtype=torch.uint8) for ring in self.rings]
        self.pinned = self.device.type == "cuda"
        if self.pinned:
            for base in self.bases:
                torch.cuda.cudart().cudaHostRegister(base.data_ptr(), base.numel(), 0)

    def __len__(self) -> int:
        return len(self.loader)

    def close(self) -> None:
        if self.pinned:
            for base in self.bases:
                torch.cuda.cudart().cudaHostUnregister(base.data_ptr())
            self.pinned = False
        self.bases = []
        for ring in self.rings:
            ring.close()
        self.rings = []

    def epoch(self, epoch: int) -> Iterator[Batch]:
        ctx = mp.get_context("fork")  # the rings are shared with the workers by inheritance
        pipes = [ctx.Pipe() for _ in range(self.workers)]
        ends = [end for pipe in pipes for end in pipe]
        procs = [ctx.Process(target=_worker, name=f"rankitect-loader-{w}", daemon=True,
                             args=(self.loader, self.units, epoch, w, self.workers, self.rings[w], self.depth,
                                   self.slot_bytes, pipes[w][1], os.getpid(),
                                   [end for end in ends if end is not pipes[w][1]]))
                 for w in range(self.workers)]
        for p in procs:
            p.start()
        for _, child in pipes:
            child.close()
        conns = [mine for mine, _ in pipes]
        try:
            yield from _Epoch(self, procs, conns).batches()
        finally:
            for conn in conns:
                try:
                    conn.send(None)
                except OSError:
                    pass
            for p in procs:
                p.join(timeout=5)
                if p.is_alive():
                    p.terminate()
                    p.join()
            for conn in conns:
                conn.close()


class _Epoch:
    """One epoch's hand-out: workers in turn, each batch one copy to the device on a side
    stream, slots given back once their copies are done (copies end in the order issued)."""

    def __init__(self, owner: WorkerLoader, procs: list[Any], conns: list[Connection]) -> None:
        self.owner, self.procs, self.conns = owner, procs, conns
        self.schema = owner.loader.schema
        self.cuda = owner.device.type == "cuda"
        self.copier = torch.cuda.Stream(owner.device) if self.cuda else None
        self.in_flight: deque[tuple[Any, int, int]] = deque()  # (copy done event, worker, slot)
        self.held = [0] * len(conns)  # slots of each worker not yet given back
        self.compute = torch.cuda.current_stream(owner.device) if self.cuda else None

    def batches(self) -> Iterator[Batch]:
        """The epoch's batches, each handed out once the copy of the next one is issued (so it
        runs while the caller computes)."""
        ahead: tuple[Batch, Any] | None = None  # (batch, its copy's event)
        for arrived in self._arrivals():
            if ahead is not None:
                yield self._ready(*ahead)
            ahead = arrived
        if ahead is not None:
            yield self._ready(*ahead)

    def _arrivals(self) -> Iterator[tuple[Batch, Any]]:
        """(batch on the device, its copy's event) from the workers in turn, then the batches
        of their last rows put together."""
        tails: dict[int, _Chunk | None] = {}
        active = list(range(len(self.conns)))
        turn = 0
        while active:
            w = active[turn % len(active)]
            msg = self._receive(w)
            if msg[0] == "error":
                raise msg[1]
            if msg[0] == "tail":
                tails[w] = msg[1]
            elif msg[0] == "done":
                active.remove(w)
            else:
                turn += 1
                yield self._from_slot(w, msg[1], msg[2]) if msg[0] == "batch" else self._from_host(msg[1])
        rest = [c for _, c in sorted(tails.items()) if c is not None]
        if rest:
            loader = self.owner.loader
            yield from batch_rows(_concat(rest), loader.batch_size, None, final=True, drop_last=loader.drop_last,
                                  make=self._from_host)

    def _ready(self, batch: Batch, copied: Any) -> Batch:
        """`batch` as handed out: the compute stream waits for its copy from here on (not for
        the copy of the batch after it, issued already)."""
        if copied is not None:
            self.compute.wait_event(copied)
        return batch

    def _receive(self, w: int) -> Any:
        """The next message of worker w, giving back the slots whose copies are done first (and
        waiting for copies when all of w's slots are out: it may be blocked on them)."""
        self._give_back(wait_for=w if self.held[w] >= self.owner.depth else None)
        conn, proc = self.conns[w], self.procs[w]
        while True:
            try:
                if conn.poll(POLL_S):
                    return conn.recv()
            except (EOFError, OSError):
                break
            if not proc.is_alive() and not conn.poll(0):  # gone, and nothing it sent is left
                break
        proc.join(timeout=5)
        raise RuntimeError(f"loader worker {w} (pid {proc.pid}) ended before its share of the epoch "
                           f"(exit code {proc.exitcode})")

    def _send(self, w: int, slot: int) -> None:
        """A slot back to worker w; one that has finished its share and left needs none."""
        try:
            self.conns[w].send(slot)
        except OSError:
            pass

    def _give_back(self, wait_for: int | None) -> None:
        while self.in_flight:
            done, w, slot = self.in_flight[0]
            if not done.query():
                if wait_for is None or self.held[wait_for] < self.owner.depth:
                    return
                done.synchronize()
            self.in_flight.popleft()
            self._send(w, slot)
            self.held[w] -= 1

    def _from_slot(self, w: int, slot: int, shape: dict[str, Any]) -> tuple[Batch, Any]:
        """The batch in worker w's `slot`, its copy to the device issued, and the copy's event."""
        rows, ids = shape["rows"], shape["ids"]
        layout = _Layout(rows, self.schema.num_dense, ids, self.schema.num_sparse)
        start = slot * self.owner.slot_bytes
        host = self.owner.bases[w][start:start + layout.end]
        done = None
        if not self.cuda:
            data = host.clone()
            self._send(w, slot)
        else:
            self.held[w] += 1
            done = torch.cuda.Event()  # one per batch: the step on batch k waits for copy k only
            with torch.cuda.stream(self.copier):
                data = torch.empty(layout.end, dtype=torch.uint8, device=self.owner.device)
                data.copy_(host, non_blocking=True)
                done.record(self.copier)
            data.record_stream(self.compute)
            self.in_flight.append((done, w, slot))
        return _batch_of(data, layout, rows, self.schema.num_dense, ids, shape["per_key"],
                         self.schema.sparse_names), done

    def _from_host(self, rows: _Chunk) -> tuple[Batch, Any]:
        """A batch of rows that came through the pipe (larger than a slot, or the epoch's tail)."""
        host = _to_batch(rows, self.schema)
        if not self.cuda:
            return host, None
        with torch.cuda.stream(self.copier):
            batch = host.to(self.owner.device, non_blocking=False)
            done = torch.cuda.Event()
            done.record(self.copier)
        batch.record_stream(self.compute)
        return batch, done


def _batch_of(data: torch.Tensor, layout: _Layout, rows: int, dense: int, ids: int, per_key: list[int],
              keys: list[str]) -> Batch:
    """The Batch whose tensors are views of `data` (one slot's bytes, on any device)."""
    def part(start: int, count: int, dtype: torch.dtype) -> torch.Tensor:
        return data[start:start + count * dtype.itemsize].view(dtype)

    sparse = KeyedJaggedTensor(keys=keys, values=part(layout.ids, ids, torch.int64),
                               lengths=part(layout.lengths, rows * len(keys), torch.int32), stride=rows,
                               length_per_key=per_key)
    return Batch(dense=part(layout.dense, rows * dense, torch.float32).view(rows, dense), sparse=sparse,
                 labels=part(layout.labels, rows, torch.float32))
