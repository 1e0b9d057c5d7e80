"""The `rankitect` CLI: commands work end to end; a user's mistake exits 2 with a clear message."""

from __future__ import annotations

import json
import os
import signal
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import main
from tests.conftest import ROOT


@pytest.fixture(scope="module")
def data(tmp_path_factory) -> Path:
    out = tmp_path_factory.mktemp("cli") / "ds"
    assert main(["data", "synth", "--out", str(out), "--days", "3", "--rows-per-day", "1500",
                 "--seed", "1"]) == 0
    return out


def _train_args(data: Path, out: Path, *extra: str) -> list[str]:
    return ["train", "--data", str(data), "--arch", "deepfm", "--train-dates", "first:2",
            "--eval-dates", "last:1", "--out", str(out), "--batch-size", "256", *extra]


def test_synth_and_inspect(data, capsys) -> None:
    assert (data / "truth.json").is_file()
    assert main(["data", "inspect", str(data)]) == 0
    text = capsys.readouterr().out
    assert "2024-01-03" in text and "tags" in text and "hash_size=21" in text
    assert main(["data", "inspect", str(data), "--json"]) == 0
    info = json.loads(capsys.readouterr().out)
    assert info["rows"] == 4500 and len(info["dates"]) == 3


def test_train_writes_metrics(data, tmp_path, capsys) -> None:
    assert main(_train_args(data, tmp_path / "run", "--epochs", "1")) == 0
    assert "NE " in capsys.readouterr().out
    metrics = json.loads((tmp_path / "run" / "metrics.json").read_text())
    assert metrics["train_dates"] == ["2024-01-01", "2024-01-02"]
    assert metrics["eval_dates"] == ["2024-01-03"]


# `rankitect train ...` whose every step passes the test gate (rankitect.test_gate) as
# "step N", through the Trainer's on_step: a test holds training at the step it chooses.
TRAIN_THROUGH_THE_GATE = """
import sys
from launcher.cli import main
from rankitect.test_gate import wait_at_gate
from rankitect.train.trainer import Trainer

plain_init = Trainer.__init__

def init_through_the_gate(self, *args, **kwargs):
    kwargs.setdefault("on_step", lambda step, loss: wait_at_gate(f"step {step}"))
    plain_init(self, *args, **kwargs)

Trainer.__init__ = init_through_the_gate
sys.exit(main(sys.argv[1:]))
"""


def test_ctrl_c_then_resume_matches_a_straight_run(data, tmp_path, capsys, trial_gate) -> None:
    """Ctrl-C while training is held in step 12 (the checkpoint of step 10 is on disk): the
    step ends, a checkpoint of step 12 is saved, exit 130; --resume ends as a straight run."""
    args = _train_args(data, tmp_path / "cut", "--epochs", "3", "--batch-size", "32",
                       "--checkpoint-every", "10")
    trial_gate.hold(first=12, last=12, what="step")
    proc = subprocess.Popen([sys.executable, "-c", TRAIN_THROUGH_THE_GATE, *args], stdout=subprocess.PIPE,
                            stderr=subprocess.PIPE, text=True, cwd=ROOT, env={**os.environ, **trial_gate.env})
    trial_gate.wait_started("step 12", proc=proc)
    assert (tmp_path / "cut" / "checkpoint.pt").is_file()
    proc.send_signal(signal.SIGINT)  # handled (a request to stop after the step) before the release is seen
    trial_gate.release()
    _, err = proc.communicate(timeout=60)
    assert proc.returncode == 130, err
    assert "training interrupted at step 12; resume with --resume (checkpoint of step 12" in err
    assert "Traceback" not in err
    assert not (tmp_path / "cut" / "metrics.json").exists()
    assert main([*args, "--resume"]) == 0
    straight = tmp_path / "straight"
    assert main(_train_args(data, straight, "--epochs", "3", "--batch-size", "32")) == 0
    resumed = json.loads((tmp_path / "cut" / "metrics.json").read_text())
    expected = json.loads((straight / "metrics.json").read_text())
    assert resumed["steps"] == expected["steps"]
    assert resumed["logloss"] == pytest.approx(expected["logloss"], abs=1e-6)


def test_blocks_json(capsys) -> None:
    assert main(["blocks", "--json"]) == 0
    blocks = json.loads(capsys.readouterr().out)
    assert all({"name", "doc", "params"} <= set(b) for b in blocks)
    assert {"mlp", "dot", "dcn", "efc", "fm", "attention", "gating", "sum", "concat", "embedding"} <= {
        b["name"] for b in blocks}


