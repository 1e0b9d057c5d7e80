"""Training batches made by worker processes into pinned shared memory, for fast GPU steps.

A GPU steps a DLRM on fused tables in a few ms per 8192 rows; a loader thread in the training
process then cannot keep up: decoding, shuffling and batching need the interpreter as much as
the training loop does. `WorkerLoader` makes them in `workers` forked processes instead:

- The epoch's parquet row groups are permuted by a generator seeded with (seed, epoch) and dealt
  out round-robin; worker w reads its share, shuffles it in buffers of buffer_rows / workers
  rows with a generator seeded with (seed, epoch, w + 1), and writes whole batches into slots of
  its own ring of shared memory. The rings are page-locked once (cudaHostRegister). A worker
  hands its batches over in groups of up to GROUP consecutive slots: one message, one
  asynchronous copy to the GPU on a side stream (while the previous batch trains) and one event
  per group, for the training process's own work per batch is what limits a fast GPU step.
- The training process takes groups from the workers in turn (worker 0, 1, ..., 0, ...), so
  the order depends on the seed, the epoch, the number of workers and the ring's depth only
  (which sets the group size), never on timing;
  each worker's last rows (fewer than a batch) are put together into the epoch's last batches,
  so an epoch has the in-process loader's number of batches. The batches differ from the
  in-process loader's (other shuffle), as they differ between numbers of workers.
- The workers outlive an epoch: once a worker's share of epoch k is written it goes on with
  its share of epoch k+1 (up to `last_epoch`), into the slots the training process gives back,
  so the next epoch's first batches are ready when it asks for them: no start-up, no first
  shuffle buffer and no idle device between epochs (nor during an evaluation between them).
  An epoch asked for out of turn, or one left before its end, starts the workers afresh.
- A group goes back to its worker once the copy that read it is done (a CUDA event). A worker's
  error (bad data) is raised in the training process as itself; a worker that dies is a
  RuntimeError; workers ignore Ctrl-C, which the training process handles by closing the epoch,
  and die with it when it is killed (Linux's parent-death signal).
- Workers are forked, as torch's DataLoader forks its workers: they run numpy and pyarrow only,
  never CUDA, and inherit the rings.
"""

from __future__ import annotations

import ctypes
import mmap
import multiprocessing as mp
import os
import signal
import sys
from collections import deque
from collections.abc import Iterator
from multiprocessing.connection import Connection
from typing import Any

import numpy as np
import pyarrow.parquet as pq
import torch

from rankitect.data.batch import Batch
from rankitect.data.loader import (
    BatchLoader,
    _Chunk,
    _chunk_from_arrow,
    _concat,
    _to_batch,
    batch_rows,
)
from rankitect.data.slot_layout import SlotLayout, batch_of, group_size, slot_bytes, write_slot

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


