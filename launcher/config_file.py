"""Search config files: YAML, plus `--set KEY=VALUE` overrides (VALUE read as YAML)."""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

import yaml

from rankitect.errors import ConfigError


def load_config(path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config mapping of `path` with `overrides` applied; ConfigError naming the problem."""
    try:
        text = Path(path).read_text()
    except OSError as exc:
        raise ConfigError(f"--config {path}: {exc.strerror}") from None
    try:
        raw = yaml.safe_load(text)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise ConfigError(f"--config {path}: not valid YAML{where}: {getattr(exc, 'problem', exc)}") from None
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"--config {path}: must be a mapping of keys, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    return raw


def apply_override(config: dict[str, Any], item: str) -> None:
    """Set a dotted key (`budget.trials=10`), creating mappings on the way."""
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"--set {item!r}: expected KEY=VALUE, e.g. budget.trials=10")
    try:
        value = yaml.safe_load(text) if text.strip() else ""
    except yaml.YAMLError:
        value = text
    parts = key.strip().split(".")
    node = config
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str) and part in ("space", "searcher"):
            child = node[part] = {"name": child}
        if not isinstance(child, dict):
            raise ConfigError(f"--set {item!r}: {'.'.join(parts[:i + 1])} is not a mapping")
        node = child
    node[parts[-1]] = value
