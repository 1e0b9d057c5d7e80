"""The four sections of `benchmarks.bench_gpu`; each returns a JSON-able dict of its results.

a. dlrm      the registry-built DLRM against torchrec.models.dlrm.DLRM: training examples/s,
             same sizes, same batches (already on the device), SGD, target ratio >= 0.95.
b. supernet  the interactions space's mixed-op supernet (every candidate computed, DNAS step:
             log-loss + lambda E[FLOPs]) against each candidate module trained alone.
c. flops     TFLOP/s of the MLP part of an MLPerf-size DLRM against the matmul ceiling measured
             here; bf16 autocast against fp32: examples/s, and NE of Trainer runs on synthetic data
             of known Bayes NE (also with the tables as dense parameters, the path before fused tables).
d. loader    loader rows/s against the GPU training rate; pinned against pageable copies;
             the next batch's copy overlapped with the step against serial copies.
e. fused     the registry DLRM on fused tables against torchrec's DLRM under
             DistributedModelParallel on one device; the Trainer end to end (benchmarks/gpu_fused.py).
"""

from __future__ import annotations

import json
import os
from collections.abc import Callable
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import torch
import torch.nn.functional as F
from torch.utils.flop_counter import FlopCounterMode

from benchmarks.bench_dlrm_speed import torchrec_dlrm, trainer
from benchmarks.gpu_fused import section_fused, section_trainer
from benchmarks.gpu_timing import (
    BASELINE_BOTTOM,
    BASELINE_TOP,
    MLPERF_BOTTOM,
    MLPERF_TOP,
    Sizes,
    batch_bytes,
    fit_timed,
    free,
    rates,
    seconds_per_call,
    sync,
    train_pass,
    with_dim,
)
from rankitect.cost import cost_of
from rankitect.data.batch import Batch
from rankitect.data.dataset import Dataset
from rankitect.data.loader import BatchLoader, to_device
from rankitect.model import build_model
from rankitect.train import TrainConfig, Trainer, evaluate
from rankitect.train.config import autocast
from rankitect.train.optimizers import model_optimizer
from rankitect.train.trainer import training_model
from search_spaces.baselines import dlrm
from search_spaces.interactions import InteractionsSpace
from search_spaces.interactions_cost import SIZE_CHOICE, uniform_choices


@dataclass
class Context:
    device: torch.device
    sizes: Sizes
    dataset: Dataset  # Criteo-like: the sizes of every speed measurement
    quality_dataset: Dataset  # default-difficulty synthetic data (known Bayes NE): the NE runs
    host_batches: list[Batch]  # the timed batches in host memory
    device_batches: list[Batch]  # the same batches on the device
    results: dict[str, Any]  # the sections' results so far (d reads a and c)

    @property
    def cuda(self) -> bool:
        return self.device.type == "cuda"


def _forward(model: torch.nn.Module, b: Batch) -> torch.Tensor:
    return model(b.dense, b.sparse)


def _forward_torchrec(model: torch.nn.Module, b: Batch) -> torch.Tensor:
    return model(b.dense, b.sparse).squeeze(1)


# -- a. registry DLRM against torchrec's DLRM --------------------------------------------------
def section_dlrm(ctx: Context) -> dict[str, Any]:
    s, out = ctx.sizes, {}
    configs = {"baseline MLPs": (s.dim, BASELINE_BOTTOM, BASELINE_TOP),
               "MLPerf MLPs": (s.mlperf_dim, MLPERF_BOTTOM, MLPERF_TOP)}
    for name, (dim, bottom, top) in configs.items():
        schema = with_dim(ctx.dataset.schema, dim)
        torch.manual_seed(0)
        ours = build_model(dlrm(schema, bottom, top), schema, ctx.device)
        torch.manual_seed(0)
        theirs = torchrec_dlrm(schema, dim, bottom, top, ctx.device)
        fused_cfg = TrainConfig(optimizer="sgd", lr=0.01, embedding_optimizer="sgd", embedding_lr=0.01,
                                device=str(ctx.device))
        torch.manual_seed(0)
        fused = training_model(dlrm(schema, bottom, top), schema, fused_cfg)
        fused_opt = model_optimizer(fused, fused_cfg, ctx.device)
        r = rates({"rankitect": trainer(ours, _forward, ctx.device_batches, 0.01, ctx.device),
                   "torchrec": trainer(theirs, _forward_torchrec, ctx.device_batches, 0.01, ctx.device),
                   "rankitect fused": train_pass(fused, ctx.device_batches, fused_opt, ctx.device)},
                  s.rounds, ctx.device)
        out[name] = {"rankitect_examples_per_s": r["rankitect"], "torchrec_examples_per_s": r["torchrec"],
                     "ratio": r["rankitect"] / r["torchrec"], "E": dim, "bottom": [*bottom, dim],
                     "top": [*top, 1], "flops_per_example": cost_of(dlrm(schema, bottom, top), schema).flops,
                     "rankitect_fused_examples_per_s": r["rankitect fused"],
                     "fused_over_dense": r["rankitect fused"] / r["rankitect"]}
        del ours, theirs, fused, fused_opt
        free(ctx.device)
    out["setup"] = ("SGD lr 0.01, fp32, same batches already on the device, interleaved passes; "
                    "one table per sparse column (torchrec EmbeddingBagCollection in both, dense table "
                    "gradients); 'fused': the registry DLRM on fused tables (SGD in the tables' backward)")
    return out


