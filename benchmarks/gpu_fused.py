"""Section e of bench_gpu: fused tables against torchrec's DistributedModelParallel on one device.

- The registry DLRM on fused tables (Rankitect's training path: rowwise Adagrad in the tables'
  backward, Adam on the dense layers) against torchrec.models.dlrm.DLRM sharded by
  DistributedModelParallel on the same single device (the path torchrec's own DLRM example
  trains on: apply_optimizer_in_backward(RowWiseAdagrad) on its tables, a fused table-batched
  kernel per sharding group, Adam on the dense part), with the same tables, the same MLPs and
  the same batches already on the device; the old path (tables as dense parameters of Adam)
  for reference. Target: registry / DMP >= 0.95.
- The Trainer end to end (batches from the loader's worker processes or its thread, overlapped
  copies, the loss read every LOSS_SYNC_EVERY steps) against the same model stepping over
  batches already on the device. Target >= 0.9.
"""

from __future__ import annotations

import dataclasses
import tempfile
from pathlib import Path
from typing import Any

import torch
import torch.distributed as dist
from torchrec.distributed.model_parallel import DistributedModelParallel
from torchrec.models.dlrm import DLRM
from torchrec.modules.embedding_configs import EmbeddingBagConfig
from torchrec.modules.embedding_modules import EmbeddingBagCollection
from torchrec.optim import RowWiseAdagrad
from torchrec.optim.apply_optimizer_in_backward import apply_optimizer_in_backward
from torchrec.optim.keyed import CombinedOptimizer, KeyedOptimizerWrapper
from torchrec.optim.optimizers import in_backward_optimizer_filter
from torchrec.sparse.jagged_tensor import KeyedJaggedTensor

from benchmarks.gpu_timing import fit_timed, free, rates, train_pass, with_dim
from rankitect.blocks.embedding import EmbeddingModule
from rankitect.blocks.fused_tables import TableOptimizer
from rankitect.data.dataset import Dataset
from rankitect.data.synth import SynthConfig, generate
from rankitect.schema import Schema, SparseColumn
from rankitect.train import TrainConfig, Trainer
from rankitect.train.optimizers import model_optimizer
from rankitect.train.trainer import training_model
from search_spaces.baselines import dlrm

TABLE_LR, DENSE_LR = 0.05, 1e-3
DMP_BOTTOM, DMP_TOP = (512, 256), (512, 512, 256)  # the reference run: bottom 512-256-64, top 512-512-256-1
BASELINE_BOTTOM, BASELINE_TOP = (64,), (128, 64)


def _process_group(device: torch.device) -> None:
    """A one-process group (an in-memory store: no port), as DMP needs one."""
    if not dist.is_initialized():
        dist.init_process_group("nccl" if device.type == "cuda" else "gloo", store=dist.HashStore(),
                                rank=0, world_size=1)


def torchrec_dmp_dlrm(schema: Any, rows: tuple[int, ...], dim: int, bottom: tuple[int, ...],
                      top: tuple[int, ...], device: torch.device) -> tuple[torch.nn.Module, Any]:
    """torchrec's DLRM under DistributedModelParallel on `device` (world size 1), tables trained by
    rowwise Adagrad in the backward, Adam on the rest: (model, its combined optimizer)."""
    _process_group(device)
    tables = [EmbeddingBagConfig(name=f"t_{c.name}", embedding_dim=dim, num_embeddings=r, feature_names=[c.name])
              for c, r in zip(schema.sparse, rows)]
    model = DLRM(embedding_bag_collection=EmbeddingBagCollection(tables=tables, device=torch.device("meta")),
                 dense_in_features=schema.num_dense, dense_arch_layer_sizes=[*bottom, dim],
                 over_arch_layer_sizes=[*top, 1], dense_device=device)
    apply_optimizer_in_backward(RowWiseAdagrad, model.sparse_arch.parameters(), {"lr": TABLE_LR, "eps": 1e-8})
    dmp = DistributedModelParallel(module=model, device=device)
    dense = KeyedOptimizerWrapper(dict(in_backward_optimizer_filter(dmp.named_parameters())),
                                  lambda params: torch.optim.Adam(params, lr=DENSE_LR))
    return dmp, CombinedOptimizer([dmp.fused_optimizer, dense])


