"""`rankitect` command line: parses argv, runs a command, turns user errors into exit code 2."""

from __future__ import annotations

import argparse
import logging
import os
import signal
import sys
import threading
from collections.abc import Sequence

from launcher import (
    cmd_blocks,
    cmd_dashboard,
    cmd_data,
    cmd_export,
    cmd_jobs,
    cmd_launch,
    cmd_search,
    cmd_serve,
    cmd_train,
)

EXIT_USAGE = 2
EXIT_INTERRUPTED = 130
EXIT_BROKEN_PIPE = 141  # 128 + SIGPIPE, as a shell reports a writer its pipe's reader left
COMMANDS = (cmd_data, cmd_train, cmd_search, cmd_dashboard, cmd_launch, cmd_export, cmd_blocks, cmd_serve, cmd_jobs)


def build_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="rankitect",
        description="Neural architecture search for ranking models: NE against FLOPs.")
    sub = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")
    for command in COMMANDS:
        command.add_parser(sub)
    return parser


def main(argv: Sequence[str] | None = None) -> int:
    """Run one command; returns the exit code (0 ok, 2 a user's mistake, 130 interrupted)."""
    logging.getLogger("torch.fx._symbolic_trace").setLevel(logging.ERROR)
    parser = build_parser()
    try:
        args = parser.parse_args(argv)
    except SystemExit as exc:  # argparse already printed the usage error
        return int(exc.code or 0)
    from rankitect.errors import UserError  # after parsing: `--help` stays fast
    from rankitect.experiment.ray_env import loopback_environment

    loopback_environment(getattr(args, "address", None) or getattr(args, "cluster", None))
    if threading.current_thread() is threading.main_thread():
        # Started in the background (`nohup ... &`) SIGINT arrives ignored; `kill -INT` must
        # still stop a search or a training run the way Ctrl-C does (saving what it has).
        signal.signal(signal.SIGINT, signal.default_int_handler)
    from rankitect.experiment.run import SearchInterrupted
    from rankitect.train.trainer import TrainingInterrupted

    try:
        code = int(args.run(args) or 0)
        sys.stdout.flush()  # a closed pipe shows here, not at the interpreter's exit
        return code
    except BrokenPipeError:  # `rankitect jobs | head`: the reader has what it wanted
        os.dup2(os.open(os.devnull, os.O_WRONLY), sys.stdout.fileno())  # the exit's flush writes nowhere
        return EXIT_BROKEN_PIPE
    except (TrainingInterrupted, SearchInterrupted) as exc:
        print(f"rankitect: {exc}", file=sys.stderr)
        return EXIT_INTERRUPTED
    except UserError as exc:
        print(f"rankitect: error: {exc}", file=sys.stderr)
        return EXIT_USAGE
    except KeyboardInterrupt:
        print("rankitect: interrupted", file=sys.stderr)
        return EXIT_INTERRUPTED


if __name__ == "__main__":
    sys.exit(main())