# -- b. the DNAS supernet against its modules alone ---------------------------------------------
def _alone_choices(space: InteractionsSpace) -> dict[str, dict[str, Any]]:
    """One architecture per module computation the supernet runs, every layer that module at the
    largest width: dcn full rank and at the largest low rank, mlp at the largest hidden width,
    attention at every head count; "skip" is the part all share (embedding, h0, head)."""
    o, wmax = space.options, max(space.options.widths)
    sizes = {"dcn": [r for r in (0, max(o.dcn_ranks)) if r in o.dcn_ranks], "mlp": [max(o.mlp_hidden)]}
    out = {}
    for module in space.layer_candidates()[0]:
        if module == "attention":
            options = next(c.options for c in space.choices() if c.name == "l0.heads")
        else:
            options = sizes.get(module, [None])
        for size in dict.fromkeys(options):
            label = module if size is None else f"{module} {SIZE_CHOICE[module]}={size}"
            out[label] = uniform_choices(space, wmax, module, size)
    return out


def section_supernet(ctx: Context, lam: float = 0.1) -> dict[str, Any]:
    s, dev = ctx.sizes, ctx.device
    schema = with_dim(ctx.dataset.schema, s.dim)
    space = InteractionsSpace(schema)
    reference = float(cost_of(space.decode(space.largest()), schema).flops)
    torch.manual_seed(0)
    net = space.mixed_supernet().to(dev)
    weights = torch.optim.Adam(list(net.weight_parameters()), lr=3e-3)
    arch = torch.optim.Adam(list(net.arch_parameters()), lr=0.05, betas=(0.5, 0.999))

    def supernet_pass() -> int:
        n = 0
        for b in ctx.device_batches:
            loss = F.binary_cross_entropy_with_logits(net(b.dense, b.sparse), b.labels)
            loss = loss + lam * net.expected_flops() / reference
            weights.zero_grad(set_to_none=True)
            arch.zero_grad(set_to_none=True)
            loss.backward()
            weights.step()
            arch.step()
            n += len(b)
        return n

    def ms_per_step(rate: float) -> float:
        return 1000.0 * s.batch / rate

    supernet_ms = [ms_per_step(rates({"supernet": supernet_pass}, s.supernet_rounds, dev)["supernet"])]
    alone: dict[str, float] = {}
    for label, choices in _alone_choices(space).items():
        torch.manual_seed(0)
        model = build_model(space.decode(choices), schema, dev)
        opt = torch.optim.Adam(model.parameters(), lr=3e-3)
        alone[label] = ms_per_step(rates({label: train_pass(model, ctx.device_batches, opt, dev)},
                                         s.supernet_rounds, dev)[label])
        del model, opt
        free(dev)
    derived = net.derive()
    torch.manual_seed(0)
    model = build_model(space.decode(derived), schema, dev)
    opt = torch.optim.Adam(model.parameters(), lr=3e-3)
    derived_ms = ms_per_step(rates({"derived": train_pass(model, ctx.device_batches, opt, dev)},
                                   s.supernet_rounds, dev)["derived"])
    del model, opt
    free(dev)
    supernet_ms.append(ms_per_step(rates({"supernet": supernet_pass}, s.supernet_rounds, dev)["supernet"]))
    shared = alone.get("skip", 0.0)
    modules = {k: v for k, v in alone.items() if k != "skip"}
    sum_alone = sum(modules.values())
    increments = shared + sum(v - shared for v in modules.values())
    supernet = sum(supernet_ms) / 2
    return {
        "supernet_ms_per_step": supernet, "supernet_ms_first_last": supernet_ms,
        "alone_ms_per_step": alone, "sum_alone_ms": sum_alone, "ratio_supernet_over_sum_alone": supernet / sum_alone,
        "shared_plus_increments_ms": increments, "ratio_supernet_over_shared_plus_increments": supernet / increments,
        "derived_choices": derived, "derived_ms_per_step": derived_ms,
        "ratio_derived_over_supernet": derived_ms / supernet,
        "derived_flops_per_example": cost_of(space.decode(derived), schema).flops,
        "supernet_flops_per_example": net.full_flops(),
        "space": {"layers": space.options.layers, "widths": list(space.options.widths),
                  "dcn_ranks": list(space.options.dcn_ranks), "mlp_hidden": list(space.options.mlp_hidden),
                  "candidates": list(space.layer_candidates()[0]), "E": s.dim},
        "setup": (f"supernet: softmax-mixed forward of every candidate in each of "
                  f"{space.options.layers} layers, loss = logloss + {lam} E[FLOPs]/largest, Adam on weights "
                  f"(lr 3e-3) and logits (lr 0.05); a module alone = the space's architecture with every "
                  f"layer that module at width {max(space.options.widths)} (decode of the choices), Adam "
                  f"lr 3e-3; 'skip' = embedding + h0 + head only. shared+increments = skip + sum(module - "
                  f"skip). The derived architecture is derive() of the supernet after its timed steps "
                  f"(synthetic data)."),
    }


