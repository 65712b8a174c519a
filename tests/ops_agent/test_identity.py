"""Issue 8, trust and clients: the client checks that the agent it reaches is the host it signs for.

A fake agent holding h1's real key and certificate (what a thief of h1's key has) listens on
loopback. Reached as h3 — the command signed for h3 — the client refuses it in the TLS handshake
and the fake receives nothing; reached as h1, the very same fake gets the command (so the refusal
is the host check, not a broken setup).
"""

from __future__ import annotations

import subprocess
import sys
from collections.abc import Iterator
from concurrent import futures
from dataclasses import dataclass, field
from pathlib import Path

import grpc
import pytest

from ops_agent import keys, pki
from ops_agent.client import AgentClient
from ops_agent.errors import AgentInputError
from ops_agent.keys import SigningKey
from ops_agent.servicer import SERVICE
from protos import ops_agent_pb2 as pb

SITE = "s1"


@dataclass
class FakeAgent:
    """Answers every Execute with a forged EXECUTED and keeps what it was sent."""

    address: str
    received: list[bytes] = field(default_factory=list)


@pytest.fixture(scope="module")
def pki_dir(tmp_path_factory: pytest.TempPathFactory) -> Path:
    folder = tmp_path_factory.mktemp("pki") / "pki"
    pki.init(folder, ["h1", "h3"])
    return folder


@pytest.fixture(scope="module")
def key(tmp_path_factory: pytest.TempPathFactory) -> SigningKey:
    return keys.init(tmp_path_factory.mktemp("keys"))[0]


@pytest.fixture
def fake(pki_dir: Path) -> Iterator[FakeAgent]:
    made = FakeAgent("")

    def execute(raw: bytes, context: grpc.ServicerContext) -> bytes:
        made.received.append(raw)
        return pb.CommandResult(host="h3", outcome=pb.OUTCOME_EXECUTED, message="forged").SerializeToString()

    server = grpc.server(futures.ThreadPoolExecutor(max_workers=2))
    server.add_generic_rpc_handlers([grpc.method_handlers_generic_handler(
        SERVICE, {"Execute": grpc.unary_unary_rpc_method_handler(execute)})])
    port = server.add_secure_port("127.0.0.1:0", pki.server_credentials(pki_dir, "h1"))  # h1's stolen identity
    server.start()
    made.address = f"127.0.0.1:{port}"
    try:
        yield made
    finally:
        server.stop(grace=None).wait(10)


def test_a_fake_with_h1s_certificate_reached_as_h3_gets_no_command(pki_dir: Path, key: SigningKey,
                                                                   fake: FakeAgent) -> None:
    with AgentClient(fake.address, pki_dir, host="h3", timeout=10) as client, \
            pytest.raises(grpc.RpcError) as refused:
        client.execute("pause-queue", "cpu_queue", key, "h3", SITE)
    assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
    assert fake.received == [], "the command signed for h3 never left the client"
    # Reached as the host its certificate names, the same server is trusted: the check is the host's name
    with AgentClient(fake.address, pki_dir, host="h1", timeout=10) as client:
        assert client.execute("pause-queue", "cpu_queue", key, "h1", SITE).message == "forged"
    assert len(fake.received) == 1


def test_a_client_for_one_host_sends_no_command_for_another(pki_dir: Path, key: SigningKey, fake: FakeAgent) -> None:
    with AgentClient(fake.address, pki_dir, host="h1", timeout=10) as client, \
            pytest.raises(AgentInputError, match="host 'h3': this client is for the agent of host 'h1'"):
        client.execute("pause-queue", "cpu_queue", key, "h3", SITE)
    assert fake.received == []


def test_with_tls_the_client_must_be_told_the_host(pki_dir: Path, fake: FakeAgent) -> None:
    with pytest.raises(AgentInputError, match="--host: missing"):
        AgentClient(fake.address, pki_dir)


def test_cinefleet_ops_refuses_the_impostor(pki_dir: Path, key: SigningKey, fake: FakeAgent, tmp_path: Path) -> None:
    key.save(tmp_path / "key.json")
    ops = subprocess.run([sys.executable, "-m", "cinefleet", "ops", "pause-queue", "cpu_queue", "--agent",
                          fake.address, "--tls-dir", str(pki_dir), "--key", str(tmp_path / "key.json"), "--host", "h3",
                          "--site", SITE, "--timeout", "10"], capture_output=True, text=True, timeout=120, check=False)
    assert ops.returncode == 7 and "UNAVAILABLE" in ops.stderr, ops.stderr
    assert fake.received == []
