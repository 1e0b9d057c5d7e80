"""User-supplied text is bounded before it is expanded (issue 18, items 2 to 5), against a real
server on 127.0.0.1 and the real CLI: YAML alias bombs in configs and overrides, nesting depth,
integers over the wire's int32 range (and stored rows that hold such values), and architectures
over the node limit, each refused with a short message naming the key or the limit."""

from __future__ import annotations

import json
from pathlib import Path

import grpc
import pytest
import yaml

from launcher.cli import main
from launcher.jobs.store import CANCELLED, RUNNING, SUCCEEDED, JobStore
from launcher.rpc.client import RankitectClient
from launcher.rpc.convert import architecture_to_proto, schema_to_proto
from launcher.rpc.gen import architecture_pb2 as apb
from launcher.rpc.gen import registry_pb2 as rpb
from rankitect.arch.graph import MAX_NODES
from tests.helpers import tiny_synth, toy_schema
from tests.rpc_helpers import running_server
from tests.test_rpc_search import search_config

NO_RAY = "127.0.0.1:9"  # never reached: no job here may start
INT32_MAX = 2**31 - 1
SHORT = 1000  # characters a refusal's message may take here (the 35.8 MB lines of the issue)


def alias_bomb(levels: int) -> str:
    """The issue's YAML: `[&a [1 x10], &b [*a x10], ...]`, each level ten times the one before
    (8 levels: 289 bytes as an `objectives=` override, 10**8 values expanded)."""
    names = "abcdefghij"[:levels]
    items = ["&a [1,1,1,1,1,1,1,1,1,1]"] + [f"&{c} [{','.join(['*' + p] * 10)}]" for p, c in zip(names, names[1:])]
    return "[" + ", ".join(items) + "]"


def chain(n: int) -> dict:
    """The JSON form of a chain of `n` mlp nodes ending in a logit."""
    nodes = [{"id": "n0", "block": "mlp", "inputs": ["dense"], "params": {}}]
    nodes += [{"id": f"n{i}", "block": "mlp", "inputs": [f"n{i - 1}"], "params": {}} for i in range(1, n)]
    nodes.append({"id": "logit", "block": "fc", "inputs": [f"n{n - 1}"], "params": {"width": 1, "activation": "none"}})
    return {"name": f"chain{n}", "nodes": nodes}


@pytest.fixture(scope="module")
def root(tmp_path_factory) -> Path:
    folder = tmp_path_factory.mktemp("bounds")
    tiny_synth(folder / "ds", days=3, rows_per_day=300)
    (folder / "deep.json").write_text("[" * 5000 + "]" * 5000)
    (folder / "chain20k.json").write_text(json.dumps(chain(20_000)))
    return folder


@pytest.fixture(scope="module")
def server(root, tmp_path_factory):
    with running_server(allow_roots=(root.resolve(),), ray_address=NO_RAY,
                        runs_dir=tmp_path_factory.mktemp("bounds-serve") / "runs") as srv:
        yield srv


@pytest.fixture
def client(server):
    with RankitectClient(server.address, timeout=60) as c:
        yield c


def refusal(call, *args, **kwargs) -> grpc.RpcError:
    with pytest.raises(grpc.RpcError) as info:
        call(*args, **kwargs)
    return info.value


def config_text(root: Path, **sections) -> str:
    return yaml.safe_dump(search_config(root / "ds", **sections))


# -- item 2: YAML aliases ---------------------------------------------------------------------
@pytest.mark.parametrize("key", ["objectives", "baselines", "data"])
def test_an_alias_bomb_in_an_override_is_refused_naming_the_key(client, root, key) -> None:
    override = f"{key}={alias_bomb(8 if key == 'objectives' else 7)}"
    if key == "objectives":
        assert len(override) == 289  # the request
    error = refusal(client.submit_search, config_text(root), [override])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith(f"overrides[0]: {key}")
    assert "aliases expanded" in error.details() and len(error.details()) < SHORT


def test_too_many_aliases_in_config_yaml_are_refused(client, root) -> None:
    text = config_text(root) + "x: &one 1\ny: [" + ", ".join(["*one"] * 65) + "]\n"
    error = refusal(client.submit_search, text)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("config_yaml: y[64]: more than 64 YAML aliases")


def test_the_size_bound_applies_to_the_config_with_its_overrides_merged(client, root) -> None:
    # The config and the override expand to 55,000 values each: each alone is within the bound
    # of 100,000, together they are over it, and the merged config is refused before it is used.
    thousand = "[" + ",".join(["1"] * 1000) + "]"
    config = yaml.safe_dump({k: v for k, v in search_config(root / "ds").items() if k != "space"})
    text = config + f"space:\n  name: nasrec\n  a: &k {thousand}\n  b: [{', '.join(['*k'] * 54)}]\n"
    override = f"space.c=[&k {thousand}, {', '.join(['*k'] * 54)}]"
    error = refusal(client.submit_search, text, [override])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("config: space.") and "100,000 values" in error.details()


