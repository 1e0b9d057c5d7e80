"""`rankitect train`: train one architecture on chosen dates and write metrics.json."""

from __future__ import annotations

import argparse
import dataclasses
import json
from pathlib import Path

from rankitect.train.config import EMBEDDING_OPTIMIZERS, LR_SCHEDULES, OPTIMIZERS, PRECISIONS, TrainConfig


def add_parser(sub: argparse._SubParsersAction) -> None:
    d = TrainConfig()
    p = sub.add_parser("train", help="train an architecture (a baseline name or a JSON file)")
    p.add_argument("--data", required=True, help="dataset folder (or URI)")
    p.add_argument("--arch", required=True, help="lr, dlrm, dcnv2, deepfm, autoint, or FILE.json")
    p.add_argument("--train-dates", required=True,
                   help="D, D1..D2, first:K, last:K, or a comma list of those")
    p.add_argument("--eval-dates", required=True,
                   help="validation dates, same forms as --train-dates: scored into metrics.json and, "
                        "with --early-stopping, what the run keeps its best epoch on")
    p.add_argument("--test-dates", default=None,
                   help="dates only scored (metrics.json's test_metrics), never selected on")
    p.add_argument("--out", required=True, type=Path, help="run folder")
    p.add_argument("--epochs", type=int, default=d.epochs, help=f"at most this many epochs (default {d.epochs})")
    p.add_argument("--early-stopping", type=int, default=d.early_stopping,
                   help=f"stop after N epochs in a row without a better validation NE and keep the best "
                        f"epoch; 0: train every epoch (default {d.early_stopping})")
    p.add_argument("--batch-size", type=int, default=d.batch_size, help="examples per step (default: %(default)s)")
    p.add_argument("--lr", type=float, default=d.lr,
                   help="learning rate of the dense parameters (MLPs, interactions; --embedding-lr is "
                        "the tables') (default: %(default)s)")
    p.add_argument("--optimizer", choices=OPTIMIZERS, default=d.optimizer,
                   help="optimizer of the dense parameters (default: %(default)s)")
    p.add_argument("--lr-schedule", choices=LR_SCHEDULES, default=d.lr_schedule,
                   help="decay of the learning rate over the run (default cosine)")
    p.add_argument("--weight-decay", type=float, default=d.weight_decay,
                   help="L2 weight decay of the dense parameters (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="initial weights and shuffling: same seed, same run (default: %(default)s)")
    p.add_argument("--device", default=d.device, help="cpu, cuda, cuda:N or auto (default: %(default)s)")
    p.add_argument("--precision", choices=PRECISIONS, default=d.precision,
                   help="bf16: forward pass under bfloat16 autocast (mixed precision on CUDA; on "
                        "CPU it runs, usually slower than fp32); weights stay float32 (default: %(default)s)")
    p.add_argument("--embedding-optimizer", choices=EMBEDDING_OPTIMIZERS, default=d.embedding_optimizer,
                   help=f"the embedding tables' optimizer, applied in the backward pass to the rows a "
                        f"batch touched (adam, rowwise_adam: CUDA only); dense: the tables are ordinary "
                        f"parameters of --optimizer (default {d.embedding_optimizer})")
    p.add_argument("--embedding-lr", type=float, default=d.embedding_lr,
                   help=f"learning rate of the embedding tables (default {d.embedding_lr}; --lr is the "
                        f"dense parameters')")
    p.add_argument("--loader-workers", type=int, default=d.loader_workers,
                   help="worker processes making the training batches (0: a thread of this process; "
                        "-1: up to 4 on CUDA, none on CPU) (default -1)")
    p.add_argument("--table-rows", type=int, default=None,
                   help="rows of every sparse column's table (at most its hash_size); default: the "
                        "architecture's embedding.rows, else sized from the column's distinct ids")
    p.add_argument("--embedding-dim", type=int, default=None,
                   help="default embedding dim E for this run (the schema's otherwise); an "
                        "architecture that sets its own dim keeps it")
    p.add_argument("--checkpoint-every", type=int, default=d.checkpoint_every,
                   help="steps between checkpoints (0: epoch ends only) (default: %(default)s)")
    p.add_argument("--resume", action="store_true", help="continue the run in --out from its checkpoint")
    p.add_argument("--force", action="store_true", help="replace an existing run in --out")
    p.add_argument("--json", action="store_true", help="print metrics as JSON")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rankitect.blocks.table_rows import MIN_ROWS
    from rankitect.data.dataset import Dataset
    from rankitect.errors import ConfigError
    from rankitect.train.run import train_run
    from search_spaces import resolve_architecture

    config = TrainConfig(epochs=args.epochs, batch_size=args.batch_size, lr=args.lr,
                         optimizer=args.optimizer, lr_schedule=args.lr_schedule, weight_decay=args.weight_decay, seed=args.seed,
                         early_stopping=args.early_stopping, device=args.device, precision=args.precision,
                         embedding_optimizer=args.embedding_optimizer, embedding_lr=args.embedding_lr,
                         loader_workers=args.loader_workers,
                         checkpoint_every=args.checkpoint_every,
                         shuffle_buffer=max(TrainConfig().shuffle_buffer, args.batch_size))
    config.check()
    dataset = Dataset.open(args.data)
    if args.embedding_dim is not None:
        if args.embedding_dim < 1:
            raise ConfigError(f"--embedding-dim must be >= 1, got {args.embedding_dim}")
        schema = dataclasses.replace(dataset.schema, embedding_dim=args.embedding_dim)
        dataset = dataclasses.replace(dataset, schema=schema)
    arch = resolve_architecture(args.arch, dataset.schema)
    if args.table_rows is not None:
        if args.table_rows < MIN_ROWS:
            raise ConfigError(f"--table-rows must be >= {MIN_ROWS}, got {args.table_rows}")
        arch = dataclasses.replace(arch, embedding={**arch.embedding, "rows": args.table_rows})
    train_dates = dataset.select_dates(args.train_dates, "--train-dates")
    eval_dates = dataset.select_dates(args.eval_dates, "--eval-dates")
    test_dates = dataset.select_dates(args.test_dates, "--test-dates") if args.test_dates else []
    metrics = train_run(dataset, arch, train_dates, eval_dates, config, args.out,
                        resume=args.resume, force=args.force, test_dates=test_dates)
    if args.json:
        print(json.dumps(metrics, indent=2))
    else:
        print(f"{arch.name or args.arch}: NE {metrics['ne']:.4f}  log-loss {metrics['logloss']:.4f}  "
              f"AUC {metrics['auc']:.4f}  calibration {metrics['calibration']:.3f}  "
              f"FLOPs/example {metrics['flops_per_example']:,}  params {metrics['params']:,}  "
              f"{metrics['examples_per_second']:,.0f} examples/s")
        if "test_metrics" in metrics:
            print(f"test dates: NE {metrics['test_metrics']['ne']:.4f}  AUC {metrics['test_metrics']['auc']:.4f}")
        if "best_epoch" in metrics:
            print(f"kept epoch {metrics['best_epoch']} of {metrics['epochs_trained']} (best validation NE)")
        print(f"wrote {args.out / 'metrics.json'}")
    return 0
