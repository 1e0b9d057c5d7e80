"""Server-side paths a caller names: under an --allow-root, and so is every file read of them.

`allowed(path, field, roots)` resolves one path (symlinks followed) and refuses it outside
the roots. `check_dataset(folder, field, roots)` does the same for each file of a dataset
folder that a reader opens (rankitect.data.dataset.Dataset.open: `schema.json`, the
`date=*` partition folders and the `*.parquet` files in them), so that a link inside an
allowed folder cannot lead the server to read a file outside it. Links that stay under an
allowed root are fine. Refusals are PERMISSION_DENIED naming the request field and the
offending file (by its name inside the dataset: where the link leads is not told).
"""

from __future__ import annotations

import os
from collections.abc import Iterator, Sequence
from pathlib import Path

import grpc

from launcher.rpc.errors import Refused, show

PARQUET_SUFFIX = ".parquet"


def _under(resolved: Path, roots: Sequence[Path]) -> bool:
    return any(resolved == root or resolved.is_relative_to(root) for root in roots)


def allowed(path: str, field: str, roots: Sequence[Path]) -> Path:
    """`path` resolved (symlinks followed) if it lies under one of `roots`; Refused
    INVALID_ARGUMENT for a path that cannot be resolved, PERMISSION_DENIED naming `field`
    outside the roots (also when there are none)."""
    try:
        resolved = Path(path).expanduser().resolve()
    except (OSError, RuntimeError, ValueError) as exc:
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT, f"{field}: not a usable path: {exc}") from None
    if not _under(resolved, roots):
        raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                      f"{field}: {show(path, 200)} is outside the server's allowed folders "
                      f"{[str(r) for r in roots]} (the server's --allow-root)")
    return resolved


def dataset_entries(folder: Path) -> Iterator[Path]:
    """What a dataset reader may open in `folder`, in the order a reader meets them:
    schema.json, each `date=*` entry, then the `*.parquet` entries of those that are folders.
    A superset: entries of any type are listed (dangling links too), so that nothing a reader
    opens is skipped. A partition is listed only after it was yielded (its check comes
    first). OSError when a folder cannot be listed."""
    from rankitect.data.dataset import PARTITION_PREFIX
    from rankitect.schema import SCHEMA_FILE

    schema = folder / SCHEMA_FILE
    if schema.is_symlink() or schema.exists():
        yield schema
    with os.scandir(folder) as entries:
        partitions = sorted(e.name for e in entries if e.name.startswith(PARTITION_PREFIX))
    for name in partitions:
        partition = folder / name
        yield partition
        if not partition.is_dir():
            continue
        with os.scandir(partition) as entries:
            parts = sorted(e.name for e in entries if e.name.endswith(PARQUET_SUFFIX))
        yield from (partition / part for part in parts)


def check_dataset(folder: Path, field: str, roots: Sequence[Path]) -> None:
    """Refused PERMISSION_DENIED naming `field` and the file when a file of the dataset
    `folder` (already resolved and allowed) resolves outside `roots`; INVALID_ARGUMENT (or
    PERMISSION_DENIED for a permission error) when a folder of it cannot be listed or a link
    cannot be resolved (a loop)."""
    entries = dataset_entries(folder)
    while True:
        try:
            entry = next(entries)
        except StopIteration:
            return
        except OSError as exc:
            code = grpc.StatusCode.PERMISSION_DENIED if isinstance(exc, PermissionError) else \
                grpc.StatusCode.INVALID_ARGUMENT
            where = Path(exc.filename).name if exc.filename else str(folder)
            raise Refused(code, f"{field}: cannot list {show(where, 200)} of the dataset {show(str(folder), 200)}: "
                                f"{exc.strerror or exc}") from None
        _check_entry(folder, entry, field, roots)


def _check_entry(folder: Path, entry: Path, field: str, roots: Sequence[Path]) -> None:
    name = entry.relative_to(folder).as_posix()
    try:
        resolved = entry.resolve(strict=False)
    except (OSError, RuntimeError) as exc:  # a loop of links
        raise Refused(grpc.StatusCode.INVALID_ARGUMENT,
                      f"{field}: {show(name, 200)} of the dataset {show(str(folder), 200)} cannot be resolved "
                      f"({getattr(exc, 'strerror', None) or exc})") from None
    if not _under(resolved, roots):
        raise Refused(grpc.StatusCode.PERMISSION_DENIED,
                      f"{field}: {show(name, 200)} of the dataset {show(str(folder), 200)} is a link that leads "
                      f"outside the server's allowed folders {[str(r) for r in roots]} (the server's "
                      f"--allow-root); copy the file in, or allow its folder")
