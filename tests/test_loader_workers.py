"""Training batches from worker processes: every row once, whole epochs, same seed same batches,
errors raised as themselves, and a run on them that resumes to the model of a straight run."""

from __future__ import annotations

import math
import multiprocessing as mp
import os
import signal
import subprocess
import sys

import pyarrow as pa
import pyarrow.parquet as pq
import pytest
import torch

from rankitect.data import loader_workers
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.data.loader_workers import WorkerLoader, _Crew, default_workers
from rankitect.data.slot_layout import SlotLayout, group_size
from rankitect.errors import DataError
from rankitect.train import TrainConfig, Trainer
from rankitect.train.trainer import TrainingInterrupted, training_model
from search_spaces import baseline
from tests.conftest import _alive, wait_until
from tests.helpers import tiny_synth
from tests.test_loader import _copy, _edit_schema, _expected_rows, _rows


@pytest.fixture(scope="module")
def synth(tmp_path_factory) -> Dataset:
    """Three days (one parquet row group each) with a list column."""
    return Dataset.open(str(tiny_synth(tmp_path_factory.mktemp("w") / "ds", days=3, rows_per_day=700)))


@pytest.mark.parametrize(("workers", "depth"), [(1, 2), (2, 2), (3, 2), (2, 8), (3, 5)])
@pytest.mark.parametrize("batch_size", [128, 250])
def test_every_row_once_in_whole_epochs_and_the_same_seed_gives_the_same_batches(synth, workers, depth,
                                                                                  batch_size) -> None:
    loader = BatchLoader(synth, synth.dates, batch_size, shuffle=True, seed=4, buffer_rows=batch_size)
    made = WorkerLoader(loader, workers, torch.device("cpu"), depth=depth)  # groups of 1, 4 and 2 batches
    try:
        first, again, other = list(made.epoch(1)), list(made.epoch(1)), list(made.epoch(2))
    finally:
        made.close()
    stored = pa.concat_tables(pq.read_table(f) for f in synth.files_of(synth.dates))
    keys = synth.schema.sparse_names
    assert sorted(_rows(first, keys)) == sorted(_expected_rows(stored, synth))
    assert [len(b) for b in first] == [batch_size] * (len(loader) - 1) + [loader.num_rows - batch_size * (len(loader) - 1)]
    assert _rows(first, keys) == _rows(again, keys) and _rows(first, keys) != _rows(other, keys)
    assert all(b.sparse.keys() == keys for b in first)


def test_a_worker_error_is_raised_as_itself(synth, tmp_path) -> None:
    path = _copy(synth.uri, tmp_path)
    _edit_schema(path, lambda raw: raw["sparse"][0].update(hash_size=5))
    ds = Dataset.open(str(path))
    made = WorkerLoader(BatchLoader(ds, ds.dates, 100, shuffle=True), 2, torch.device("cpu"), depth=2)
    try:
        with pytest.raises(DataError, match="column 'C1' holds id .* outside \\[0, 5\\)"):
            list(made.epoch(0))
    finally:
        made.close()


def test_workers_by_default_on_cuda_only() -> None:
    assert default_workers(-1, torch.device("cpu")) == 0
    assert 1 <= default_workers(-1, torch.device("cuda")) <= 4
    assert default_workers(2, torch.device("cpu")) == 2


def test_training_on_worker_batches_resumes_to_the_straight_run(synth, tmp_path) -> None:
    config = TrainConfig(epochs=2, batch_size=128, lr=3e-3, checkpoint_every=5, shuffle_buffer=1000, loader_workers=2)

    def trainer(run, on_step=None) -> Trainer:
        torch.manual_seed(0)
        arch = baseline("dlrm", synth.schema)
        return Trainer(training_model(arch, synth.schema, config), synth, synth.dates[:2], config, run_dir=run,
                       progress=False, on_step=on_step)

    (tmp_path / "full").mkdir()
    (tmp_path / "cut").mkdir()
    full = trainer(tmp_path / "full")
    stats = full.fit()
    assert stats.steps == 2 * len(full.loader)
    cut = trainer(tmp_path / "cut", on_step=lambda step, loss: (_ for _ in ()).throw(KeyboardInterrupt)
                  if step == 7 else None)
    with pytest.raises(TrainingInterrupted):
        cut.fit()
    resumed = trainer(tmp_path / "cut")
    resumed.fit(resume=True)
    for key, value in full.model.state_dict().items():
        torch.testing.assert_close(resumed.model.state_dict()[key], value, rtol=0, atol=0)


def test_a_worker_that_dies_is_a_runtime_error(synth) -> None:
    loader = BatchLoader(synth, synth.dates, 100, shuffle=True, seed=1, buffer_rows=100)
    made = WorkerLoader(loader, 2, torch.device("cpu"), depth=2)
    batches = made.epoch(0)
    try:
        next(batches)  # both workers run, each then waits with its 2 slots full
        workers = {p.name: p for p in mp.active_children() if p.name.startswith("rankitect-loader-")}
        assert sorted(workers) == ["rankitect-loader-0", "rankitect-loader-1"]
        os.kill(workers["rankitect-loader-1"].pid, signal.SIGKILL)
        with pytest.raises(RuntimeError, match=r"loader worker 1 \(pid \d+\) ended before its share of the epoch "
                                               r"\(exit code -9\)"):
            list(batches)
    finally:
        batches.close()
        made.close()


