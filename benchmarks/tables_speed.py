"""Sections (a) and (b) of bench_tables: the tables' step and a whole DLRM, against torchrec.

(a) One training step of 26 tables (E=16, batch 2048, one id per table per row, ids drawn
Zipf-like over the rows) at each table size: Rankitect's fused lookup (the EmbeddingModule
the models use: the id remap, then fbgemm's table-batched kernel with rowwise Adagrad in the
backward) against torchrec's FusedEmbeddingBagCollection (the same kernel behind torchrec's own
per-feature split), and plain tables with dense Adam (torchrec's EmbeddingBagCollection: every
row updated at every step) where they fit.
(b) The registry DLRM on fused tables against torchrec.models.dlrm.DLRM on a
FusedEmbeddingBagCollection: the same tables (rows taken from the registry model), the same
MLP sizes, rowwise Adagrad on the tables and Adam on the dense layers in both, the same batches.
"""

from __future__ import annotations

import gc
from pathlib import Path

import numpy as np
import torch
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.modules.fused_embedding_modules import FusedEmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from benchmarks.gpu_timing import rates, train_pass
from rankitect.arch.graph import Architecture
from rankitect.blocks.embedding import EmbeddingModule
from rankitect.blocks.fused_tables import TableOptimizer
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader
from rankitect.data.synth import SynthConfig, generate
from rankitect.data.synth_profiles import ZipfSampler
from rankitect.schema import Schema, SparseColumn
from rankitect.train.config import TrainConfig
from rankitect.train.optimizers import model_optimizer
from rankitect.train.trainer import training_model
from search_spaces import baseline

TABLES, DIM, BATCH = 26, 16, 2048
TABLE_LR, DENSE_LR = 0.05, 1e-3


def zipf_batches(rows: int, n: int, batch: int = BATCH, seed: int = 0, hash_size: int | None = None
                 ) -> list[KeyedJaggedTensor]:
    """`n` KJTs of TABLES features x `batch` rows, one id each: Zipf(1.05) ranks over the
    table's rows, shuffled into ids (so hot rows are spread), in [0, hash_size or rows)."""
    rng = np.random.default_rng(seed)
    space = hash_size or rows
    zipf = ZipfSampler(1.05)
    perm = rng.permutation(space)
    out = []
    for _ in range(n):
        ids = perm[zipf.draw(rng, space, TABLES * batch)]
        out.append(KeyedJaggedTensor(keys=[f"f{i}" for i in range(TABLES)], values=torch.from_numpy(ids),
                                     lengths=torch.ones(TABLES * batch, dtype=torch.int64), stride=batch))
    return out


def _schema(rows: int, hash_size: int) -> Schema:
    return Schema(label="y", dense=(), sparse=tuple(SparseColumn(f"f{i}", hash_size=hash_size)
                                                    for i in range(TABLES)), embedding_dim=DIM)


def _step_pass(forward, batches: list[KeyedJaggedTensor], optimizer=None):
    """A callable: one pass of steps (lookup, loss = mean of squares, backward, step)."""
    def run() -> int:
        for kjt in batches:
            loss = forward(kjt).square().mean()
            if optimizer is not None:
                optimizer.zero_grad(set_to_none=True)
            loss.backward()
            if optimizer is not None:
                optimizer.step()
        return len(batches)
    return run


def _contestant(name: str, rows: int, kjts: list[KeyedJaggedTensor]):
    """(module, one timed pass) of one contestant of section (a)."""
    if name.startswith("rankitect"):
        hash_size = 2 * rows if "remapped" in name else rows
        module = EmbeddingModule(_schema(rows, hash_size), DIM, "sum", rows=tuple([rows] * TABLES),
                                 optimizer=TableOptimizer("rowwise_adagrad", TABLE_LR))
        return module, _step_pass(module, kjts, model_optimizer(module, TrainConfig(), torch.device("cpu")))
    configs = [EmbeddingBagConfig(name=f"t{i}", embedding_dim=DIM, num_embeddings=rows, feature_names=[f"f{i}"])
               for i in range(TABLES)]
    if name == "torchrec fused":
        module = FusedEmbeddingBagCollection(configs, optimizer_type=RowWiseAdagrad,
                                             optimizer_kwargs={"lr": TABLE_LR, "eps": 1e-8})
        return module, _step_pass(lambda k: module(k).values(), kjts)
    module = EmbeddingBagCollection(configs)
    return module, _step_pass(lambda k: module(k).values(), kjts, torch.optim.Adam(module.parameters(), DENSE_LR))


