"""Search config files: YAML, plus `--set KEY=VALUE` overrides (VALUE read as YAML).

Both are read within the bounds of launcher.bounded_yaml (text size, aliases, nesting, expanded
size), and the config is checked again once its overrides are merged; every refusal is a
ConfigError naming the file or the `--set` item and the key, with values clipped.
"""

from __future__ import annotations

from collections.abc import Sequence
from pathlib import Path
from typing import Any

from launcher.bounded_yaml import MAX_DEPTH, MAX_TEXT_CHARS, YamlInvalid, check_bounds, clipped, load_yaml
from rankitect.errors import ConfigError


def load_config(path: Path, overrides: Sequence[str] = ()) -> dict[str, Any]:
    """The config mapping of `path` with `overrides` applied; ConfigError naming the problem."""
    where = f"--config {path}"
    try:
        with open(path, encoding="utf-8") as stream:
            text = stream.read(MAX_TEXT_CHARS + 1)  # a longer file is refused without reading it all
    except OSError as exc:
        raise ConfigError(f"{where}: {exc.strerror}") from None
    except UnicodeDecodeError as exc:
        raise ConfigError(f"{where}: not UTF-8 text (byte {exc.start})") from None
    if len(text) > MAX_TEXT_CHARS:
        raise ConfigError(f"{where}: more than {MAX_TEXT_CHARS:,} characters; a config is YAML of a few "
                          f"hundred")
    raw = load_yaml(text, where)
    if raw is None:
        raw = {}
    if not isinstance(raw, dict):
        raise ConfigError(f"{where}: must be a mapping of keys, got {type(raw).__name__}")
    for item in overrides:
        apply_override(raw, item)
    check_bounds(raw, where + (" with its --set overrides" if overrides else ""))
    return raw


def apply_override(config: dict[str, Any], item: str, where: str | None = None) -> None:
    """Set a dotted key (`budget.trials=10`), creating mappings on the way. VALUE is read as
    bounded YAML (the text itself when it is not YAML); YamlRefused (a ConfigError) names
    `where` (default `--set ITEM`) and the key when it is over the bounds."""
    where = where or f"--set {clipped(repr(item))}"
    key, sep, text = item.partition("=")
    if not sep or not key.strip():
        raise ConfigError(f"{where}: expected KEY=VALUE, e.g. budget.trials=10")
    key = key.strip()
    parts = key.split(".")
    if len(parts) > MAX_DEPTH:
        raise ConfigError(f"{where}: {clipped(key)}: a key of more than {MAX_DEPTH} parts")
    try:
        value = load_yaml(text, where, key) if text.strip() else ""
    except YamlInvalid:
        value = text
    check_bounds(value, where, key)
    node = config
    for i, part in enumerate(parts[:-1]):
        child = node.get(part)
        if child is None:
            child = node[part] = {}
        elif isinstance(child, str) and part in ("space", "searcher"):
            child = node[part] = {"name": child}
        if not isinstance(child, dict):
            raise ConfigError(f"{where}: {clipped('.'.join(parts[:i + 1]))} is not a mapping")
        node = child
    node[parts[-1]] = value
