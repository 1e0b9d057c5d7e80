"""`rankitect blocks [--json] [--server HOST:PORT]`: the block registry with each block's
hyper-parameters, of this process or of a `rankitect serve`."""

from __future__ import annotations

import argparse
import json


def add_parser(sub: argparse._SubParsersAction) -> None:
    p = sub.add_parser("blocks", help="list the building blocks and their hyper-parameters")
    p.add_argument("--json", action="store_true", help="print a JSON list of {name, doc, params}")
    from launcher.rpc.cli_args import add_client_args

    add_client_args(p)
    p.set_defaults(run=run)


def _range(param: dict) -> str:
    if param["kind"] == "choice":
        return "{" + ", ".join(map(str, param["choices"])) + "}"
    if param["kind"] == "bool":
        return "true|false"
    span = f"[{param.get('low')}, {param.get('high')}]"
    if param["kind"] == "int_list":
        return f"{param.get('min_len')}..{param.get('max_len')} ints in {span}"
    return span


def _specs(args: argparse.Namespace) -> list[dict]:
    if args.server is None:
        from rankitect.blocks import list_blocks

        return [s.to_dict() for s in list_blocks()]
    from launcher.rpc.cli_args import client_from_args

    with client_from_args(args) as client:
        return client.list_blocks()


def _run(args: argparse.Namespace) -> int:
    specs = _specs(args)
    if args.json:
        print(json.dumps(specs, indent=2))
        return 0
    for spec in specs:
        print(f"{spec['name']}: {spec['doc']}")
        for param in spec["params"]:
            print(f"    {param['name']:<16} {param['kind']:<9} default={param['default']!s:<10} "
                  f"{_range(param)}  {param['doc']}")
    return 0


def run(args: argparse.Namespace) -> int:
    from launcher.rpc.errors import rpc_command

    return rpc_command(_run)(args)
