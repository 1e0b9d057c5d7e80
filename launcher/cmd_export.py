"""`rankitect export`: a train run or a search run's best model as a folder that serves alone."""

from __future__ import annotations

import argparse
import sys
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("export", help="export a run's model (torch.export), its preprocessing and a loader")
    p.add_argument("--run", dest="run_dir", metavar="RUN", required=True, type=Path,
                   help="a `rankitect train` run, or a search run (its best/ is exported)")
    p.add_argument("--out", metavar="DIR", required=True, type=Path, help="artifact folder to write")
    p.add_argument("--int8", action="store_true",
                   help="also export int8 embedding tables; NE and size against fp32 go in metrics.json")
    p.add_argument("--data", default=None,
                   help="the run's dataset, if it has moved (default: the path in the run's config.json)")
    p.add_argument("--force", action="store_true", help="replace an earlier export in --out")
    p.set_defaults(run=run)


def run(args: argparse.Namespace) -> int:
    from rankitect.export.artifact import export_run

    result = export_run(args.run_dir, args.out, int8=args.int8, force=args.force, data=args.data,
                        log=lambda msg: print(msg, file=sys.stderr, flush=True))
    program, quantized = result.manifest["program"], result.manifest["int8"]
    print(f"{result.out}: {program['file']} ({program['export']}, {program['bytes']:,} bytes), "
          f"loader rankitect_serving.py")
    if quantized is not None:
        q = result.metrics["int8"]
        print(f"int8: {quantized['file']} ({quantized['bytes']:,} bytes, {q['file_size_ratio']:.2f}x; "
              f"embedding tables {q['embedding_size_ratio']:.2f}x of fp32); NE {q['ne_int8']:.5f} vs fp32 "
              f"{q['ne_fp32']:.5f} ({q['ne_change_relative']:+.3%}) on {', '.join(q['eval_dates'])}")
    return 0