def test_a_config_over_the_text_bound_is_refused_before_it_is_parsed(client, root) -> None:
    error = refusal(client.submit_search, config_text(root) + "# " + "x" * 300_000 + "\n")
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("config_yaml: the config and its overrides are 300,")
    assert error.details().endswith("characters; at most 262,144 are read")


def test_a_config_file_alias_bomb_exits_2_with_a_short_line_naming_the_key(root, tmp_path, capsys) -> None:
    config = search_config(root / "ds")
    path = tmp_path / "bomb.yaml"
    path.write_text(yaml.safe_dump(config) + f"objectives: {alias_bomb(7)}\n")  # 35.8 MB of error before
    assert main(["search", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"--config {path}: objectives[" in err and "aliases expanded" in err and len(err) < SHORT
    (tmp_path / "ok.yaml").write_text(yaml.safe_dump(config))
    assert main(["search", "--config", str(tmp_path / "ok.yaml"), "--set", f"baselines={alias_bomb(7)}",
                 "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert "--set 'baselines=[&a" in err and ": baselines[" in err and len(err) < SHORT
    assert not (tmp_path / "run").exists()


@pytest.mark.parametrize("tail", ["\x1b", "x: \x13\n", "x: \ufffe\n"])
def test_control_characters_in_config_yaml_are_invalid_argument(client, root, tail) -> None:
    # The YAML reader refuses them before a document starts (the fuzz test's INTERNAL).
    error = refusal(client.submit_search, config_text(root) + tail)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("config_yaml: not valid YAML") and len(error.details()) < SHORT


def test_a_config_file_with_a_control_character_exits_2(tmp_path, capsys) -> None:
    path = tmp_path / "bad.yaml"
    path.write_text("space:\n  name: nasrec\x07\n")
    assert main(["search", "--config", str(path), "--out", str(tmp_path / "run")]) == 2
    err = capsys.readouterr().err
    assert f"--config {path}: not valid YAML" in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


# -- item 4: integers against the wire's ranges -------------------------------------------
@pytest.mark.parametrize("how", ["override", "yaml"])
def test_trials_over_int32_are_refused_and_no_job_is_created(client, root, how) -> None:
    before = len(list(client.list_jobs()))
    budget = {"trials": INT32_MAX + 1}
    text = config_text(root, budget=budget if how == "yaml" else {"trials": 3})
    overrides = [f"budget.trials={INT32_MAX + 1}"] if how == "override" else []
    for validate_only in (True, False):
        error = refusal(client.submit_search, text, overrides, validate_only=validate_only)
        assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
        assert error.details().startswith("config.budget.trials: must be at most 2,147,483,647")
    assert len(list(client.list_jobs())) == before


def test_integers_over_int64_are_refused_naming_the_key(client, root) -> None:
    error = refusal(client.submit_search, config_text(root), ["seed=" + "9" * 30])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("overrides[0]: seed: 999") and "64 bits" in error.details()


def test_stored_rows_out_of_range_do_not_break_their_owners_calls(root, tmp_path) -> None:
    """Rows written before submissions were checked (trials_total 2**31, a trial numbered 2**40
    with metrics no field holds): every call on them answers, the values clamped."""
    runs = tmp_path / "runs"
    store = JobStore(runs / "jobs.sqlite3")
    trial = {"number": 2**40, "status": "complete", "attempts": 2**33, "seconds": 10**400,
             "metrics": {"ne": 0.9, "params": 1e30, "rows": 2**70, "flops_per_example": 10**400, "extra": 10**400},
             "arch": chain(1)}
    ids = []
    for end in (SUCCEEDED, CANCELLED):
        job, _ = store.create("anonymous", None, config_text(root), "digest", "random on nasrec", "random",
                              INT32_MAX + 1)
        (runs / job.job_id).mkdir(parents=True, exist_ok=True)
        store.transition(job.job_id, RUNNING, "started")
        store.update(job.job_id, attempts=2**40)
        store.append_event(job.job_id, "trial", {"trial": trial, "done": 2**31, "total": 2**31},
                           trials_done=2**31, best_json=json.dumps(trial))
        store.append_event(job.job_id, "progress", {"phase": "trials", "done": 2**70, "total": 2**70,
                                                    "unit": "trials"})
        store.transition(job.job_id, end, "ended")
        store.put_result(job.job_id, {"trials": [trial], "pareto": [trial], "best": trial})
        ids.append(job.job_id)
    store.close()
    with running_server(ray_address=NO_RAY, runs_dir=runs) as srv, RankitectClient(srv.address, timeout=30) as client:
        got = client.get_job(ids[0])
        assert (got.progress.trials_total, got.progress.trials_done, got.attempts) == (INT32_MAX,) * 3
        assert got.best.number == INT32_MAX and got.best.metrics.params == 2**63 - 1
        assert [j.job_id for j in client.list_jobs()] == ids[::-1]
        assert refusal(client.cancel_job, ids[0]).code() == grpc.StatusCode.FAILED_PRECONDITION
        assert client.cancel_job(ids[1]).progress.trials_total == INT32_MAX  # cancelled already: unchanged
        events = list(client.watch_job(ids[0]))
        assert [e.WhichOneof("kind") for e in events] == ["state", "state", "trial", "progress", "state"]
        assert events[2].trial.progress.trials_done == INT32_MAX and events[3].progress.done == 2**63 - 1
        assert client.get_result(ids[0]).trials[0].number == INT32_MAX


# -- item 5: nesting depth -------------------------------------------------------------------
def test_a_deeply_nested_override_is_invalid_argument(client, root) -> None:
    error = refusal(client.submit_search, config_text(root), ["seed=" + "[" * 10_000 + "]" * 10_000])
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("overrides[0]: seed: nested more than 32 levels deep")


def test_a_deeply_nested_baseline_file_is_invalid_argument(client, root) -> None:
    error = refusal(client.submit_search, config_text(root, baselines=[str(root / "deep.json")]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert "nested more than 32 levels deep" in error.details()


def test_a_deeply_nested_json_value_over_the_wire_is_invalid_argument(client) -> None:
    request = rpb.ValidateArchitectureRequest()
    node = request.architecture.nodes.add(id="a", block="mlp", inputs=["dense"])
    value = apb.ParamValue()
    inner = value.json_value
    for _ in range(40):  # protobuf itself parses up to about 50 levels
        inner = inner.list_value.values.add()
    inner.number_value = 1
    node.params["widths"].CopyFrom(value)
    request.schema.CopyFrom(schema_to_proto(toy_schema()))
    error = refusal(client.call, client.registry.ValidateArchitecture, request)
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details().startswith("architecture.nodes[0].params.widths[0]")
    assert "nested more than 32 levels deep" in error.details()


def test_train_with_a_deeply_nested_arch_file_exits_2(root, tmp_path, capsys) -> None:
    code = main(["train", "--data", str(root / "ds"), "--arch", str(root / "deep.json"), "--train-dates", "first:1",
                 "--eval-dates", "last:1", "--out", str(tmp_path / "run")])
    err = capsys.readouterr().err
    assert code == 2, err
    assert "nested more than 32 levels deep" in err and "Traceback" not in err and len(err) < SHORT


# -- item 3: the node limit ------------------------------------------------------------------
def test_an_architecture_over_the_node_limit_is_refused_at_once(client) -> None:
    error = refusal(client.validate_architecture, chain(20_000), toy_schema())
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert error.details() == (f"architecture.nodes: 20,001 nodes; an architecture has at most {MAX_NODES:,} "
                               f"(the server's node limit)")
    assert refusal(client.estimate_cost, chain(20_000), toy_schema()).code() == grpc.StatusCode.INVALID_ARGUMENT


def test_a_baseline_file_over_the_node_limit_is_refused(client, root) -> None:
    error = refusal(client.submit_search, config_text(root, baselines=[str(root / "chain20k.json")]))
    assert error.code() == grpc.StatusCode.INVALID_ARGUMENT
    assert f"at most {MAX_NODES:,} (MAX_NODES)" in error.details()


def test_an_architecture_at_the_node_limit_validates_in_order(client) -> None:
    arch = chain(MAX_NODES - 1)  # and the logit: MAX_NODES nodes
    assert client.validate_architecture(arch, toy_schema()) == []
    reply = client.call(client.registry.ValidateArchitecture, rpb.ValidateArchitectureRequest(
        architecture=architecture_to_proto(arch), schema=schema_to_proto(toy_schema())))
    assert [n.id for n in reply.nodes] == [n["id"] for n in arch["nodes"]]
    looped = chain(MAX_NODES - 1)
    looped["nodes"][0]["inputs"] = [f"n{MAX_NODES - 2}"]  # n0 <- the last mlp: one long cycle
    problems = client.validate_architecture(looped, toy_schema())
    assert problems[0][:2] == ("n0", "inputs")
    assert problems[0][2].startswith(f"cycle: n0 -> n{MAX_NODES - 2} -> n{MAX_NODES - 3} -> ")