# -- c. TFLOP/s against the ceiling; bf16 against fp32 ------------------------------------------------
def _ceiling(ctx: Context) -> dict[str, float]:
    n, out = ctx.sizes.matmul_n, {}
    before = torch.get_float32_matmul_precision()
    try:
        for label, dtype, precision in (("bf16", torch.bfloat16, "highest"), ("fp32", torch.float32, "highest"),
                                        ("tf32", torch.float32, "high")):
            if label == "tf32" and not ctx.cuda:
                continue
            torch.set_float32_matmul_precision(precision)
            a = torch.randn(n, n, device=ctx.device, dtype=dtype)
            b = torch.randn(n, n, device=ctx.device, dtype=dtype)
            seconds = seconds_per_call(lambda: torch.matmul(a, b), ctx.sizes.matmul_iters, ctx.device)
            out[label] = 2 * n ** 3 / seconds / 1e12
    finally:
        torch.set_float32_matmul_precision(before)
    return out


def _mlp_part(ctx: Context, model: torch.nn.Module, batch: int, precision: str) -> dict[str, float]:
    """Forward + backward of everything after the embedding lookup (bottom MLP, dot interaction,
    top MLP) on random inputs, no optimizer: matmul FLOPs counted by torch's FlopCounterMode."""
    schema = model.validated.schema
    g = torch.Generator().manual_seed(0)
    dense = torch.randn(batch, schema.num_dense, generator=g).to(ctx.device)
    embedded = torch.randn(batch, schema.num_sparse, schema.embedding_dim, generator=g).to(ctx.device)
    embedded.requires_grad_(True)
    labels = torch.randint(0, 2, (batch,), generator=g).float().to(ctx.device)

    def step() -> None:
        model.zero_grad(set_to_none=True)
        embedded.grad = None
        with autocast(ctx.device, precision):
            logits = model.interact(dense, embedded)
        F.binary_cross_entropy_with_logits(logits.float(), labels).backward()

    with FlopCounterMode(display=False) as counter:
        step()
    flops = counter.get_total_flops()
    seconds = seconds_per_call(step, ctx.sizes.mlp_iters, ctx.device)
    return {"batch": batch, "matmul_flops_per_step": flops, "ms_per_step": 1000 * seconds,
            "tflops": flops / seconds / 1e12}


# label -> (precision, embedding_optimizer): fused rowwise Adagrad (the default) and the old path
NE_SETTINGS = {"fp32": ("fp32", "rowwise_adagrad"), "bf16": ("bf16", "rowwise_adagrad"),
               "fp32 dense tables": ("fp32", "dense")}


def trainer_run(ds: Dataset, ctx: Context, seed: int, precision: str, embedding_optimizer: str, epochs: int,
                lr: float, optimizer: str = "adam") -> tuple[Trainer, Any, float | None]:
    """A Trainer run (the real path: loader thread, pinned batches, overlapped copies) of the
    baseline DLRM on every date but the last: (the trainer, its TrainStats, examples/s of its
    last epoch by the wall clock: start-up and warm-up left out; None for one epoch)."""
    cfg = TrainConfig(epochs=epochs, batch_size=ctx.sizes.batch, lr=lr, seed=seed, device=str(ctx.device),
                      precision=precision, embedding_optimizer=embedding_optimizer, optimizer=optimizer,
                      checkpoint_every=0,
                      shuffle_buffer=max(200_000, ctx.sizes.batch))
    torch.manual_seed(seed)
    return fit_timed(lambda on_epoch: Trainer(training_model(dlrm(ds.schema), ds.schema, cfg), ds, ds.dates[:-1],
                                              cfg, progress=False, on_epoch=on_epoch), ctx.device)


