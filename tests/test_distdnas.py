"""DistDNAS: shard supernets on the session's real Ray cluster, aggregation, result.json."""

from __future__ import annotations

import json
import re
from pathlib import Path

import pytest
import yaml

from distdnas.aggregate import aggregate
from distdnas.searcher import shard_dates
from launcher.cli import main
from rankitect.data.dataset import Dataset
from rankitect.experiment.report import report_lines
from rankitect.experiment.run import search
from rankitect.space import make_space
from tests.helpers import tiny_synth
from tests.test_planned_search import INTERACTIONS
from tests.test_search import make_config

SEARCHER = {"name": "distdnas", "lambdas": [0.0, 20.0], "epochs": 4, "arch_fraction": 0.5, "arch_lr": 0.1,
            "warmup_fraction": 0.0}


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("distdnas") / "ds", days=4, rows_per_day=1000)


@pytest.fixture(scope="module")
def single_run(ray_cluster, data, tmp_path_factory) -> tuple:
    """(the result, its run folder) of one search with SEARCHER on the session's Ray."""
    folder = tmp_path_factory.mktemp("distdnas-run") / "run"
    return search(_config(data, SEARCHER), folder, progress=False), folder


def _config(data: Path, searcher: dict) -> dict:
    config = make_config(data, trials=1, space=INTERACTIONS, searcher=searcher, baselines=[])
    config["data"] = {"path": str(data), "train_dates": "first:2", "valid_dates": "2024-01-03",
                      "test_dates": "last:1"}
    return config


def _space(data: Path):
    return make_space("interactions", Dataset.open(str(data)).schema,
                      {k: v for k, v in INTERACTIONS.items() if k != "name"})


def _argmax_of_mean(shards: list[dict], names: list[str]) -> dict[str, str]:
    """The mean rule computed here from the stored weights, per choice."""
    out = {}
    for name in names:
        options = shards[0]["weights"][name]
        mean = {o: sum(s["weights"][name][o] for s in shards) / len(shards) for o in options}
        out[name] = max(mean, key=mean.__getitem__)
    return out


def test_one_supernet_per_date_aggregated_and_retrained(single_run, data) -> None:
    result, folder = single_run
    saved = json.loads((folder / "result.json").read_text())
    shards = saved["shards"]
    assert [(s["lambda"], s["dates"]) for s in shards] == [
        (0.0, ["2024-01-01"]), (0.0, ["2024-01-02"]), (20.0, ["2024-01-01"]), (20.0, ["2024-01-02"])]
    for shard in shards:
        assert shard["steps"] == 16 and set(shard["choice"]) <= set(shard["weights"])  # 4 batches x 4 epochs
    runs = {run["lambda"]: run for run in saved["planning"]["lambdas"]}
    for lam, run in runs.items():
        mine = [s for s in shards if s["lambda"] == lam]
        by_mean = _argmax_of_mean(mine, list(run["choice"]))
        assert {k: str(v) for k, v in run["choice"].items()} == by_mean
    assert saved["trials"] and all(t["status"] == "complete" for t in saved["trials"])
    for trial in saved["trials"]:
        assert trial["metrics"]["train_dates"] == ["2024-01-01", "2024-01-02"]
        assert trial["metrics"]["flops_per_example"] <= saved["supernet_flops"]
    cheap = next(t for t in saved["trials"] if 20.0 in t["proposal"]["lambdas"])
    rich = next(t for t in saved["trials"] if 0.0 in t["proposal"]["lambdas"])
    assert cheap["metrics"]["flops_per_example"] < rich["metrics"]["flops_per_example"]
    assert result.best is not None and (folder / "best" / "arch.json").is_file()
    shown = [line for line in report_lines(saved) if line.startswith("distdnas lambda=0:")]
    agreeing = sum(1 for s in shards if s["lambda"] == 0.0 and s["choice"] == runs[0.0]["choice"])
    assert shown and shown[0].startswith(f"distdnas lambda=0: {agreeing}/2 date shards")

    # Run again: every shard is read back, none trained again.
    files = sorted((folder / "planning" / "distdnas").glob("*.json"))
    stamps = [f.stat().st_mtime_ns for f in files]
    (folder / "planning" / "plan.json").unlink()
    again = search(_config(data, SEARCHER), folder, progress=False)
    assert [f.stat().st_mtime_ns for f in files] == stamps and again.trials == result.trials


