"""`rankitect data synth|criteo|avazu|import|inspect`: make and look at datasets."""

from __future__ import annotations

import argparse
import json
import sys
from collections.abc import Callable
from pathlib import Path

from tqdm import tqdm

from rankitect.data.summary import ON_BAD_ROWS


def add_parser(sub: argparse._SubParsersAction) -> None:
    data = sub.add_parser("data", help="make and inspect date-partitioned datasets")
    dsub = data.add_subparsers(dest="data_command", required=True, metavar="DATA_COMMAND")
    _add_synth(dsub)
    _add_criteo(dsub)
    _add_avazu(dsub)
    _add_import(dsub)
    p = dsub.add_parser("inspect", help="schema, rows and positive rate per date")
    p.add_argument("dir", help="dataset folder")
    p.add_argument("--json", action="store_true", help="print JSON")
    p.set_defaults(run=_run_inspect)


def _common(p: argparse.ArgumentParser, hashing: bool = True) -> None:
    p.add_argument("--out", required=True, type=Path, help="dataset folder to create")
    p.add_argument("--force", action="store_true", help="replace an existing dataset at --out")
    p.add_argument("--embedding-dim", type=int, default=16, help="default embedding dim E (16)")
    if hashing:
        p.add_argument("--hash-size", type=_min_int(2), default=1_000_000, metavar="H",
                       help="ids per sparse column after hashing: the cap of its table's rows; a model's "
                            "table gets rows from the column's distinct ids, at most H (default 1000000)")
        p.add_argument("--on-bad-rows", choices=ON_BAD_ROWS, default="error",
                       help="stop at the first bad row (error) or skip and count them (skip) "
                            "(default: %(default)s)")


def _add_synth(dsub: argparse._SubParsersAction) -> None:
    from rankitect.data.synth_config import CRITEO_DEFAULT_CAP, PROFILES, SynthConfig

    d = SynthConfig()
    p = dsub.add_parser("synth", help="synthetic CTR data with planted interactions and truth.json")
    _common(p, hashing=False)
    p.add_argument("--profile", choices=PROFILES, default=d.profile,
                   help="column layout: 'default' (--num-sparse fields of one --cardinality, "
                        "--num-dense, a list column) or 'criteo' (Criteo 1TB: 26 sparse columns "
                        "with its per-column cardinalities, 13 dense, no list column) "
                        "(default: %(default)s)")
    p.add_argument("--max-cardinality", type=_min_int(2), default=d.max_cardinality, metavar="N",
                   help="cap every sparse column at N ids (memory follows the capped "
                        f"cardinalities) (default: {CRITEO_DEFAULT_CAP} for --profile criteo, "
                        "no cap for --profile default)")
    p.add_argument("--days", type=int, default=d.days, help="date partitions (default: %(default)s)")
    p.add_argument("--rows-per-day", type=int, default=d.rows_per_day,
                   help="rows per date (default: %(default)s)")
    p.add_argument("--seed", type=int, default=d.seed,
                   help="same seed, same data and truth (default: %(default)s)")
    p.add_argument("--start-date", default=d.start_date,
                   help="date of the first day, YYYY-MM-DD (default: %(default)s)")
    p.add_argument("--num-sparse", type=int, default=d.num_sparse,
                   help="sparse fields; --profile default only (default: %(default)s)")
    p.add_argument("--cardinality", type=int, default=d.cardinality,
                   help="ids per sparse field; --profile default only (default: %(default)s)")
    p.add_argument("--num-dense", type=int, default=d.num_dense,
                   help="dense fields; --profile default only (default: %(default)s)")
    p.add_argument("--num-pairs", type=int, default=d.num_pairs,
                   help="planted dot-product pairs of sparse fields (default: %(default)s)")
    p.add_argument("--noise", type=float, default=d.noise,
                   help="std of the unseen logit noise (default: %(default)s)")
    p.add_argument("--drift", type=float, default=d.drift,
                   help="day-to-day drift of the base rate and latent vectors (default: %(default)s)")
    p.set_defaults(run=_run_synth)


def _min_int(low: int) -> Callable[[str], int]:
    """An argparse type: an integer >= `low` (argparse then names the flag and the value)."""

    def parse(text: str) -> int:
        try:
            value = int(text)
        except ValueError:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {text!r}") from None
        if value < low:
            raise argparse.ArgumentTypeError(f"must be an integer >= {low}, got {value}")
        return value

    return parse


def _add_criteo(dsub: argparse._SubParsersAction) -> None:
    p = dsub.add_parser("criteo", help="import Criteo files (released TSV day_N[.gz] or the CSV sample)")
    p.add_argument("--input", required=True, type=Path, help="a file or a folder of day_N files")
    _common(p)
    p.add_argument("--days", type=int, default=None, help="split a single file into N pseudo-days")
    p.add_argument("--start-date", default="2014-01-01", help="date of day_0 (default 2014-01-01)")
    p.set_defaults(run=_run_criteo)


