"""`rankitect search`, `rankitect report` and `rankitect spaces`."""

from __future__ import annotations

import argparse
import json
from pathlib import Path


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("search", help="search architectures (config file), on Ray")
    p.add_argument("--config", required=True, type=Path, help="search config (YAML)")
    p.add_argument("--address", default=None, help="Ray cluster address; a local Ray is started without it")
    p.add_argument("--out", type=Path, default=None, help="run folder (default: the config's out, or "
                                                          "runs/<config name>)")
    p.add_argument("--set", dest="overrides", action="append", default=[], metavar="KEY=VALUE",
                   help="override a config key, e.g. --set budget.trials=10 (repeatable)")
    p.add_argument("--force", action="store_true", help="start over, replacing the run folder")
    p.add_argument("--progress", action="store_true",
                   help="draw the progress bar even when stderr is not a terminal (a Ray job's log)")
    p.add_argument("--dashboard", action="store_true",
                   help="start the local Ray with its dashboard (127.0.0.1) and print its URL; each task there "
                        "is named by what it runs (trial N, baseline X, lambda L shard S)")
    p.set_defaults(run=run_search)

    p = sub.add_parser("report", help="print a search run's Pareto front, best trial and baselines")
    p.add_argument("run_dir", type=Path, help="a search's run folder (its --out, e.g. runs/search)")
    p.add_argument("--json", action="store_true", help="print result.json's pareto, best and baselines")
    p.set_defaults(run=run_report)

    p = sub.add_parser("spaces", help="list the registered search spaces and searchers")
    p.add_argument("--options", action="store_true",
                   help="also each space's options (the `space:` keys of a config): type, default, the "
                        "rule its check enforces, and what it does")
    p.set_defaults(run=run_spaces)


def run_search(args: argparse.Namespace) -> int:
    from launcher.config_file import load_config
    from rankitect.errors import ConfigError
    from rankitect.experiment.config import SearchConfig
    from rankitect.experiment.report import load_result, load_truth, report_lines
    from rankitect.experiment.run import search

    raw = load_config(args.config, args.overrides)
    out = args.out or raw.get("out") or Path("runs") / args.config.stem
    if not isinstance(out, (str, Path)):
        raise ConfigError(f"out: must be a folder path, got {out!r}")
    config = SearchConfig.from_dict(raw)
    result = search(config, Path(out), address=args.address, force=args.force,
                    progress=True if args.progress else None, dashboard=args.dashboard)
    print("\n".join(report_lines(load_result(result.run_dir), load_truth(config.data.path))))
    print(f"wrote {result.run_dir / 'result.json'}, {result.run_dir / 'pareto.png'}, {result.run_dir / 'best'}")
    return 0


def run_report(args: argparse.Namespace) -> int:
    from rankitect.experiment.report import load_result, load_truth, report_lines

    result = load_result(args.run_dir)
    if args.json:
        print(json.dumps({k: result.get(k) for k in ("pareto", "best", "baselines", "final")}, indent=2))
        return 0
    config_path = args.run_dir / "config.json"
    truth = load_truth(json.loads(config_path.read_text())["data"]["path"]) if config_path.is_file() else None
    print("\n".join(report_lines(result, truth)))
    return 0


def run_spaces(args: argparse.Namespace) -> int:
    from rankitect.searchers import searcher_names
    from rankitect.space import get_space, space_names, spaces_supernets

    for name in space_names():
        print(f"space {name}: {get_space(name).doc or get_space(name).__doc__ or ''}".strip().splitlines()[0])
        kinds = spaces_supernets(name)
        supernets = [label for kind, label in (("weight_sharing", "weight-sharing (oneshot, proxy warm-up)"),
                                               ("mixed", "mixed-op (dnas, distdnas)")) if kind in kinds]
        print(f"  supernets: {', '.join(supernets) or 'none'}")
        if args.options:
            from search_spaces.options_doc import options_lines

            print("  options (space.<option> in a config):")
            print("\n".join(options_lines(get_space(name))))
    print("searchers: " + ", ".join(searcher_names()))
    return 0