def _forward_dmp(model: torch.nn.Module, b: Any) -> torch.Tensor:
    return model(b.dense, b.sparse).squeeze(1)


def device_checks(device: torch.device) -> dict[str, Any]:
    """On `device`: fused tables compute what plain tables compute (ids remapped, mean pooling),
    5 steps of fused SGD leave the tables torch's SGD leaves plain ones, the table optimizer's
    state survives a save and load, and the CUDA-only Adam forms train: max abs differences."""
    schema = Schema(label="y", dense=(), sparse=tuple(SparseColumn(f"f{i}", hash_size=5000, distinct=300 + i)
                                                      for i in range(4)), embedding_dim=8)
    gen = torch.Generator().manual_seed(0)
    kjts = [KeyedJaggedTensor(keys=schema.sparse_names, values=torch.randint(0, 5000, (4 * 64,), generator=gen),
                              lengths=torch.ones(4 * 64, dtype=torch.int32), stride=64).to(device) for _ in range(5)]
    torch.manual_seed(0)
    plain = EmbeddingModule(schema, 8, "mean", device)
    fused = EmbeddingModule(schema, 8, "mean", device, optimizer=TableOptimizer("sgd", lr=0.5))
    fused.load_state_dict(plain.state_dict())
    out: dict[str, Any] = {"forward": float((fused(kjts[0]) - plain(kjts[0])).abs().max())}
    sgd = torch.optim.SGD(plain.parameters(), lr=0.5)
    for kjt in kjts:
        sgd.zero_grad()
        plain(kjt).square().sum().backward()
        sgd.step()
        fused(kjt).square().sum().backward()
    out["sgd_5_steps"] = max(float((fused.state_dict()[k] - v).abs().max()) for k, v in plain.state_dict().items())
    for name in ("rowwise_adagrad", "adam", "rowwise_adam") if device.type == "cuda" else ("rowwise_adagrad",):
        a = EmbeddingModule(schema, 8, "sum", device, optimizer=TableOptimizer(name, lr=0.01))
        for kjt in kjts[:3]:
            a(kjt).square().sum().backward()
        b = EmbeddingModule(schema, 8, "sum", device, optimizer=TableOptimizer(name, lr=0.01))
        b.load_state_dict(a.state_dict())
        b.ebc.load_optimizer_state_dict(a.ebc.optimizer_state_dict())
        for m in (a, b):
            m(kjts[3]).square().sum().backward()
        out[f"{name}_save_load_then_step"] = max(float((a.state_dict()[k] - v).abs().max())
                                                  for k, v in b.state_dict().items())
    return out


def section_fused(ctx: Any) -> dict[str, Any]:
    s, dev = ctx.sizes, ctx.device
    out: dict[str, Any] = {"checks": device_checks(dev)}
    configs = {"DMP reference MLPs": (DMP_BOTTOM, DMP_TOP), "baseline MLPs": (BASELINE_BOTTOM, BASELINE_TOP)}
    for name, (bottom, top) in configs.items():
        schema = with_dim(ctx.dataset.schema, s.dim)
        arch = dlrm(schema, bottom, top)
        arch = type(arch).from_dict({**arch.to_dict(), "embedding": {"rows": s.hash_size}})
        fused_cfg = TrainConfig(lr=DENSE_LR, embedding_lr=TABLE_LR, device=str(dev))
        torch.manual_seed(0)
        ours = training_model(arch, schema, fused_cfg)
        rows = ours.embedding.rows
        runs = {"rankitect fused": train_pass(ours, ctx.device_batches, model_optimizer(ours, fused_cfg, dev), dev)}
        torch.manual_seed(0)
        theirs, their_opt = torchrec_dmp_dlrm(schema, rows, s.dim, bottom, top, dev)
        runs["torchrec DMP"] = train_pass(theirs, ctx.device_batches, their_opt, dev, forward=_forward_dmp)
        dense_cfg = TrainConfig(lr=DENSE_LR, embedding_optimizer="dense", device=str(dev))
        torch.manual_seed(0)
        old = training_model(arch, schema, dense_cfg)
        runs["rankitect dense Adam tables"] = train_pass(old, ctx.device_batches,
                                                         model_optimizer(old, dense_cfg, dev), dev)
        r = rates(runs, s.rounds, dev)
        out[name] = {**{f"{k} ex/s": v for k, v in r.items()}, "ratio": r["rankitect fused"] / r["torchrec DMP"],
                     "fused_over_dense": r["rankitect fused"] / r["rankitect dense Adam tables"],
                     "bottom": [*bottom, s.dim], "top": [*top, 1], "E": s.dim, "rows": s.hash_size,
                     "plan": str(getattr(theirs, "plan", ""))[:2000]}
        del ours, theirs, their_opt, old, runs
        free(dev)
    out["trainer"] = trainer_end_to_end(ctx)
    out["setup"] = (f"{len(ctx.dataset.schema.sparse)} tables x {s.hash_size:,} rows, E={s.dim}, batch {s.batch:,}, "
                    f"{len(ctx.device_batches)} batches already on the device x {s.rounds} rounds, interleaved; "
                    f"rowwise Adagrad lr {TABLE_LR} on the tables (in the backward), Adam lr {DENSE_LR} on the "
                    f"dense layers, fp32; DMP: one process, world size 1")
    return out