def _add_avazu(dsub: argparse._SubParsersAction) -> None:
    p = dsub.add_parser("avazu", help="import the Avazu CSV (the hour column gives the date)")
    p.add_argument("--input", required=True, type=Path, help="the Avazu CSV (train or train.gz)")
    _common(p)
    p.set_defaults(run=_run_avazu)


def _names(text: str) -> list[str]:
    return [n.strip() for n in text.split(",") if n.strip()] if text else []


def _add_import(dsub: argparse._SubParsersAction) -> None:
    p = dsub.add_parser("import", help="import any CSV or parquet table")
    p.add_argument("--input", required=True, type=Path, help="FILE.csv or FILE.parquet")
    p.add_argument("--label", required=True, help="0/1 label column")
    p.add_argument("--dense", type=_names, default=[], help="comma-separated float columns")
    p.add_argument("--sparse", type=_names, default=[], help="comma-separated id columns")
    p.add_argument("--multi-sparse", type=_names, default=[], help="comma-separated list-of-id columns")
    p.add_argument("--list-sep", default="|", help="separator of list items in CSV (default |)")
    p.add_argument("--date-column", required=True, help="timestamp, date, ISO string or epoch seconds")
    p.add_argument("--date-unit", choices=("day", "week"), default="day",
                   help="partition by day or by ISO week (named by its Monday) (default: %(default)s)")
    _common(p)
    p.set_defaults(run=_run_import)


class _RowProgress:
    """A tqdm bar counting rows, shown on a terminal only."""

    def __init__(self, total: int | None = None) -> None:
        self.bar = tqdm(total=total, unit="rows", unit_scale=True, disable=not sys.stderr.isatty(),
                        file=sys.stderr, dynamic_ncols=True)

    def __call__(self, rows: int) -> None:
        self.bar.update(rows)

    def close(self) -> None:
        self.bar.close()


def _print_summary(summary) -> int:
    for line in summary.lines():
        print(line)
    return 0


def _run_synth(args: argparse.Namespace) -> int:
    from rankitect.data.synth import SynthConfig, generate

    cfg = SynthConfig(days=args.days, rows_per_day=args.rows_per_day, seed=args.seed,
                      start_date=args.start_date, num_sparse=args.num_sparse,
                      cardinality=args.cardinality, num_dense=args.num_dense,
                      num_pairs=args.num_pairs, noise=args.noise, drift=args.drift,
                      embedding_dim=args.embedding_dim, profile=args.profile,
                      max_cardinality=args.max_cardinality)
    bar = _RowProgress(cfg.days * cfg.rows_per_day)
    try:
        schema, truth = generate(args.out, cfg, force=args.force, progress=bar)
    finally:
        bar.close()
    rows = sum(s.rows for s in schema.dates.values())
    print(f"wrote {rows} rows in {len(schema.dates)} date partitions to {args.out}")
    print("planted interactions: " + ", ".join(i["name"] for i in truth["interactions"]))
    print("Bayes-optimal NE by date: " + ", ".join(f"{d} {v:.4f}" for d, v in truth["bayes_ne"].items()))
    return 0


def _run_criteo(args: argparse.Namespace) -> int:
    from rankitect.data.criteo import import_criteo

    bar = _RowProgress()
    try:
        summary = import_criteo(args.input, args.out, hash_size=args.hash_size, days=args.days,
                                start_date=args.start_date, embedding_dim=args.embedding_dim,
                                on_bad_rows=args.on_bad_rows, force=args.force, progress=bar)
    finally:
        bar.close()
    return _print_summary(summary)


def _run_avazu(args: argparse.Namespace) -> int:
    from rankitect.data.avazu import import_avazu

    bar = _RowProgress()
    try:
        summary = import_avazu(args.input, args.out, hash_size=args.hash_size,
                               embedding_dim=args.embedding_dim, on_bad_rows=args.on_bad_rows,
                               force=args.force, progress=bar)
    finally:
        bar.close()
    return _print_summary(summary)


def _run_import(args: argparse.Namespace) -> int:
    from rankitect.data.table import import_table

    bar = _RowProgress()
    try:
        summary = import_table(args.input, args.out, label=args.label, dense=args.dense,
                               sparse=args.sparse, multi_sparse=args.multi_sparse,
                               list_sep=args.list_sep, date_column=args.date_column,
                               date_unit=args.date_unit, hash_size=args.hash_size,
                               embedding_dim=args.embedding_dim, on_bad_rows=args.on_bad_rows,
                               force=args.force, progress=bar)
    finally:
        bar.close()
    return _print_summary(summary)


def _run_inspect(args: argparse.Namespace) -> int:
    from rankitect.data.dataset import Dataset
    from rankitect.data.inspect import format_inspection, inspect_dataset

    info = inspect_dataset(Dataset.open(args.dir))
    if args.json:
        print(json.dumps(info, indent=2))
    else:
        print("\n".join(format_inspection(info)))
    return 0
