"""SubmitSearch's checks: a submitted config made into the config a job runs, or the refusal.

Everything `rankitect search` would refuse is refused here, before a job exists
(INVALID_ARGUMENT naming the key path), and a server's own rules on top: the data path and
any baseline file must lie under an --allow-root (PERMISSION_DENIED), and a config may not
point the study elsewhere (`searcher.storage`) or name an output folder (`out` is ignored:
the job's folder is the server's).
"""

from __future__ import annotations

import dataclasses
import hashlib
import json
import re
import tempfile
from collections.abc import Callable, Sequence
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import yaml

from launcher.config_file import apply_override
from launcher.rpc.errors import Refused, clip, invalid_argument
from rankitect.errors import UserError

REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
MAX_DEPTH, MAX_NODES = 32, 100_000
_KEY_PATH = re.compile(r"^[A-Za-z_][\w.\[\]]*: ")


def config_problem(exc: Exception) -> Refused:
    """INVALID_ARGUMENT for a config's problem, its key path under `config.` (the request field)."""
    message = str(exc)
    return invalid_argument("config" if not _KEY_PATH.match(message) else "config." + message.split(": ", 1)[0],
                            message.split(": ", 1)[1] if _KEY_PATH.match(message) else message)


@dataclass(frozen=True)
class Submission:
    """A checked config: what the job stores and runs."""

    config: dict[str, Any]  # SearchConfig.to_dict(), data.path resolved
    config_yaml: str
    digest: str  # SHA-256 of the config: the same request id must come with the same digest
    name: str
    searcher: str
    trials_total: int


def check_request_id(request_id: str) -> str | None:
    if not request_id:
        return None
    if not REQUEST_ID.match(request_id):
        raise invalid_argument("request_id", f"must be 1..128 of [A-Za-z0-9._-] (a UUID works), got "
                                             f"{clip(repr(request_id), 80)}")
    return request_id


def parse_config(config_yaml: str, overrides: Sequence[str]) -> dict[str, Any]:
    """The submitted YAML with its overrides applied; Refused INVALID_ARGUMENT naming the field."""
    if not config_yaml.strip():
        raise invalid_argument("config_yaml", "empty; send the search config as YAML")
    try:
        raw = yaml.safe_load(config_yaml)
    except yaml.YAMLError as exc:
        mark = getattr(exc, "problem_mark", None)
        where = f" (line {mark.line + 1}, column {mark.column + 1})" if mark else ""
        raise invalid_argument("config_yaml", f"not valid YAML{where}: {getattr(exc, 'problem', None) or exc}") \
            from None
    except RecursionError:
        raise invalid_argument("config_yaml", f"nested more than {MAX_DEPTH} levels deep") from None
    _check_shape(raw)
    if not isinstance(raw, dict):
        raise invalid_argument("config_yaml", f"must be a mapping of config keys, got {type(raw).__name__}")
    for i, item in enumerate(overrides):
        try:
            apply_override(raw, item)
        except UserError as exc:
            raise invalid_argument(f"overrides[{i}]", str(exc)) from None
    return raw


def _check_shape(value: Any) -> None:
    """Refuse what no config is: nesting over MAX_DEPTH levels or over MAX_NODES values, counted
    as expanded (YAML aliases can repeat a value exponentially, or contain themselves)."""
    stack, count = [(value, 0)], 0
    while stack:
        item, depth = stack.pop()
        count += 1
        if depth > MAX_DEPTH or count > MAX_NODES:
            raise invalid_argument("config_yaml", f"too large or nested too deeply for a config (at most "
                                                  f"{MAX_DEPTH} levels and {MAX_NODES:,} values, aliases expanded)")
        if isinstance(item, (dict, list)):
            stack.extend((child, depth + 1) for child in (item.values() if isinstance(item, dict) else item))


def check_submission(config_yaml: str, overrides: Sequence[str],
                     allowed_path: Callable[[str, str], Path]) -> Submission:
    """The config a job runs; Refused (INVALID_ARGUMENT, PERMISSION_DENIED) naming the field."""
    from rankitect.experiment.config import SearchConfig
    from rankitect.experiment.plan import plan_search
    from rankitect.space import baseline_names

    raw = parse_config(config_yaml, overrides)
    raw.pop("out", None)  # the job's run folder is the server's
    try:
        config = SearchConfig.from_dict(raw)
    except UserError as exc:
        raise config_problem(exc) from None
    if "storage" in config.searcher.options:
        raise invalid_argument("config.searcher.storage", "cannot be set on a server: a job's study lives in "
                                                          "its run folder")
    known = baseline_names()
    config = dataclasses.replace(
        config, data=dataclasses.replace(config.data, path=str(allowed_path(config.data.path, "config.data.path"))),
        baselines=tuple(name if name in known else str(allowed_path(name, f"config.baselines[{i}]"))
                        for i, name in enumerate(config.baselines)))
    resolved = config.to_dict()
    with tempfile.TemporaryDirectory(prefix="rankitect-check-") as scratch:
        try:
            plan_search(config, Path(scratch) / "run")  # data, dates, space, searcher, baselines
        except UserError as exc:
            raise config_problem(exc) from None
        except OSError as exc:
            raise Refused(_os_status(exc), f"config.data.path: cannot read the dataset: {exc}") from None
    text = yaml.safe_dump(resolved, sort_keys=False)
    digest = hashlib.sha256(json.dumps(resolved, sort_keys=True).encode()).hexdigest()
    return Submission(config=resolved, config_yaml=text, digest=digest,
                      name=f"{config.searcher.name} on {config.space.name}", searcher=config.searcher.name,
                      trials_total=config.budget.trials)


def _os_status(exc: OSError) -> Any:
    import grpc

    return grpc.StatusCode.PERMISSION_DENIED if isinstance(exc, PermissionError) else grpc.StatusCode.INVALID_ARGUMENT
