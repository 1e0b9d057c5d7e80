"""Datasets a caller names are resolved file by file under the server's --allow-root: a
dataset inside an allowed folder whose schema.json, a date= folder or a parquet file is a link
to outside is PERMISSION_DENIED naming the request field and the file, through ServerOptions
and through a real server (BlockRegistry's `dataset`, SubmitSearch's `data.path`). Links that
stay inside the allowed folders are fine."""

from __future__ import annotations

import shutil
from pathlib import Path

import grpc
import pytest

from launcher.rpc.client import RankitectClient
from launcher.rpc.errors import Refused
from launcher.rpc.server import ServerOptions
from tests.helpers import tiny_synth
from tests.rpc_helpers import baseline_archs, running_server

DATES = ("2024-01-01", "2024-01-02", "2024-01-03")
FIRST = f"date={DATES[0]}"
PART = "part-00000.parquet"


def _copy_with_link(good: Path, out: Path, name: str, target: Path) -> Path:
    """A copy of the dataset `good` at `out` in which `name` (a path inside it) is a link to
    `target`."""
    shutil.copytree(good, out)
    link = out / name
    shutil.rmtree(link) if link.is_dir() else link.unlink()
    link.symlink_to(target, target_is_directory=target.is_dir())
    return out


@pytest.fixture(scope="module")
def layout(tmp_path_factory) -> dict[str, Path]:
    """An allowed root with a dataset, copies of it with one link out each, one whose files
    all link inside the root, and the outside folder the bad links lead to."""
    root = tmp_path_factory.mktemp("allowed").resolve()
    outside = tmp_path_factory.mktemp("outside").resolve()
    good = tiny_synth(root / "good", days=3, rows_per_day=600)
    shutil.copytree(good, outside / "ds")
    places = {"root": root, "outside": outside, "good": good,
              "schema_out": _copy_with_link(good, root / "schema_out", "schema.json", outside / "ds" / "schema.json"),
              "date_out": _copy_with_link(good, root / "date_out", FIRST, outside / "ds" / FIRST),
              "part_out": _copy_with_link(good, root / "part_out", f"{FIRST}/{PART}", outside / "ds" / FIRST / PART)}
    inside = root / "inside"
    inside.mkdir()
    (inside / "schema.json").symlink_to(good / "schema.json")
    for date in DATES:
        (inside / f"date={date}").symlink_to(good / f"date={date}", target_is_directory=True)
    places["inside"] = inside
    loop = _copy_with_link(good, root / "loop", "schema.json", root / "loop" / "schema.json")
    places["loop"] = loop
    (root / "top_link").symlink_to(good, target_is_directory=True)  # the folder itself a link inside
    places["top_link"] = root / "top_link"
    return places


@pytest.fixture(scope="module")
def options(layout) -> ServerOptions:
    return ServerOptions(allow_roots=(layout["root"],))


def _refusal(call) -> Refused:
    with pytest.raises(Refused) as info:
        call()
    return info.value


@pytest.mark.parametrize("name, offending", [("schema_out", "'schema.json'"), ("date_out", f"'{FIRST}'"),
                                             ("part_out", f"'{FIRST}/{PART}'")])
def test_a_link_out_of_the_allowed_folder_is_refused_naming_the_file(layout, options, name, offending) -> None:
    for check, field in ((options.allowed_dataset, "dataset"), (options.allowed_path, "config.data.path")):
        refusal = _refusal(lambda: check(str(layout[name]), field))
        assert refusal.code == grpc.StatusCode.PERMISSION_DENIED
        assert refusal.details.startswith(f"{field}: {offending} of the dataset "), refusal.details
        assert "outside the server's allowed folders" in refusal.details
        assert str(layout["outside"]) not in refusal.details  # where the link leads is not told


def test_links_that_stay_inside_are_fine(layout, options) -> None:
    for name in ("good", "inside", "top_link"):
        assert options.allowed_dataset(str(layout[name]), "dataset") == (layout["good"] if name == "top_link"
                                                                         else layout[name])
    schema_file = layout["good"] / "schema.json"
    assert options.allowed_path(str(schema_file), "config.baselines[0]") == schema_file  # a file: as itself


def test_a_loop_of_links_is_invalid_argument(layout, options) -> None:
    refusal = _refusal(lambda: options.allowed_dataset(str(layout["loop"]), "dataset"))
    assert refusal.code == grpc.StatusCode.INVALID_ARGUMENT
    assert refusal.details.startswith("dataset: 'schema.json' of the dataset ") and "resolved" in refusal.details


@pytest.fixture(scope="module")
def client(layout):
    with running_server(allow_roots=(layout["root"],), max_jobs=0) as server, \
            RankitectClient(server.address, timeout=60) as c:
        yield c


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_the_registry_refuses_a_dataset_with_a_link_out(client, layout) -> None:
    from rankitect.schema import Schema

    arch = baseline_archs(Schema.load(layout["good"]))["lr"]
    assert client.validate_architecture(arch, dataset=str(layout["inside"])) == []
    for name, offending in (("schema_out", "schema.json"), ("date_out", FIRST)):
        code, details = _code(lambda: client.validate_architecture(arch, dataset=str(layout[name])))
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        assert details.startswith(f"dataset: '{offending}' of the dataset"), details


def _config(data: Path) -> dict:
    return {"data": {"path": str(data), "train_dates": "first:1", "valid_dates": DATES[1], "test_dates": "last:1"},
            "space": {"name": "nasrec", "blocks": 2}, "searcher": {"name": "random"}, "budget": {"trials": 2},
            "train": {"epochs": 1, "batch_size": 256}, "baselines": ["lr"]}


def test_submit_search_refuses_a_dataset_with_a_link_out(client, layout) -> None:
    job, created = client.submit_search(_config(layout["inside"]), validate_only=True)
    assert not created and job.config_yaml
    for name, offending in (("schema_out", "schema.json"), ("date_out", FIRST), ("part_out", f"{FIRST}/{PART}")):
        code, details = _code(lambda: client.submit_search(_config(layout[name]), validate_only=True))
        assert code == grpc.StatusCode.PERMISSION_DENIED, details
        assert details.startswith(f"config.data.path: '{offending}' of the dataset"), details