def _worker(loader: BatchLoader, units: list[tuple[str, int]], epochs: range, worker: int, workers: int,
            ring: mmap.mmap, slots: int, slot_bytes: int, conn: Connection, parent: int,
            inherited: list[Connection]) -> None:
    """Write this worker's batches of each of `epochs` into its ring, one epoch after the other;
    messages to the training process over `conn` (groups of batches; "done" ends an epoch's
    share), which sends back the groups it is done with (and None to stop). `inherited`: the
    other pipe ends this fork holds, closed here (a pipe reads as closed only once nobody else
    holds it)."""
    signal.signal(signal.SIGINT, signal.SIG_IGN)
    for other in inherited:
        other.close()
    if _PRCTL is not None:
        _PRCTL(PR_SET_PDEATHSIG, int(signal.SIGKILL))
    if os.getppid() != parent:  # the training process died before the signal was set
        return
    view = np.frombuffer(ring, dtype=np.uint8)
    size = group_size(slots)
    free = list(range(slots // size))  # groups of `size` consecutive slots
    filling: int | None = None  # the group being filled
    shapes: list[dict[str, Any]] = []  # its batches' shapes

    def hand_over() -> None:
        nonlocal filling, shapes
        if shapes:
            conn.send(("group", filling, shapes))
            filling, shapes = None, []

    try:
        for epoch in epochs:
            for kind, rows in _worker_chunks(loader, units, epoch, worker, workers):
                if kind == "tail":
                    hand_over()
                    conn.send(("tail", rows))
                    continue
                if filling is None:
                    while not free or conn.poll():
                        back = conn.recv()
                        if back is None:
                            return
                        free.append(back)
                    filling = free.pop()
                shape = write_slot(view, (filling * size + len(shapes)) * slot_bytes, slot_bytes, rows, loader.schema)
                if shape is None:  # larger than a slot: through the pipe, after the batches before it
                    hand_over()
                    if filling is not None:
                        free.append(filling)
                        filling = None
                    conn.send(("rows", rows))
                    continue
                shapes.append(shape)
                if len(shapes) == size:
                    hand_over()
            hand_over()
            conn.send(("done",))
    except (BrokenPipeError, EOFError):
        return  # the training process stopped the workers
    except BaseException as exc:  # noqa: BLE001 - raised as itself in the training process
        conn.send(("error", exc))


# -- the training side -----------------------------------------------------------------------------
class WorkerLoader:
    """Epochs of `loader` made by `workers` processes, handed out on `device` (see the module
    doc): `epoch(k)` yields device batches; `close()` stops the workers and frees the rings.
    `depth` slots per worker (batches ready ahead, across an epoch's end too), handed over in
    groups of `group_size(depth)`; the workers prepare no epoch after `last_epoch` (None: no
    bound). Not thread-safe; one epoch at a time."""

    def __init__(self, loader: BatchLoader, workers: int, device: torch.device, depth: int = 8,
                 last_epoch: int | None = None) -> None:
        if workers < 1:
            raise ValueError(f"workers must be >= 1, got {workers=}")
        if depth < 2:
            raise ValueError(f"depth must be >= 2, got {depth=}")
        self.loader, self.workers, self.device, self.depth = loader, workers, torch.device(device), depth
        self.last_epoch = last_epoch
        self.units = _units(loader)
        self.slot_bytes = slot_bytes(loader)
        self.rings = [mmap.mmap(-1, depth * self.slot_bytes) for _ in range(workers)]
        self.bases = [torch.frombuffer(ring, dtype=torch.uint8) for ring in self.rings]
        self.pinned = self.device.type == "cuda"
        if self.pinned:
            for base in self.bases:
                torch.cuda.cudart().cudaHostRegister(base.data_ptr(), base.numel(), 0)
        self._crew: _Crew | None = None

    def __len__(self) -> int:
        return len(self.loader)

    def close(self) -> None:
        self._stop()
        if self.pinned:
            for base in self.bases:
                torch.cuda.cudart().cudaHostUnregister(base.data_ptr())
            self.pinned = False
        self.bases = []
        for ring in self.rings:
            ring.close()
        self.rings = []

    @property
    def worker_pids(self) -> list[int]:
        """The running workers' process ids (none between a stop and the next epoch)."""
        return [p.pid for p in self._crew.procs] if self._crew is not None else []

    def epoch(self, epoch: int) -> Iterator[Batch]:
        if self._crew is None or self._crew.next_epoch != epoch:
            self._stop()
            self._crew = self._start(epoch)
        crew, finished = self._crew, False
        try:
            yield from crew.batches()
            finished = True
        finally:
            if not finished or (self.last_epoch is not None and epoch >= self.last_epoch):
                self._stop()  # left mid-epoch (its slots and messages are in an unknown state), or the last

    def _start(self, epoch: int) -> _Crew:
        ctx = mp.get_context("fork")  # the rings are shared with the workers by inheritance
        pipes = [ctx.Pipe() for _ in range(self.workers)]
        ends = [end for pipe in pipes for end in pipe]
        stop = sys.maxsize if self.last_epoch is None else max(epoch, self.last_epoch) + 1
        procs = [ctx.Process(target=_worker, name=f"rankitect-loader-{w}", daemon=True,
                             args=(self.loader, self.units, range(epoch, stop), w, self.workers,
                                   self.rings[w], self.depth, self.slot_bytes, pipes[w][1], os.getpid(),
                                   [end for end in ends if end is not pipes[w][1]]))
                 for w in range(self.workers)]
        for p in procs:
            p.start()
        for _, child in pipes:
            child.close()
        return _Crew(self, epoch, procs, [mine for mine, _ in pipes])

    def _stop(self) -> None:
        crew, self._crew = self._crew, None
        if crew is None:
            return
        for conn in crew.conns:  # a worker waiting for a slot reads None; one blocked sending (a
            try:                 # tail larger than the pipe's buffer) finds the pipe closed
                conn.send(None)
            except OSError:
                pass
            conn.close()
        for p in crew.procs:
            p.join(timeout=5)
            if p.is_alive():
                p.terminate()
                p.join()
        if crew.copier is not None:
            crew.copier.synchronize()  # no copy still reads a slot once the rings may go


class _Crew:
    """Running workers and their hand-out: workers in turn, each group of batches one copy to
    the device on a side stream, groups given back once their copies are done (copies end in
    the order issued), epoch after epoch from `next_epoch` on."""

    def __init__(self, owner: WorkerLoader, first_epoch: int, procs: list[Any], conns: list[Connection]) -> None:
        self.owner, self.procs, self.conns = owner, procs, conns
        self.next_epoch = first_epoch
        self.schema = owner.loader.schema
        self.cuda = owner.device.type == "cuda"
        self.copier = torch.cuda.Stream(owner.device) if self.cuda else None
        self.size = group_size(owner.depth)
        self.groups = owner.depth // self.size  # per worker
        self.in_flight: deque[tuple[Any, int, int]] = deque()  # (copy done event, worker, group)
        self.held = [0] * len(conns)  # groups of each worker not yet given back
        self.waited: Any = None  # the copy event the compute stream waits for already
        self.compute = torch.cuda.current_stream(owner.device) if self.cuda else None

    def batches(self) -> Iterator[Batch]:
        """Epoch `next_epoch`'s batches, each handed out once the copy of the next one is issued
        (so it runs while the caller computes); `next_epoch` moves on once all are handed out."""
        ahead: tuple[Batch, Any] | None = None  # (batch, its copy's event)
        for arrived in self._arrivals():
            if ahead is not None:
                yield self._ready(*ahead)
            ahead = arrived
        if ahead is not None:
            yield self._ready(*ahead)
        self.next_epoch += 1

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
            elif msg[0] == "group":
                turn += 1
                yield from self._from_group(w, msg[1], msg[2])
            else:
                turn += 1
                yield self._from_host(msg[1])
        rest = [c for _, c in sorted(tails.items()) if c is not None]
        if rest:
            loader = self.owner.loader
            yield from batch_rows(_concat(rest), loader.batch_size, None, final=True, drop_last=loader.drop_last,
                                  make=self._from_host)

    def _ready(self, batch: Batch, copied: Any) -> Batch:
        """`batch` as handed out: the compute stream waits for its copy from here on (not for
        the copy of the batch after it, issued already)."""
        if copied is not None and copied is not self.waited:
            self.compute.wait_event(copied)
            self.waited = copied
        return batch

    def _receive(self, w: int) -> Any:
        """The next message of worker w, giving back the groups whose copies are done first
        (and waiting for copies when all of w's groups are out: it may be blocked on them)."""
        self._give_back(wait_for=w if self.held[w] >= self.groups else None)
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

    def _send(self, w: int, group: int) -> None:
        """A group back to worker w; one that has finished its share and left needs none."""
        try:
            self.conns[w].send(group)
        except OSError:
            pass

    def _give_back(self, wait_for: int | None) -> None:
        while self.in_flight:
            done, w, group = self.in_flight[0]
            if not done.query():
                if wait_for is None or self.held[wait_for] < self.groups:
                    return
                done.synchronize()
            self.in_flight.popleft()
            self._send(w, group)
            self.held[w] -= 1

    def _from_group(self, w: int, group: int, shapes: list[dict[str, Any]]) -> Iterator[tuple[Batch, Any]]:
        """The batches of worker w's `group` (one per shape, in consecutive slots), copied to
        the device in one copy, each with the copy's event."""
        layouts = [SlotLayout(s["rows"], self.schema.num_dense, s["ids"], self.schema.num_sparse) for s in shapes]
        slot_bytes = self.owner.slot_bytes
        start = group * self.size * slot_bytes
        host = self.owner.bases[w][start:start + (len(shapes) - 1) * slot_bytes + layouts[-1].end]
        done = None
        if not self.cuda:
            data = host.clone()
            self._send(w, group)
        else:
            self.held[w] += 1
            done = torch.cuda.Event()  # one per group: a step waits for its own group's copy only
            with torch.cuda.stream(self.copier):
                data = torch.empty(host.numel(), dtype=torch.uint8, device=self.owner.device)
                data.copy_(host, non_blocking=True)
                done.record(self.copier)
            data.record_stream(self.compute)
            self.in_flight.append((done, w, group))
        keys = self.schema.sparse_names
        for i, (shape, layout) in enumerate(zip(shapes, layouts)):
            part = data[i * slot_bytes:i * slot_bytes + layout.end]
            yield batch_of(part, layout, shape["rows"], self.schema.num_dense, shape["ids"], shape["per_key"],
                            keys), done

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
