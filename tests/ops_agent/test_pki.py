"""The local PKI: real certificates, a real gRPC server with mutual TLS on loopback."""

from __future__ import annotations

import stat
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import grpc
import pytest
from cryptography import x509
from grpc_health.v1 import health, health_pb2, health_pb2_grpc

from ops_agent import pki

RPC_TIMEOUT_S = 5
WHOAMI = "/cinefleet.test.Identity/WhoAmI"


@dataclass
class Server:
    port: int
    seen: list[list[str]]


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki") / "pki"
    pki.init(folder, ["host-a", "host-b"])
    return folder


@pytest.fixture(scope="module")
def server(pki_dir: Path) -> Iterator[Server]:
    """host-a's agent: gRPC health plus a method that echoes the client's SPIFFE IDs."""
    seen: list[list[str]] = []

    def whoami(request: bytes, context: Any) -> bytes:
        ids = pki.peer_spiffe_ids(context)
        seen.append(ids)
        return ",".join(ids).encode()

    grpc_server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    health_pb2_grpc.add_HealthServicer_to_server(health.HealthServicer(), grpc_server)
    grpc_server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        "cinefleet.test.Identity", {"WhoAmI": grpc.unary_unary_rpc_method_handler(whoami)})])
    port = grpc_server.add_secure_port("127.0.0.1:0", pki.server_credentials(pki_dir, "host-a"))
    grpc_server.start()
    try:
        yield Server(port, seen)
    finally:
        grpc_server.stop(grace=None).wait(RPC_TIMEOUT_S)


def _check(port: int, credentials: grpc.ChannelCredentials, target: str = "localhost", host: str = "host-a") -> int:
    """The health status of the agent at ``target:port``, its certificate checked as ``host``'s."""
    name = pki.agent_dns_name(pki.DEFAULT_TRUST_DOMAIN, host)
    with grpc.secure_channel(f"{target}:{port}", credentials, [("grpc.ssl_target_name_override", name)]) as channel:
        reply = health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S)
        return int(reply.status)


def test_init_writes_the_files_with_private_keys_0600(pki_dir: Path) -> None:
    names = sorted(p.name for p in pki_dir.iterdir())
    assert names == sorted(["ca.pem", "ca.key", "host-a.pem", "host-a.key", "host-b.pem", "host-b.key",
                            "operator.pem", "operator.key"]), "no temporary file left behind"
    for path in pki_dir.glob("*.key"):
        assert stat.S_IMODE(path.stat().st_mode) == 0o600, path
    assert stat.S_IMODE(pki_dir.stat().st_mode) & 0o077 == 0


def test_an_agent_certificate_names_its_own_host_only(pki_dir: Path) -> None:
    agent = x509.load_pem_x509_certificate((pki_dir / "host-a.pem").read_bytes())
    sans = agent.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cinefleet.local/agent/host-a"]
    assert sans.get_values_for_type(x509.DNSName) == ["host-a.agent.cinefleet.local"]
    assert sans.get_values_for_type(x509.IPAddress) == [], "no address names: any agent would pass for any other"
    operator = x509.load_pem_x509_certificate((pki_dir / "operator.pem").read_bytes())
    sans = operator.extensions.get_extension_for_class(x509.SubjectAlternativeName).value
    assert sans.get_values_for_type(x509.UniformResourceIdentifier) == ["spiffe://cinefleet.local/control-plane"]
    ca = x509.load_pem_x509_certificate((pki_dir / "ca.pem").read_bytes())
    operator.verify_directly_issued_by(ca)
    agent.verify_directly_issued_by(ca)


def test_the_operator_gets_serving_and_the_agent_sees_its_identity(pki_dir: Path, server: Server) -> None:
    # Given host-a's agent with mutual TLS, When the operator checks its health (by name and by IP)
    credentials = pki.channel_credentials(pki_dir)
    assert _check(server.port, credentials) == health_pb2.HealthCheckResponse.SERVING
    assert _check(server.port, credentials, target="127.0.0.1") == health_pb2.HealthCheckResponse.SERVING
    # Then the server knows who called from the verified certificate alone
    with grpc.secure_channel(f"localhost:{server.port}", credentials, [
            ("grpc.ssl_target_name_override", pki.agent_dns_name(pki.DEFAULT_TRUST_DOMAIN, "host-a"))]) as channel:
        reply = channel.unary_unary(WHOAMI)(b"", timeout=RPC_TIMEOUT_S)
    assert reply == b"spiffe://cinefleet.local/control-plane"


def test_an_agent_is_not_accepted_as_another_host_or_by_its_address_alone(pki_dir: Path, server: Server) -> None:
    credentials = pki.channel_credentials(pki_dir)
    for host in ("host-b", "localhost", "127.0.0.1"):
        with pytest.raises(grpc.RpcError) as refused:
            _check(server.port, credentials, host=host)
        assert refused.value.code() == grpc.StatusCode.UNAVAILABLE, host
    with grpc.secure_channel(f"localhost:{server.port}", credentials) as channel, pytest.raises(grpc.RpcError):
        health_pb2_grpc.HealthStub(channel).Check(health_pb2.HealthCheckRequest(), timeout=RPC_TIMEOUT_S)


def test_a_client_without_a_certificate_is_refused(pki_dir: Path, server: Server) -> None:
    only_ca = grpc.ssl_channel_credentials(root_certificates=(pki_dir / "ca.pem").read_bytes())
    with pytest.raises(grpc.RpcError) as refused:
        _check(server.port, only_ca)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_a_certificate_from_another_ca_is_refused_both_ways(pki_dir: Path, server: Server, tmp_path: Path) -> None:
    pki.init(tmp_path / "other", ["host-a"])
    with pytest.raises(grpc.RpcError) as refused:
        _check(server.port, pki.channel_credentials(tmp_path / "other"))
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    # A client trusting only the other CA does not accept this agent either.
    mixed = grpc.ssl_channel_credentials(root_certificates=(tmp_path / "other" / "ca.pem").read_bytes(),
                                         private_key=(pki_dir / "operator.key").read_bytes(),
                                         certificate_chain=(pki_dir / "operator.pem").read_bytes())
    with pytest.raises(grpc.RpcError) as refused:
        _check(server.port, mixed)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE


def test_init_refuses_to_overwrite_a_ca(pki_dir: Path) -> None:
    before = (pki_dir / "ca.pem").read_bytes()
    with pytest.raises(pki.PkiError, match=r"ca\.pem: a CA already exists; refusing to overwrite"):
        pki.init(pki_dir, ["host-c"])
    assert (pki_dir / "ca.pem").read_bytes() == before
    assert not (pki_dir / "host-c.pem").exists()


@pytest.mark.parametrize(("hosts", "domain", "expected"), [
    (["../evil"], "cinefleet.local", "host id '../evil'"),
    (["operator"], "cinefleet.local", "host id 'operator'"),
    (["a", "a"], "cinefleet.local", "expected each host once"),
    (["a"], "Bad Domain", "trust domain 'Bad Domain'"),
])
def test_init_names_the_bad_value(tmp_path: Path, hosts: list[str], domain: str, expected: str) -> None:
    with pytest.raises(pki.PkiError, match=expected.replace(".", r"\.")):
        pki.init(tmp_path / "pki", hosts, trust_domain=domain)
    assert not (tmp_path / "pki").exists()


def test_missing_files_are_named(tmp_path: Path) -> None:
    with pytest.raises(pki.PkiError, match=r"host-z\.key: no such file"):
        pki.server_credentials(tmp_path, "host-z")
