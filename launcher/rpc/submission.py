"""SubmitSearch's checks: a submitted config made into the config a job runs, or the refusal.

Everything `rankitect search` would refuse is refused here, before a job exists
(INVALID_ARGUMENT naming the key path), and a server's own rules on top: the data path and
any baseline file must lie under an --allow-root (PERMISSION_DENIED), and a config may not
point the study elsewhere (`searcher.storage`), have the server write logs where it says
(`logging.tensorboard`, `logging.mlflow`), or name an output folder (`out` is ignored: the
job's folder is the server's).

The YAML and each override are read within launcher.bounded_yaml's bounds (aliases, nesting,
expanded size), the merged config is checked again, and the integers that travel in int32
fields of the wire (WIRE_INT32_KEYS) are checked against that range: all before a job exists.
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

from launcher.bounded_yaml import MAX_TEXT_CHARS, YamlRefused, check_bounds, load_yaml
from launcher.config_file import apply_override
from launcher.rpc.errors import Refused, clip, invalid_argument
from rankitect.errors import UserError

REQUEST_ID = re.compile(r"^[A-Za-z0-9._\-]{1,128}$")
INT32_MAX = 2**31 - 1
# Config keys whose values (or counts they bound) travel in int32 fields: budget.trials as
# JobProgress.trials_total and Trial.number, max_retries as Trial.attempts, final.* as counts.
WIRE_INT32_KEYS = ("budget.trials", "budget.max_retries", "budget.keep_top_k", "final.seeds", "final.top_k")
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
    """The submitted YAML with its overrides applied, within the bounds of launcher.bounded_yaml;
    Refused INVALID_ARGUMENT naming the field (`config_yaml`, `overrides[i]`) and the key."""
    if not config_yaml.strip():
        raise invalid_argument("config_yaml", "empty; send the search config as YAML")
    total = len(config_yaml) + sum(len(item) for item in overrides)
    if total > MAX_TEXT_CHARS:
        raise invalid_argument("config_yaml" if len(config_yaml) > MAX_TEXT_CHARS else "overrides",
                               f"the config and its overrides are {total:,} characters; at most "
                               f"{MAX_TEXT_CHARS:,} are read")
    try:
        raw = load_yaml(config_yaml, "config_yaml")
    except YamlRefused as exc:
        raise invalid_argument(exc.where, exc.detail) from None
    if not isinstance(raw, dict):
        raise invalid_argument("config_yaml", f"must be a mapping of config keys, got {type(raw).__name__}")
    for i, item in enumerate(overrides):
        try:
            apply_override(raw, item, where=f"overrides[{i}]")
        except YamlRefused as exc:
            raise invalid_argument(exc.where, exc.detail) from None
        except UserError as exc:
            raise invalid_argument(f"overrides[{i}]", clip(str(exc).removeprefix(f"overrides[{i}]: "), 500)) \
                from None
    try:
        check_bounds(raw, "config")
    except YamlRefused as exc:
        raise invalid_argument(exc.where, exc.detail) from None
    return raw


def check_wire_ints(config: Any) -> None:
    """Refused INVALID_ARGUMENT naming the key of a WIRE_INT32_KEYS value over the int32 range."""
    for key in WIRE_INT32_KEYS:
        section, name = key.split(".")
        value = getattr(getattr(config, section), name)
        if isinstance(value, int) and value > INT32_MAX:
            raise invalid_argument(f"config.{key}", f"must be at most {INT32_MAX:,} (an int32 on the wire), "
                                                    f"got {value}")


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
    check_wire_ints(config)
    if "storage" in config.searcher.options:
        raise invalid_argument("config.searcher.storage", "cannot be set on a server: a job's study lives in "
                                                          "its run folder")
    for key in ("tensorboard", "mlflow"):
        if getattr(config.logging, key):
            raise invalid_argument(f"config.logging.{key}", "cannot be set on a server: a job's trials are in its "
                                                            "run folder (rankitect dashboard, GetJob)")
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
