"""`rankitect serve`: flags checked before anything binds (exit 2 naming the flag), and a real
start / health / SIGTERM stop of the command as a subprocess."""

from __future__ import annotations

import os
import signal
import socket
import subprocess
import sys
from pathlib import Path

import pytest

from launcher.cli import main
from launcher.rpc.client import RankitectClient
from tests.conftest import ROOT
from tests.rpc_helpers import GOOD_TOKEN, write_token_file


@pytest.fixture
def files(tmp_path):
    bad_tokens = tmp_path / "bad_tokens"
    bad_tokens.write_text("short alice\n")
    not_pem = tmp_path / "not.pem"
    not_pem.write_text("hello\n")
    return {"tokens": str(write_token_file(tmp_path / "tokens")), "bad_tokens": str(bad_tokens),
            "not_pem": str(not_pem), "dir": str(tmp_path), "missing": str(tmp_path / "missing")}


BAD = [
    (["--port", "-1"], "--port -1"),
    (["--port", "70000"], "--port 70000"),
    (["--port", "x"], "--port"),
    (["--host", ""], "--host"),
    (["--max-jobs", "0"], "--max-jobs 0"),
    (["--tls-cert", "{not_pem}"], "--tls-cert: needs --tls-key"),
    (["--tls-key", "{not_pem}"], "--tls-key: needs --tls-cert"),
    (["--tls-cert", "{missing}", "--tls-key", "{not_pem}"], "--tls-cert {missing}: no such file"),
    (["--tls-cert", "{not_pem}", "--tls-key", "{not_pem}"], "not a PEM certificate"),
    (["--token-file", "{missing}"], "--token-file {missing}: no such file"),
    (["--token-file", "{bad_tokens}"], "line 1: a token must be at least 16"),
    (["--allow-root", "{missing}"], "--allow-root {missing}: not an existing folder"),
    (["--runs-dir", "{tokens}"], "--runs-dir {tokens}: exists and is not a folder"),
    (["--db", "{dir}"], "--db {dir}: exists and is not a file"),
    (["--db", "{missing}/x/jobs.db"], "does not exist"),
    (["--address", ""], "--address"),
    (["--max-queued", "-1"], "--max-queued -1: must be >= 0"),
    (["--max-queued-per-owner", "-1"], "--max-queued-per-owner -1: must be >= 0"),
    (["--max-streams", "0"], "--max-streams 0: must be >= 1"),
    (["--max-unauthenticated-streams", "-3"], "--max-unauthenticated-streams -3: must be >= 1"),
]


@pytest.mark.parametrize("flags,message", BAD, ids=[" ".join(f) for f, _ in BAD])
def test_bad_flags_exit_2_naming_the_flag(flags, message, files, capsys) -> None:
    argv = ["serve", "--port", "0", *[f.format(**files) for f in flags]]
    assert main(argv) == 2
    err = capsys.readouterr().err
    assert message.format(**files) in err and "Traceback" not in err


def test_port_in_use_exits_2(capsys) -> None:
    with socket.socket() as taken:
        taken.bind(("127.0.0.1", 0))
        taken.listen()
        assert main(["serve", "--port", str(taken.getsockname()[1])]) == 2
    assert "--host/--port: cannot listen on 127.0.0.1:" in capsys.readouterr().err


def test_serve_starts_answers_and_stops_on_sigterm(files, tmp_path) -> None:
    command = [str(Path(sys.executable).parent / "rankitect"), "serve", "--port", "0", "--token-file",
               files["tokens"], "--allow-root", str(tmp_path), "--runs-dir", str(tmp_path / "runs")]
    proc = subprocess.Popen(command, cwd=ROOT, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True,
                            env={**os.environ, "PYTHONUNBUFFERED": "1"})
    try:
        line = proc.stdout.readline()
        assert line.startswith("rankitect serve: listening on 127.0.0.1:"), line + proc.stderr.read()
        address = line.split()[4]
        assert "auth 2 tokens" in line and "rankitect.v1.BlockRegistry" in line
        with RankitectClient(address, token=GOOD_TOKEN, timeout=10) as client:
            assert client.health() == "SERVING"
            assert client.get_block("fc")["name"] == "fc"
        proc.send_signal(signal.SIGTERM)
        out, err = proc.communicate(timeout=20)
    finally:
        if proc.poll() is None:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, err
    assert "stopping" in out