def test_mean_vote_and_threshold(data) -> None:
    space = _space(data)
    names = [c.name for c in space.choices()]
    uniform = {c.name: {str(o): 1.0 / len(c.options) for o in c.options} for c in space.choices()}

    def shard(**picks: tuple[str, float]) -> dict:
        weights = {k: dict(v) for k, v in uniform.items()}
        for name, (option, p) in picks.items():
            name = name.replace("__", ".")
            rest = (1.0 - p) / (len(weights[name]) - 1)
            weights[name] = {o: (p if o == option else rest) for o in weights[name]}
        return {c.name: [weights[c.name][str(o)] for o in c.options] for c in space.choices()}  # by position

    # Two shards mildly prefer dot in layer 0; one strongly prefers mlp: mean -> mlp, vote -> dot.
    shards = [shard(l0__module=("dot", 0.3)), shard(l0__module=("dot", 0.3)), shard(l0__module=("mlp", 0.9))]
    by_mean, _ = aggregate(space, shards, "mean")
    by_vote, shares = aggregate(space, shards, "vote")
    assert by_mean["l0.module"] == "mlp" and by_vote["l0.module"] == "dot"
    assert shares["l0.module"]["dot"] == pytest.approx(2 / 3)
    dropped, _ = aggregate(space, shards, "mean", threshold=0.5)  # mlp's mean weight is 0.4 < 0.5
    assert dropped["l0.module"] == "skip"
    assert set(by_mean) <= set(names) and space.check_choices(by_mean) == by_mean
    with pytest.raises(ValueError, match="aggregation must be one of"):
        aggregate(space, shards, "median")


def test_shards_group_consecutive_dates() -> None:
    dates = ("2024-01-03", "2024-01-01", "2024-01-02")
    assert shard_dates(dates, 1) == [("2024-01-01",), ("2024-01-02",), ("2024-01-03",)]
    assert shard_dates(dates, 2) == [("2024-01-01", "2024-01-02"), ("2024-01-03",)]


