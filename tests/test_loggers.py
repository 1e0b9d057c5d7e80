"""Search callbacks and the TensorBoard / MLflow loggers, on a real search: the events in their
order, a TensorBoard event file read back with TensorBoard's own reader, and an MLflow
`sqlite:///` tracking store read back through MlflowClient."""

from __future__ import annotations

from pathlib import Path

import pytest

import rankitect
from launcher.cli import main
from rankitect.errors import ConfigError, UserError
from tests.helpers import tiny_synth

event_accumulator = pytest.importorskip("tensorboard.backend.event_processing.event_accumulator",
                                        reason="tensorboard is in requirements.lock; this venv lacks it")
mlflow = pytest.importorskip("mlflow", reason="mlflow-skinny is in requirements.lock; this venv lacks it")


class Recorder(rankitect.SearchCallback):
    """Every event, in order, as (name, key) pairs."""

    def __init__(self) -> None:
        self.events: list[tuple[str, object]] = []
        self.epochs: dict[int, dict[int, float]] = {}
        self.finished = None

    def search_started(self, run_dir, config, continued) -> None:
        self.events.append(("search_started", continued))

    def trial_started(self, number, choices, arch) -> None:
        assert choices and arch["nodes"]
        self.events.append(("trial_started", number))

    def trial_epoch(self, number, epoch, metrics) -> None:
        self.epochs.setdefault(number, {})[epoch] = metrics["ne"]
        self.events.append(("trial_epoch", number))

    def trial(self, trial, done, total) -> None:
        self.events.append(("trial", trial["number"]))

    def baseline(self, name, record) -> None:
        self.events.append(("baseline", name))

    def search_finished(self, result) -> None:
        self.finished = result
        self.events.append(("search_finished", None))


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    return tiny_synth(tmp_path_factory.mktemp("loggers") / "ds", days=3, rows_per_day=600)


def _config(data: Path, trials: int, logging: dict) -> dict:
    return {"data": {"path": str(data), "train_dates": "first:1", "valid_dates": "2024-01-02", "test_dates": "last:1"},
            "space": {"name": "nasrec", "blocks": 1}, "searcher": {"name": "random"}, "budget": {"trials": trials},
            "train": {"epochs": 2, "batch_size": 256}, "baselines": ["lr"], "logging": logging}


@pytest.fixture(scope="module")
def logged(ray_cluster, data, tmp_path_factory):
    """A search of 2 trials, then continued to 3, logged to TensorBoard and MLflow with a recorder."""
    root = tmp_path_factory.mktemp("logged")
    logging = {"tensorboard": str(root / "tb"), "mlflow": f"sqlite:///{root / 'mlflow.db'}",
               "mlflow_experiment": "loggers-test"}
    first, second = Recorder(), Recorder()
    rankitect.search(_config(data, 2, logging), root / "run", progress=False, callbacks=[first])
    result = rankitect.search(_config(data, 3, logging), root / "run", progress=False, callbacks=[second])
    return root, logging, result, first, second


def test_callbacks_hear_the_search_in_order(logged) -> None:
    _, _, result, first, second = logged
    names = [name for name, _ in first.events]
    assert names[0] == "search_started" and names[-1] == "search_finished"
    assert first.events[0] == ("search_started", False) and second.events[0] == ("search_started", True)
    assert [k for n, k in first.events if n == "trial"] == [0, 1]
    assert [k for n, k in first.events if n == "baseline"] == ["lr"]
    for number in (0, 1):
        started, epochs, told = (first.events.index(e) for e in
                                 (("trial_started", number), ("trial_epoch", number), ("trial", number)))
        assert started < epochs < told  # started, its epochs, then its outcome
    # The continuation hears only what it does: one more trial, no baseline trained again. Its
    # number is 3: study trial 2 records lr, trained beside the search (for optuna-dashboard).
    assert [k for n, k in second.events if n in ("trial_started", "trial")] == [3, 3]
    assert [t["number"] for t in result.trials] == [0, 1, 3]
    assert second.finished is result and len(result.trials) == 3
    for trial in result.trials:
        curve = trial["curve"]
        assert curve["metric"] == "ne" and curve["epochs"] == [1, 2]
        heard = (first.epochs | second.epochs)[trial["number"]]
        assert heard == dict(zip(curve["epochs"], curve["values"]))
        assert trial["metrics"]["ne"] == pytest.approx(min(curve["values"]))  # the best epoch is kept