def test_non_loopback_without_tls_or_token_warns(files, capsys, monkeypatch) -> None:
    from launcher.cli import build_parser
    from launcher.cmd_serve import run_serve

    class Built(Exception):
        pass

    def build_server(options):
        raise Built(options)

    monkeypatch.setattr("launcher.rpc.server.build_server", build_server)
    for host, warned in (("0.0.0.0", True), ("127.0.0.1", False), ("::1", False)):
        with pytest.raises(Built) as info:
            run_serve(build_parser().parse_args(["serve", "--host", host, "--token-file", files["tokens"]]))
        assert info.value.args[0].host == host and info.value.args[0].tokens is not None
        err = capsys.readouterr().err
        assert ("without --tls-cert/--tls-key" in err and "read the tokens on the wire" in err) == warned, err


def _runs_with_jobs(tmp_path: Path, jobs: int = 2) -> tuple[Path, Path]:
    """A runs folder as a server leaves it: its store and one folder per job; (db, runs)."""
    from launcher.jobs.store import JobStore

    runs = tmp_path / "runs"
    store = JobStore(runs / "jobs.sqlite3")
    for _ in range(jobs):
        job, _ = store.create("alice", None, "seed: 1\n", "d", "random on nasrec", "random", 3)
        for i in range(40):
            store.append_event(job.job_id, "log", {"text": f"line {i} " + "x" * 200, "source": "driver"})
        (runs / job.job_id).mkdir()
        (runs / job.job_id / "config.yaml").write_text(job.config_yaml)
    store.close()
    return runs / "jobs.sqlite3", runs


def _truncate(db: Path, size: int) -> None:
    with open(db, "r+b") as handle:
        handle.truncate(size)


DAMAGES = {
    "emptied": lambda db: _truncate(db, 0),  # truncate -s 0 jobs.sqlite3
    "half-cut": lambda db: _truncate(db, db.stat().st_size // 2),
    "header-overwritten": lambda db: db.write_bytes(b"\0" * 100 + db.read_bytes()[100:]),
}


@pytest.mark.parametrize("damage", sorted(DAMAGES))
def test_serve_refuses_a_store_that_is_damaged_or_does_not_match_its_runs_folder(damage, tmp_path) -> None:
    """The command itself: one line naming the store and the runs folder, exit 2, no
    traceback, the job folders untouched (a server that started instead is stopped by the
    timeout: the test fails)."""
    db, runs = _runs_with_jobs(tmp_path)
    DAMAGES[damage](db)
    folders = sorted(p.name for p in runs.iterdir() if p.is_dir())
    try:
        done = subprocess.run([str(Path(sys.executable).parent / "rankitect"), "serve", "--port", "0", "--runs-dir",
                               str(runs)], cwd=ROOT, capture_output=True, text=True, timeout=120)
    except subprocess.TimeoutExpired as exc:
        raise AssertionError(f"the server started on a {damage} store: {exc.stdout}") from None
    err = done.stderr
    assert done.returncode == 2, (done.returncode, done.stdout, err)
    assert "Traceback" not in err and len(err.strip().splitlines()) == 1, err
    assert str(db) in err and str(runs) in err, err
    assert ("does not match its runs folder" if damage == "emptied" else "damaged") in err, err
    assert sorted(p.name for p in runs.iterdir() if p.is_dir()) == folders  # nothing of the jobs touched


def test_max_queued_per_owner_defaults_to_a_share_with_tokens(files) -> None:
    from launcher.cli import build_parser
    from launcher.cmd_serve import options_from_args

    def per_owner(*flags: str) -> int | None:
        return options_from_args(build_parser().parse_args(["serve", "--port", "0", *flags])).max_queued_per_owner

    assert per_owner() == 16  # one owner (anonymous): the whole queue
    assert per_owner("--token-file", files["tokens"]) == 8
    assert per_owner("--token-file", files["tokens"], "--max-queued", "5") == 3
    assert per_owner("--token-file", files["tokens"], "--max-queued-per-owner", "2") == 2
    assert per_owner("--max-queued", "0") == 0


def test_stream_flags_reach_the_server_and_default_to_its_limits(files) -> None:
    from launcher.cli import build_parser
    from launcher.cmd_serve import options_from_args
    from launcher.rpc.streams import StreamLimits

    def limits(*flags: str) -> StreamLimits:
        return options_from_args(build_parser().parse_args(["serve", "--port", "0", *flags])).stream_limits

    assert limits() == StreamLimits()  # the CLI's defaults are the server's
    assert limits("--max-streams", "5", "--max-streams-per-connection", "2", "--max-streams-per-owner", "3",
                  "--max-unauthenticated-streams", "1") == StreamLimits(5, 2, 3, 1)
