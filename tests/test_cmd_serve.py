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