def table_step(rows: int, dense_adam: bool, batches: int = 12, rounds: int = 5,
               together_bytes: float = 6e9) -> dict[str, float]:
    """Examples/s of each contestant at `rows` rows per table. When all fit in `together_bytes`
    they are built at once and their rounds interleave; otherwise (10M rows x 26 tables is
    16.6 GB) each is built, timed and freed in turn, in the same order at every size."""
    names = ["rankitect fused", "rankitect fused, ids remapped", "torchrec fused"] + (["dense Adam"] if dense_adam else [])
    ids = zipf_batches(rows, batches, hash_size=rows)
    remapped = zipf_batches(rows, batches, hash_size=2 * rows)
    kjts = {name: remapped if "remapped" in name else ids for name in names}
    cpu = torch.device("cpu")
    if rows * TABLES * DIM * 4 * (len(names) + 3) <= together_bytes:  # + Adam's grad and moments
        built = {name: _contestant(name, rows, kjts[name]) for name in names}
        out = rates({name: run for name, (_, run) in built.items()}, rounds, cpu)
    else:
        out = {}
        for name in names:
            gc.collect()
            module, run = _contestant(name, rows, kjts[name])
            out[name] = rates({name: run}, rounds, cpu)[name]
            del module, run
    return {name: steps * BATCH for name, steps in out.items()}  # examples/s


def torchrec_fused_dlrm(schema: Schema, rows: tuple[int, ...], dim: int, bottom: tuple[int, ...],
                        top: tuple[int, ...]) -> DLRM:
    """torchrec's DLRM on a FusedEmbeddingBagCollection (rowwise Adagrad) of tables `rows`."""
    tables = [EmbeddingBagConfig(name=f"t_{c.name}", embedding_dim=dim, num_embeddings=r, feature_names=[c.name])
              for c, r in zip(schema.sparse, rows)]
    ebc = FusedEmbeddingBagCollection(tables, optimizer_type=RowWiseAdagrad,
                                      optimizer_kwargs={"lr": TABLE_LR, "eps": 1e-8})
    return DLRM(embedding_bag_collection=ebc, dense_in_features=schema.num_dense,
                dense_arch_layer_sizes=[*bottom, dim], over_arch_layer_sizes=[*top, 1])


def dlrm_speed(work: Path, rows: int = 100_000, data_rows: int = 60_000, rounds: int = 5) -> dict[str, object]:
    """(b): examples/s of the two DLRMs on the same batches, and their ratio."""
    cfg = SynthConfig(days=1, rows_per_day=data_rows, num_sparse=TABLES, num_dense=13,
                      cardinality=rows - 1, tag_mean_len=0.0)
    generate(work / "criteo_like", cfg, force=True)
    ds = Dataset.open(str(work / "criteo_like"))
    batches = list(BatchLoader(ds, ds.dates, BATCH, drop_last=True))
    schema, cpu = ds.schema, torch.device("cpu")
    config = TrainConfig(embedding_lr=TABLE_LR, lr=DENSE_LR)
    torch.manual_seed(0)  # tables of hash_size rows: both models see the same ids (no remap)
    arch = Architecture.from_dict({**baseline("dlrm", schema).to_dict(),
                                   "embedding": {"rows": {c.name: c.hash_size for c in schema.sparse}}})
    ours = training_model(arch, schema, config)
    table_rows = ours.embedding.rows
    torch.manual_seed(0)
    theirs = torchrec_fused_dlrm(schema, table_rows, schema.embedding_dim, (64,), (128, 64))
    dense_theirs = [p for n, p in theirs.named_parameters() if "embedding_bags" not in n]
    result: dict[str, object] = rates({
        "rankitect": train_pass(ours, batches, model_optimizer(ours, config, cpu), cpu),
        "torchrec": train_pass(theirs, batches, torch.optim.Adam(dense_theirs, lr=DENSE_LR), cpu,
                               forward=lambda m, b: m(b.dense, b.sparse).squeeze(1)),
    }, rounds, cpu)
    result["ratio"] = result["rankitect"] / result["torchrec"]
    result["sizes"] = (f"{TABLES} tables of {min(table_rows):,}..{max(table_rows):,} rows, E={schema.embedding_dim}, "
                       f"13 dense, bottom 64-16, top 128-64-1, batch {BATCH}, {len(batches)} batches x {rounds} rounds")
    return result