def _ne_runs(ctx: Context) -> dict[str, Any]:
    """NE of the baseline DLRM trained by the Trainer on the synthetic data of known Bayes NE
    (default difficulty), per seed: fp32 and bf16 autocast on fused tables, and fp32 with the
    tables as dense parameters of Adam (the path before fused tables)."""
    s, ds = ctx.sizes, ctx.quality_dataset
    runs = []
    for seed in s.ne_seeds:
        for label, (precision, tables) in NE_SETTINGS.items():
            trainer_, stats, _ = trainer_run(ds, ctx, seed, precision, tables, s.ne_epochs, s.ne_lr)
            metrics, _ = evaluate(trainer_.model, ds, ds.dates[-1:], s.batch, trainer_.device)
            runs.append({"seed": seed, "precision": label, "ne": metrics.ne, "auc": metrics.auc,
                         "train_examples_per_s": stats.examples_per_second, "steps": stats.steps})
            del trainer_
            free(ctx.device)
    truth = json.loads((Path(ds.uri) / "truth.json").read_text())
    return {"runs": runs, "bayes_ne_eval_day": truth["bayes_ne"].get(ds.dates[-1]),
            "setup": (f"rankitect Trainer, registry DLRM (baseline MLPs, E={ds.schema.embedding_dim}), Adam "
                      f"lr {s.ne_lr} cosine on the dense layers, rowwise Adagrad lr {TrainConfig().embedding_lr} "
                      f"on fused tables ('dense tables': Adam on them), batch {s.batch:,}, "
                      f"{s.ne_epochs} epochs over days 1-{s.days - 1} ({s.rows_per_day * (s.days - 1):,} rows) "
                      f"of synthetic data at default difficulty (8 fields x 20 ids, planted interactions), "
                      f"NE on day {s.days}")}


def section_flops(ctx: Context) -> dict[str, Any]:
    s, dev = ctx.sizes, ctx.device
    out: dict[str, Any] = {"ceiling_tflops": _ceiling(ctx)}
    schema = with_dim(ctx.dataset.schema, s.mlperf_dim)
    torch.manual_seed(0)
    model = build_model(dlrm(schema, MLPERF_BOTTOM, MLPERF_TOP), schema, dev)
    out["mlp_part"] = {p: [_mlp_part(ctx, model, b, p) for b in s.mlp_batches] for p in ("fp32", "bf16")}
    for precision, rows in out["mlp_part"].items():
        ceiling = out["ceiling_tflops"]["bf16" if precision == "bf16" else "fp32"]
        for row in rows:
            row["fraction_of_ceiling"] = row["tflops"] / ceiling
    opt = torch.optim.SGD(model.parameters(), lr=0.01)
    out["dlrm_mlperf_step_examples_per_s"] = rates(
        {p: train_pass(model, ctx.device_batches, opt, dev, p) for p in ("fp32", "bf16")}, s.rounds, dev)
    del model, opt
    free(dev)
    out["ne"] = _ne_runs(ctx)
    out["setup"] = (f"ceiling: torch.matmul of two {s.matmul_n}x{s.matmul_n} matrices (fp32 at "
                    f"float32_matmul_precision 'highest', i.e. no TF32; tf32 at 'high'); MLP part: "
                    f"MLPerf-size DLRM (E={s.mlperf_dim}) after the lookup, forward+backward; "
                    f"bf16 = torch.autocast(bfloat16), weights float32")
    return out


# -- d. the loader and the host-to-device copies ----------------------------------------------------
def _loader_rates(ctx: Context) -> dict[str, float]:
    ds, out = ctx.dataset, {}
    for pinned in (False, True) if ctx.cuda else (False,):
        loader = BatchLoader(ds, ds.dates[:-1], ctx.sizes.batch, shuffle=True, seed=0, pin_memory=pinned)
        out["pinned" if pinned else "pageable"] = rates(
            {"loader": lambda: sum(len(b) for b in loader.epoch(0))}, 1, ctx.device, warmup=0)["loader"]
    return out