CHILD = """
import sys, time, torch
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.data.loader_workers import WorkerLoader
import math
import multiprocessing as mp
ds = Dataset.open(sys.argv[1])
batches = WorkerLoader(BatchLoader(ds, ds.dates, 100, shuffle=True), 2, torch.device("cpu"), depth=2).epoch(0)
next(batches)
print(*[p.pid for p in mp.active_children()], flush=True)
time.sleep(600)
"""


def test_workers_die_with_a_killed_training_process(synth) -> None:
    proc = subprocess.Popen([sys.executable, "-c", CHILD, synth.uri], stdout=subprocess.PIPE, text=True)
    try:
        pids = [int(p) for p in proc.stdout.readline().split()]
        assert len(pids) == 2
    finally:
        proc.kill()
        proc.wait()
    wait_until(lambda: not any(_alive(pid) for pid in pids), seconds=30, what="the loader workers ended")


def _epochs_of_fresh_workers(loader: BatchLoader, epoch: int) -> list:
    made = WorkerLoader(loader, 2, torch.device("cpu"), depth=2)
    try:
        return list(made.epoch(epoch))
    finally:
        made.close()


def test_the_workers_go_on_to_the_next_epoch_with_the_batches_of_a_fresh_start(synth) -> None:
    loader = BatchLoader(synth, synth.dates, 128, shuffle=True, seed=3, buffer_rows=256)
    keys = synth.schema.sparse_names
    made = WorkerLoader(loader, 2, torch.device("cpu"), depth=2, last_epoch=2)
    try:
        first = list(made.epoch(0))
        pids = made.worker_pids
        second = list(made.epoch(1))
        assert len(pids) == 2 and made.worker_pids == pids  # the workers of epoch 0 made epoch 1
        third = list(made.epoch(2))
        assert made.worker_pids == []  # past last_epoch: stopped
    finally:
        made.close()
    for epoch, got in enumerate((first, second, third)):
        assert _rows(got, keys) == _rows(_epochs_of_fresh_workers(loader, epoch), keys)
    assert not any(_alive(pid) for pid in pids)


def test_an_epoch_left_midway_or_asked_out_of_turn_starts_the_workers_afresh(synth) -> None:
    loader = BatchLoader(synth, synth.dates, 100, shuffle=True, seed=5, buffer_rows=100)
    keys = synth.schema.sparse_names
    made = WorkerLoader(loader, 2, torch.device("cpu"), depth=2)
    try:
        batches = made.epoch(0)
        next(batches)
        left = made.worker_pids
        batches.close()
        assert made.worker_pids == [] and not any(_alive(pid) for pid in left)
        again = list(made.epoch(0))
        ahead = made.worker_pids  # at epoch 1 now
        out_of_turn = list(made.epoch(3))
        assert not set(made.worker_pids) & set(ahead)
    finally:
        made.close()
    assert _rows(again, keys) == _rows(_epochs_of_fresh_workers(loader, 0), keys)
    assert _rows(out_of_turn, keys) == _rows(_epochs_of_fresh_workers(loader, 3), keys)


def test_groups_of_up_to_four_batches_and_two_groups_at_least_per_ring() -> None:
    assert [group_size(slots) for slots in (2, 3, 4, 5, 8, 16, 64)] == [1, 1, 2, 2, 4, 4, 4]


@pytest.mark.parametrize("depth", [2, 8])
def test_batches_larger_than_a_slot_come_through_the_pipe_in_their_place(synth, monkeypatch, depth) -> None:
    """Slots sized for a batch of the list column's mean length: the longer batches travel
    through the pipe, between groups, and the epoch still holds every row once, the same way
    each time."""
    b, schema = 128, synth.schema
    ids = sum(b if not c.multi else math.ceil(c.avg_len * b) for c in schema.sparse)
    monkeypatch.setattr(loader_workers, "slot_bytes", lambda _: SlotLayout(b, schema.num_dense, ids, schema.num_sparse).end)
    ways: dict[str, int] = {"group": 0, "pipe": 0}
    from_group, from_host = _Crew._from_group, _Crew._from_host

    def counted_group(self, w, group, shapes):
        ways["group"] += len(shapes)
        return from_group(self, w, group, shapes)

    def counted_host(self, rows):
        ways["pipe"] += 1
        return from_host(self, rows)

    monkeypatch.setattr(_Crew, "_from_group", counted_group)
    monkeypatch.setattr(_Crew, "_from_host", counted_host)
    loader = BatchLoader(synth, synth.dates, b, shuffle=True, seed=2, buffer_rows=b)
    workers = 2
    made = WorkerLoader(loader, workers, torch.device("cpu"), depth=depth)
    try:
        first, again = list(made.epoch(0)), list(made.epoch(0))
    finally:
        made.close()
    keys = synth.schema.sparse_names
    stored = pa.concat_tables(pq.read_table(f) for f in synth.files_of(synth.dates))
    assert sorted(_rows(first, keys)) == sorted(_expected_rows(stored, synth))
    assert _rows(first, keys) == _rows(again, keys)
    tails = len((first, again)) * workers  # at most a batch per worker of each epoch's last rows
    assert ways["group"] > 0 and ways["pipe"] > tails  # both ways, beyond the epochs' last rows