@pytest.mark.parametrize("searcher, message", [
    ({"name": "distdnas", "aggregation": "median"}, "searcher.aggregation: must be one of"),
    ({"name": "distdnas", "dates_per_shard": 0}, "searcher.dates_per_shard: must be >= 1, got 0"),
    ({"name": "distdnas", "normalize": "yes"}, "searcher.normalize: must be bool, got 'yes'"),
])
def test_bad_options_exit_2(data, tmp_path, capsys, searcher, message) -> None:
    path = tmp_path / "search.yaml"
    path.write_text(yaml.safe_dump(_config(data, searcher)))
    assert main(["search", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err


def test_a_shard_worker_killed_mid_shard_is_replaced_and_the_choice_is_unchanged(ray_cluster, data, tmp_path,
                                                                                 trial_gate) -> None:
    """SIGKILL of the worker process training shard 0, held by the test gate right after its
    first epoch's checkpoint: the pool starts a fresh actor, the shard resumes from that
    checkpoint, and the search picks what an undisturbed run with the same seed picks."""
    import os
    import signal

    from tests.test_search import _driver, _write_config

    searcher = {**SEARCHER, "lambdas": [0.0]}
    calm = search(_config(data, searcher), tmp_path / "calm", progress=False)
    out = tmp_path / "faulty"
    point = "lambda_0_shard_0-epoch 1"
    trial_gate.hold(first=1, last=1, what="lambda_0_shard_0-epoch")
    proc = _driver(_write_config(tmp_path, _config(data, searcher)), out, ray_cluster)
    trial_gate.wait_started(point, proc=proc)
    os.kill(trial_gate.pid(point), signal.SIGKILL)
    trial_gate.wait_stopped(point)
    trial_gate.release()
    _, err = proc.communicate(timeout=300)
    assert proc.returncode == 0, err
    faulty = json.loads((out / "result.json").read_text())
    shard = json.loads((out / "planning" / "distdnas" / "lambda_0_shard_0.json").read_text())
    assert shard["resumed_at_epoch"] >= 1
    assert faulty["planning"]["lambdas"][0]["choice"] == calm.planning["lambdas"][0]["choice"]
    assert [t["arch"] for t in faulty["trials"]] == [t["arch"] for t in calm.trials]



def test_two_node_cluster_spreads_the_shards_and_picks_what_one_node_picks(single_run, data, tmp_path,
                                                                           monkeypatch) -> None:
    """A real two-node Ray cluster on 127.0.0.1 (ray.cluster_utils.Cluster: a head and a second
    node, one CPU each; `ray start --address` itself refuses a second node while
    RAY_ENABLE_WINDOWS_OR_OSX_CLUSTER=0 keeps Ray on loopback): the driver, a separate process
    given `--address`, runs shard jobs on both nodes and picks what the one-node run picks."""
    import tempfile

    from ray.cluster_utils import Cluster

    from tests.conftest import stop_cluster
    from tests.test_search import _driver, _write_config

    single, _ = single_run
    temp_dir = Path(tempfile.mkdtemp(prefix="rk2n-", dir="/tmp"))  # short: Ray's socket paths have a limit
    # Cluster() records its address in RAY_TMPDIR/ray/ (by default /tmp/ray/, which need not exist).
    (temp_dir / "ray").mkdir()
    monkeypatch.setenv("RAY_TMPDIR", str(temp_dir))
    cluster = None
    try:
        cluster = Cluster(initialize_head=True, head_node_args={
            "num_cpus": 1, "node_ip_address": "127.0.0.1", "include_dashboard": False,
            "object_store_memory": 100_000_000, "temp_dir": str(temp_dir)})
        cluster.add_node(num_cpus=1, node_ip_address="127.0.0.1", object_store_memory=100_000_000)
        proc = _driver(_write_config(tmp_path, _config(data, SEARCHER)), tmp_path / "two", cluster.address)
        _, err = proc.communicate(timeout=300)
        assert proc.returncode == 0, err
    finally:
        if cluster is not None:
            cluster.shutdown()
        stop_cluster(temp_dir)
    two = json.loads((tmp_path / "two" / "result.json").read_text())
    assert len({s["worker"]["node_id"] for s in two["shards"]}) == 2
    assert [r["choice"] for r in two["planning"]["lambdas"]] == [r["choice"] for r in single.planning["lambdas"]]
    assert [t["arch"] for t in two["trials"]] == [t["arch"] for t in single.trials]


def test_distdnas_over_nasrec_aggregates_every_choice(ray_cluster, data, tmp_path, capsys) -> None:
    from tests.test_planned_search import NASREC

    config = _config(data, {**SEARCHER, "lambdas": [0.0], "gumbel": True})
    config["space"] = NASREC
    search(config, tmp_path / "run", progress=True)
    # The planning bar counts jobs (one per shard here): its total never changes, and each
    # status line is a line of its own, not glued to the bar.
    err = capsys.readouterr().err
    totals = set(re.findall(r"\| [\d.]+/(\d+) jobs \[", err))
    assert totals == {"2"}, err[-2000:]
    status = [line for line in re.split(r"[\r\n]", err) if "[planning]" in line and "done (" in line]
    assert len(status) == 2 and all(line.startswith("[planning] ") for line in status), status
    saved = json.loads((tmp_path / "run" / "result.json").read_text())
    space = make_space("nasrec", Dataset.open(str(data)).schema, {k: v for k, v in NASREC.items() if k != "name"})
    assert [s["dates"] for s in saved["shards"]] == [["2024-01-01"], ["2024-01-02"]]
    choice = saved["planning"]["lambdas"][0]["choice"]
    assert space.check_choices(choice) == choice  # every active choice decided, from the shards' logits
    assert saved["trials"] and all(t["status"] == "complete" for t in saved["trials"])
    assert all(t["metrics"]["flops_per_example"] <= saved["supernet_flops"] for t in saved["trials"])