def _copy_times(ctx: Context, pinned: list[Batch]) -> dict[str, Any]:
    host, dev = ctx.host_batches, ctx.device

    def pageable_copy() -> None:
        for b in host:
            b.to(dev)

    def pinned_copy() -> None:
        for b in pinned:
            b.to(dev, non_blocking=True)

    per_batch = batch_bytes(host[0])
    out: dict[str, Any] = {"bytes_per_batch": per_batch}
    for label, fn in (("pageable", pageable_copy), ("pinned non_blocking", pinned_copy)):
        seconds = seconds_per_call(fn, 5, dev) / len(host)
        out[label] = {"ms_per_batch": 1000 * seconds, "gb_per_s": per_batch / seconds / 1e9}
    return out


# (label, embedding_optimizer) of the extra training contestants of section d (dense layers: Adam)
TABLE_UPDATES = (("fused rowwise adagrad", "rowwise_adagrad"), ("fused sgd", "sgd"), ("fused adam", "adam"))


def section_loader(ctx: Context) -> dict[str, Any]:
    dev, host, schema = ctx.device, ctx.host_batches, ctx.dataset.schema
    out: dict[str, Any] = {"loader_rows_per_s": _loader_rates(ctx)}
    dense_cfg = TrainConfig(lr=1e-3, embedding_optimizer="dense", device=str(dev))
    torch.manual_seed(0)
    model = training_model(dlrm(schema), schema, dense_cfg)
    opt = model_optimizer(model, dense_cfg, dev)

    def over(batches) -> Callable[[], int]:  # noqa: ANN001  (a fresh generator every pass)
        return lambda: train_pass(model, batches(), opt, dev)()

    runs = {"batches already on the device": train_pass(model, ctx.device_batches, opt, dev)}
    for name, tables in TABLE_UPDATES:
        if tables == "adam" and not ctx.cuda:
            continue  # fbgemm's Adam runs on CUDA only
        cfg = TrainConfig(lr=1e-3, embedding_optimizer=tables, device=str(dev))
        torch.manual_seed(0)
        other = training_model(dlrm(schema), schema, cfg)
        other_opt = model_optimizer(other, cfg, dev)
        runs[f"batches on the device, {name}"] = train_pass(other, ctx.device_batches, other_opt, dev)
    if ctx.cuda:
        pinned = [b.pin_memory() for b in host]
        out["copies"] = _copy_times(ctx, pinned)
        runs |= {"pinned, next copy overlapped (side stream)": over(lambda: to_device(pinned, dev)),
                 "pinned, copied on the compute stream": over(lambda: to_device(pinned, dev, overlap=False)),
                 "pageable, copied then stepped": over(lambda: (b.to(dev) for b in host))}
    else:
        out["copies"] = {"skipped": "pinned memory and CUDA streams need a CUDA device"}
    out["training_examples_per_s"] = rates(runs, ctx.sizes.rounds, dev)
    out["trainer_end_to_end_examples_per_s"] = {}
    for label, tables in (("dense tables", "dense"), ("fused rowwise adagrad", "rowwise_adagrad")):
        trainer_, stats, last_epoch = trainer_run(ctx.dataset, ctx, 0, "fp32", tables, 2, 1e-3)
        out["trainer_end_to_end_examples_per_s"][label] = {"whole run": stats.examples_per_second,
                                                          "second epoch": last_epoch}
        del trainer_
        free(dev)
    out["setup"] = (f"loader: BatchLoader over days 1-{ctx.sizes.days - 1}, batch {ctx.sizes.batch:,}, "
                    f"shuffled, one reader thread, {os.cpu_count()} CPUs; training: registry DLRM "
                    f"(baseline MLPs, E={schema.embedding_dim}), Adam, fp32, {len(host)} batches; "
                    f"'overlapped' is rankitect.data.loader.to_device as the Trainer uses it; the reference "
                    f"model keeps its tables as dense parameters of Adam; 'fused': embedding_optimizer in "
                    f"the tables' backward; Trainer end to end: one "
                    f"epoch of the Trainer over days 1-{ctx.sizes.days - 1} (loader thread, pinned batches, "
                    f"overlapped copies), 2 epochs, lr 1e-3; 'second epoch': its examples/s by the wall "
                    f"clock, start-up and warm-up left out")
    return out


SECTIONS = {"dlrm": section_dlrm, "supernet": section_supernet, "flops": section_flops,
            "loader": section_loader, "fused": section_fused, "trainer": section_trainer}


def host_to_device(batches: list[Batch], device: torch.device) -> list[Batch]:
    out = [b.to(device) for b in batches]
    sync(device)
    return out