def _scalars(folder: Path) -> dict[str, dict[int, float]]:
    acc = event_accumulator.EventAccumulator(str(folder), size_guidance={event_accumulator.SCALARS: 0})
    acc.Reload()
    return {tag: {e.step: e.value for e in acc.Scalars(tag)} for tag in acc.Tags()["scalars"]}


def test_tensorboard_holds_curves_finals_and_the_front(logged) -> None:
    root, _, result, _, _ = logged
    tb = root / "tb"
    assert sorted(p.name for p in tb.iterdir()) == ["baseline_lr", "search", "trial_0000", "trial_0001", "trial_0003"]
    for trial in result.trials:
        scalars = _scalars(tb / f"trial_{trial['number']:04d}")
        curve = trial["curve"]
        assert scalars["valid/ne"] == pytest.approx(dict(zip(curve["epochs"], curve["values"])))
        assert scalars["test/ne"] == pytest.approx({0: trial["test_metrics"]["ne"]})
        assert scalars["cost/flops_per_example"] == {0: trial["metrics"]["flops_per_example"]}
    baseline, record = _scalars(tb / "baseline_lr"), result.baselines["lr"]
    assert baseline["valid/ne"] == pytest.approx(dict(zip(record["curve"]["epochs"], record["curve"]["values"])))
    assert baseline["test/ne"] == pytest.approx({0: record["test_metrics"]["ne"]})
    search = _scalars(tb / "search")
    assert search["valid/ne"] == pytest.approx({t["number"]: t["metrics"]["ne"] for t in result.trials})
    assert min(search["best/valid_ne"].values()) == pytest.approx(result.best["metrics"]["ne"])
    assert search["front/size"][max(search["front/size"])] == len(result.pareto)
    acc = event_accumulator.EventAccumulator(str(tb / "search"))
    acc.Reload()
    assert "front/plot" in acc.Tags()["images"]


def test_mlflow_holds_a_parent_and_a_run_per_trial_and_baseline(logged) -> None:
    _, logging, result, _, _ = logged
    client = mlflow.MlflowClient(tracking_uri=logging["mlflow"])
    experiment = client.get_experiment_by_name("loggers-test")
    runs = client.search_runs([experiment.experiment_id])
    (parent,) = [r for r in runs if r.data.tags.get("rankitect.role") == "search"]  # one, continued
    assert parent.info.status == "FINISHED" and parent.data.params["searcher"] == "random"
    assert parent.data.tags["rankitect.best_trial"] == str(result.best["number"])
    children = [r for r in runs if r.data.tags.get("mlflow.parentRunId") == parent.info.run_id]
    assert sorted(r.info.run_name for r in children) == ["baseline lr", "trial 0000", "trial 0001", "trial 0003"]
    by_number = {int(r.data.tags["rankitect.trial"]): r for r in children if "rankitect.trial" in r.data.tags}
    for trial in result.trials:
        run = by_number[trial["number"]]
        assert run.data.params == {k: str(v) for k, v in trial["choices"].items()}
        history = client.get_metric_history(run.info.run_id, "valid/ne")
        curve = trial["curve"]
        assert {m.step: m.value for m in history} == pytest.approx(dict(zip(curve["epochs"], curve["values"])))
        assert run.data.metrics["test/ne"] == pytest.approx(trial["test_metrics"]["ne"])
        assert run.info.status == "FINISHED"
    best = client.get_metric_history(parent.info.run_id, "best/valid_ne")
    assert min(m.value for m in best) == pytest.approx(result.best["metrics"]["ne"])


