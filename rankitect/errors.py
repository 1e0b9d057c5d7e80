"""Errors caused by a user's input. The CLI prints them without a traceback and exits with 2."""

from __future__ import annotations


class UserError(Exception):
    """A mistake in what the user gave (a file, a flag, a config): fixable without a code change."""


class DataError(UserError):
    """A dataset or an input file that cannot be read as asked."""


class BadRowError(DataError):
    """One row of an input file: `path`, 1-based `line` (a header line counted) and `column`."""

    def __init__(self, path: str, line: int, column: str, reason: str) -> None:
        self.path, self.line, self.column, self.reason = path, line, column, reason
        super().__init__(f"{path}, line {line}, column {column!r}: {reason}")


class SchemaMismatchError(DataError):
    """schema.json and the parquet files disagree about `column`."""


class ArchitectureError(UserError):
    """An architecture that does not validate. `problems` holds every (node, field, message)."""

    def __init__(self, problems: list[tuple[str, str, str]]) -> None:
        self.problems = problems
        lines = [f"node {node!r}, field {field!r}: {message}" for node, field, message in problems]
        super().__init__("invalid architecture:\n  " + "\n  ".join(lines))


class ConfigError(UserError):
    """A configuration value out of its allowed range or of the wrong type."""


class ExportError(UserError):
    """A run that cannot be exported as asked: an incomplete folder, a target that exists, a block
    torch.export cannot trace (named with its node)."""