def section_trainer(ctx: Any) -> dict[str, Any]:
    """Section e's Trainer measurement alone (`--sections trainer`)."""
    return {"trainer": trainer_end_to_end(ctx)}


LOADERS = {"reader thread": 0, "2 worker processes": 2, "4 worker processes (the default here)": 4}


def trainer_end_to_end(ctx: Any, epochs: int = 2, rounds: int = 2) -> dict[str, Any]:
    """The Trainer's examples/s over its last epoch by the wall clock (the epoch's start, i.e.
    the loader's first buffer, included; the run's start-up and warm-up left out) against the
    same model's steps over batches already on the device, measured right before and right after
    each run (a GPU's rate drifts by 20% over minutes: a reference taken once carries that
    drift into every ratio). `rounds` rounds of every loader, interleaved; the ratio of a run is
    its last epoch against the mean of the references around it. Its own data: two days of
    8 x ctx's rows per day, shaped as ctx.dataset (on the GPU an epoch then lasts about 3 s)."""
    s, dev = ctx.sizes, ctx.device
    rows_per_day = 8 * s.rows_per_day
    work = Path(tempfile.mkdtemp(prefix="rk-trainer-"))
    cfg_data = SynthConfig(days=2, rows_per_day=rows_per_day, num_sparse=s.tables, num_dense=s.dense,
                           cardinality=s.hash_size - 1, tag_mean_len=0.0, embedding_dim=s.dim)
    generate(work / "big", cfg_data, force=True)
    ds = Dataset.open(str(work / "big"))
    arch = dlrm(ds.schema, DMP_BOTTOM, DMP_TOP)
    cfg = TrainConfig(epochs=epochs, batch_size=s.batch, lr=DENSE_LR, embedding_lr=TABLE_LR, device=str(dev),
                      checkpoint_every=0, shuffle_buffer=max(200_000, s.batch))

    def resident() -> float:
        torch.manual_seed(0)
        model = training_model(arch, ds.schema, cfg)
        rate = rates({"resident": train_pass(model, ctx.device_batches, model_optimizer(model, cfg, dev), dev)},
                     s.rounds, dev)["resident"]
        del model
        free(dev)
        return rate

    references = [resident()]
    out: dict[str, Any] = {"epochs": epochs, "rounds": rounds}
    for _ in range(rounds):
        for label, workers in LOADERS.items():
            torch.manual_seed(0)
            run_cfg = dataclasses.replace(cfg, loader_workers=workers)
            trainer, stats, last = fit_timed(lambda on_epoch: Trainer(training_model(arch, ds.schema, run_cfg), ds,
                                                                      ds.dates, run_cfg, progress=False,
                                                                      on_epoch=on_epoch), dev)
            del trainer
            free(dev)
            references.append(resident())
            reference = (references[-2] + references[-1]) / 2
            runs = out.setdefault(label, {"last_epoch": [], "whole_run": [], "resident": [], "ratio_last_epoch": [],
                                          "rows_per_epoch": stats.examples // epochs})
            runs["last_epoch"].append(last)
            runs["whole_run"].append(stats.examples_per_second)
            runs["resident"].append(reference)
            runs["ratio_last_epoch"].append(last / reference if last else None)
    out["resident_examples_per_s"] = references
    return out