@pytest.mark.parametrize(
    "args, message",
    [
        (["--arch", "resnet"], "--arch 'resnet' is neither a baseline"),
        (["--train-dates", "first:9"], "--train-dates: 'first:9' asks for 9 dates"),
        (["--eval-dates", "2030-01-01"], "--eval-dates: date '2030-01-01' is not in the dataset"),
        (["--lr", "-1"], "lr: must be > 0, got -1.0"),
        (["--epochs", "0"], "epochs: must be >= 1, got 0"),
        (["--device", "cuda"], "CUDA is not available"),
        (["--device", "tpu9"], "device: must be cpu, cuda, cuda:N or auto, got 'tpu9'"),
        (["--embedding-dim", "0"], "--embedding-dim must be >= 1, got 0"),
    ],
)
def test_train_mistakes_exit_2(data, tmp_path, capsys, args: list[str], message: str) -> None:
    argv = _train_args(data, tmp_path / "run")
    for flag, value in zip(args[::2], args[1::2]):
        if flag in argv:
            argv[argv.index(flag) + 1] = value
        else:
            argv += [flag, value]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message in err and "Traceback" not in err
    assert not (tmp_path / "run").exists()


def test_bad_architecture_file_names_node_and_field(data, tmp_path, capsys) -> None:
    arch = {"nodes": [{"id": "x", "block": "dcn", "inputs": ["dense"], "params": {"layers": 42}},
                      {"id": "logit", "block": "fc", "inputs": ["x"], "params": {"width": 1}}]}
    path = tmp_path / "arch.json"
    path.write_text(json.dumps(arch))
    argv = _train_args(data, tmp_path / "run")
    argv[argv.index("--arch") + 1] = str(path)
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert "node 'x', field 'params.layers'" in err and "got 42" in err


def test_existing_outputs_are_kept(data, tmp_path, capsys) -> None:
    assert main(["data", "synth", "--out", str(data), "--days", "1", "--rows-per-day", "100"]) == 2
    assert "already exists; pass --force" in capsys.readouterr().err
    assert len(json.loads((data / "schema.json").read_text())["dates"]) == 3
    assert main(["data", "synth", "--out", str(tmp_path / "x"), "--days", "0"]) == 2
    assert "days=0" in capsys.readouterr().err


def test_missing_dataset_and_usage_errors(tmp_path, capsys) -> None:
    assert main(["data", "inspect", str(tmp_path / "nope")]) == 2
    assert "does not exist" in capsys.readouterr().err
    assert main(["train", "--data", "x"]) == 2  # argparse: required flags missing


def test_console_script_exit_code_without_traceback(tmp_path) -> None:
    script = Path(sys.executable).parent / "rankitect"
    proc = subprocess.run([str(script), "train", "--data", str(tmp_path / "none"), "--arch", "lr",
                           "--train-dates", "first:1", "--eval-dates", "last:1", "--out",
                           str(tmp_path / "r")], capture_output=True, text=True, cwd=ROOT)
    assert proc.returncode == 2
    assert "does not exist" in proc.stderr and "Traceback" not in proc.stderr


def test_every_help_builds_without_importing_torch_optuna_ray_or_grpc() -> None:
    """`rankitect --help` and each subcommand's help stay fast: the parsers read only light
    modules (benchmarks/bench_cli.py times them)."""
    import subprocess
    import sys

    from benchmarks.bench_cli import HEAVY, commands, imported_heavy

    assert len(commands()) > 20  # every subcommand, nested ones included, is walked
    code = ("import sys\nfrom launcher.cli import build_parser\nbuild_parser()\n"
            f"print(','.join(m for m in {HEAVY!r} if m in sys.modules))")
    built = subprocess.run([sys.executable, "-c", code], capture_output=True, text=True, check=True)
    assert built.stdout.strip() == ""
    assert imported_heavy(["data", "synth"]) == [] and imported_heavy(["train"]) == []


def test_every_option_has_a_description_and_shows_its_default() -> None:
    import argparse

    from launcher.cli import build_parser

    missing = []

    def walk(parser: argparse.ArgumentParser, name: str) -> None:
        for action in parser._actions:
            if isinstance(action, argparse._SubParsersAction):
                for sub_name, child in action.choices.items():
                    walk(child, f"{name} {sub_name}")
            elif not isinstance(action, argparse._HelpAction):
                flag = "/".join(action.option_strings) or action.dest
                shown = action.help or ""
                if not shown:
                    missing.append(f"{name} {flag}: no description")
                elif action.default not in (None, False, argparse.SUPPRESS, []) and "default" not in shown:
                    missing.append(f"{name} {flag}: default {action.default!r} not shown")

    walk(build_parser(), "rankitect")
    assert not missing, "\n".join(missing)