@pytest.mark.parametrize("logging,message", [
    ({"tensorboard": ""}, "logging.tensorboard: must be a non-empty string"),
    ({"mlflow": 5}, "logging.mlflow: must be str"),
    ({"wandb": "x"}, "logging.wandb: unknown key"),
])
def test_bad_logging_keys_are_named(data, tmp_path, logging, message) -> None:
    with pytest.raises(ConfigError, match=message):
        rankitect.search(_config(data, 1, logging), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_an_unusable_tracking_store_is_named_before_the_run_folder_is_written(data, tmp_path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    uri = f"sqlite:///{tmp_path / 'a-file' / 'mlflow.db'}"
    with pytest.raises(UserError, match="logging.mlflow: cannot use the tracking store"):
        rankitect.search(_config(data, 1, {"mlflow": uri}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_callback_that_is_not_one_is_named(data, tmp_path) -> None:
    with pytest.raises(TypeError, match=r"callbacks\[1\]: must be a rankitect.SearchCallback"):
        rankitect.search(_config(data, 1, {}), tmp_path / "run", callbacks=[Recorder(), print])
    with pytest.raises(TypeError, match=r"callbacks: must be a list of rankitect.SearchCallback objects, got Recorder"):
        rankitect.search(_config(data, 1, {}), tmp_path / "run", callbacks=Recorder())
    assert not (tmp_path / "run").exists()


def test_an_unusable_tensorboard_folder_is_named_before_the_run_folder_is_written(data, tmp_path) -> None:
    (tmp_path / "a-file").write_text("not a folder")
    with pytest.raises(UserError, match="logging.tensorboard: cannot create the folder"):
        rankitect.search(_config(data, 1, {"tensorboard": str(tmp_path / "a-file" / "tb")}), tmp_path / "run")
    assert not (tmp_path / "run").exists()


def test_a_continued_search_logs_into_its_parent_and_a_forced_one_into_a_new_one(tmp_path) -> None:
    from rankitect.experiment.log_mlflow import RUN_DIR_TAG, MLflowLogger

    uri, config = f"sqlite:///{tmp_path / 'mlflow.db'}", {"space": {"name": "nasrec"}, "searcher": {"name": "tpe"},
                                                          "data": {"path": "d"}}
    parents = []
    for continued in (False, True, False, True):  # a search, continued, forced, continued
        logger = MLflowLogger(uri, "forced")
        logger.search_started(tmp_path / "run", config, continued)
        parents.append(logger.parent_id)
        logger.close()
    assert parents[1] == parents[0] and parents[3] == parents[2] != parents[0]
    client = mlflow.MlflowClient(tracking_uri=uri)
    runs = client.search_runs([client.get_experiment_by_name("forced").experiment_id])
    assert len(runs) == 2 and {r.data.tags[RUN_DIR_TAG] for r in runs} == {str((tmp_path / "run").resolve())}


def test_a_deleted_experiment_is_named(tmp_path) -> None:
    from rankitect.experiment.log_mlflow import MLflowLogger

    uri = f"sqlite:///{tmp_path / 'mlflow.db'}"
    client = mlflow.MlflowClient(tracking_uri=uri)
    client.delete_experiment(client.create_experiment("gone"))
    with pytest.raises(UserError, match="logging.mlflow_experiment: the experiment 'gone' is deleted"):
        MLflowLogger(uri, "gone")


def test_the_cli_exits_2_on_a_bad_logging_key(data, tmp_path, capsys) -> None:
    config = tmp_path / "search.yaml"
    config.write_text(f"data: {{path: {data}, train_dates: 'first:1', valid_dates: '2024-01-02', "
                      f"test_dates: 'last:1'}}\nspace: {{name: nasrec}}\nsearcher: {{name: random}}\n")
    assert main(["search", "--config", str(config), "--out", str(tmp_path / "run"), "--set", "logging.wandb=x"]) == 2
    err = capsys.readouterr().err
    assert "logging.wandb: unknown key" in err and "Traceback" not in err
