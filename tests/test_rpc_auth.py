"""Bearer tokens and TLS on a real server: who may call, and who the servicers see."""

from __future__ import annotations

import datetime
import ipaddress

import grpc
import pytest
from grpc_health.v1 import health_pb2, health_pb2_grpc
from grpc_reflection.v1alpha import reflection_pb2, reflection_pb2_grpc

from launcher.cli import main
from launcher.rpc.auth import TokenTable, current_owner, read_client_token
from launcher.rpc.client import RankitectClient
from launcher.rpc.server import ServiceBinding
from rankitect.blocks import block_names
from rankitect.errors import UserError
from tests.rpc_helpers import GOOD_TOKEN, OTHER_TOKEN, running_server, write_token_file

WHOAMI = "/rankitect.test.Probe/WhoAmI"


def _probe_binding() -> ServiceBinding:
    """A service plugged in the way SearchService will be: it reports the caller's owner."""
    handler = grpc.unary_unary_rpc_method_handler(lambda request, context: (current_owner() or "-").encode())
    generic = grpc.method_handlers_generic_handler("rankitect.test.Probe", {"WhoAmI": handler})
    return ServiceBinding("rankitect.test.Probe", lambda server: server.add_generic_rpc_handlers((generic,)))


@pytest.fixture(scope="module")
def token_file(tmp_path_factory):
    return write_token_file(tmp_path_factory.mktemp("auth") / "tokens.txt")


@pytest.fixture(scope="module")
def server(token_file):
    with running_server(services=(_probe_binding(),), tokens=TokenTable.load(token_file)) as srv:
        yield srv


def _code(call) -> tuple[grpc.StatusCode, str]:
    with pytest.raises(grpc.RpcError) as info:
        call()
    return info.value.code(), info.value.details()


def test_calls_need_a_known_token(server) -> None:
    for token in (None, "wrong-token-0123456789"):
        with RankitectClient(server.address, token=token, timeout=5) as client:
            code, details = _code(client.list_blocks)
            assert code == grpc.StatusCode.UNAUTHENTICATED
            assert ("missing" if token is None else "unknown token") in details
    with grpc.insecure_channel(server.address) as channel:
        raw = channel.unary_unary("/rankitect.v1.BlockRegistry/GetBlock")
        code, _ = _code(lambda: raw(b"\x00garbage", metadata=(("authorization", f"Basic {GOOD_TOKEN}"),), timeout=5))
        assert code == grpc.StatusCode.UNAUTHENTICATED  # refused before the bytes are read
    with RankitectClient(server.address, token=GOOD_TOKEN, timeout=5) as client:
        assert [b["name"] for b in client.list_blocks()] == block_names()


def test_servicers_see_the_owner_of_the_token(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        whoami = channel.unary_unary(WHOAMI)
        assert whoami(b"", metadata=(("authorization", f"Bearer {GOOD_TOKEN}"),), timeout=5) == b"alice"
        assert whoami(b"", metadata=(("authorization", f"bearer {OTHER_TOKEN}"),), timeout=5) == b"bob"
        assert _code(lambda: whoami(b"", timeout=5))[0] == grpc.StatusCode.UNAUTHENTICATED


def test_owner_is_none_without_auth() -> None:
    with running_server(services=(_probe_binding(),)) as srv, grpc.insecure_channel(srv.address) as channel:
        assert channel.unary_unary(WHOAMI)(b"", timeout=5) == b"-"


def test_health_needs_no_token_but_reflection_does(server) -> None:
    with grpc.insecure_channel(server.address) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=5)
        assert reply.status == health_pb2.HealthCheckResponse.SERVING
        stub = reflection_pb2_grpc.ServerReflectionStub(channel)
        request = reflection_pb2.ServerReflectionRequest(list_services="")
        code, _ = _code(lambda: list(stub.ServerReflectionInfo(iter([request]), timeout=5)))
        assert code == grpc.StatusCode.UNAUTHENTICATED
        replies = list(stub.ServerReflectionInfo(iter([request]), timeout=5,
                                                 metadata=(("authorization", f"Bearer {GOOD_TOKEN}"),)))
        assert "rankitect.v1.BlockRegistry" in {s.name for s in replies[0].list_services_response.service}


def test_blocks_cli_with_a_token_file(server, token_file, tmp_path, capsys, monkeypatch) -> None:
    monkeypatch.delenv("RANKITECT_TOKEN", raising=False)
    assert main(["blocks", "--server", server.address]) == 2
    assert "UNAUTHENTICATED: " in capsys.readouterr().err
    assert main(["blocks", "--server", server.address, "--token-file", str(token_file)]) == 0
    assert "mlp:" in capsys.readouterr().out
    monkeypatch.setenv("RANKITECT_TOKEN", OTHER_TOKEN)
    assert main(["blocks", "--server", server.address]) == 0
    capsys.readouterr()


def test_token_file_rules(tmp_path) -> None:
    assert read_client_token(write_token_file(tmp_path / "t")) == GOOD_TOKEN
    bad = {"short x\n": "at least 16", f"{GOOD_TOKEN}\n": "expected 'TOKEN OWNER'",
           f"{GOOD_TOKEN} bad/owner\n": "owner must be", f"{GOOD_TOKEN} a\n{GOOD_TOKEN} b\n": "line 2",
           "# only a comment\n": "no tokens"}
    for text, message in bad.items():
        with pytest.raises(UserError, match=message):
            TokenTable.from_lines(text.splitlines(), "tokens.txt")


def _self_signed(tmp_path):
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "localhost")])
    now = datetime.datetime.now(datetime.timezone.utc)
    cert = (x509.CertificateBuilder().subject_name(name).issuer_name(name).public_key(key.public_key())
            .serial_number(x509.random_serial_number()).not_valid_before(now - datetime.timedelta(minutes=1))
            .not_valid_after(now + datetime.timedelta(days=1))
            .add_extension(x509.SubjectAlternativeName([x509.DNSName("localhost"),
                                                        x509.IPAddress(ipaddress.ip_address("127.0.0.1"))]),
                           critical=False)
            .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
            .sign(key, hashes.SHA256()))
    cert_path, key_path = tmp_path / "server.crt", tmp_path / "server.key"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))
    return cert_path, key_path


def test_tls_with_a_token(tmp_path, token_file) -> None:
    cert, key = _self_signed(tmp_path)
    with running_server(tls_cert=cert, tls_key=key, tokens=TokenTable.load(token_file)) as srv:
        with RankitectClient(srv.address, token=GOOD_TOKEN, tls_ca=cert, timeout=5) as client:
            assert [b["name"] for b in client.list_blocks()] == block_names()
        with RankitectClient(srv.address, token=GOOD_TOKEN, timeout=3) as plain:
            assert _code(plain.list_blocks)[0] == grpc.StatusCode.UNAVAILABLE
