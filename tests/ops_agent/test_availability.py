"""Issue 8, availability: peers holding calls that never send their request do not silence the agent.

A real agent (``cinefleet agent serve``) on loopback; 64 calls held open on raw HTTP/2 streams
(four connections of sixteen: every thread of the old sixteen-thread pool, four times over), then
a valid command, GetHealth and the standard health check must each answer within their deadline.
"""

from __future__ import annotations

import time
from collections.abc import Iterator
from pathlib import Path

import pytest
from grpc_health.v1 import health_pb2

from ops_agent import keys
from ops_agent.keys import SigningKey
from ops_agent.servicer import SERVICE
from ops_agent.testing import AgentProcess
from protos import ops_agent_pb2 as pb
from site_scheduler.testing import SITE, Site
from tests.ops_agent.stall import StalledCalls

HOST = "agent-avail"
GENEROUS = ["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "1.0"]
#: Seconds each call may take while the stalled calls are held; an agent out of threads never answers.
BOUND_S = 10.0


@pytest.fixture(scope="module")
def signing(tmp_path_factory: pytest.TempPathFactory) -> tuple[SigningKey, Path]:
    folder = tmp_path_factory.mktemp("keys")
    key, _ = keys.init(folder)
    return key, keys.KeyFolder(folder).bundle


@pytest.fixture(scope="module")
def agent(site: Site, signing: tuple[SigningKey, Path],
          tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("agent")
    process = AgentProcess(HOST, SITE, site.data_dir, root / "state", signing[1], root / "agent.log",
                           options=GENEROUS)
    process.start()
    try:
        yield process
    finally:
        process.close()


@pytest.mark.parametrize("connections", [4, 8])
def test_commands_and_health_answer_while_peers_hold_stalled_calls(
        connections: int, agent: AgentProcess, signing: tuple[SigningKey, Path]) -> None:
    key = signing[0]
    methods = [f"/{SERVICE}/Execute", f"/{SERVICE}/GetHealth", "/grpc.health.v1.Health/Check"]
    with StalledCalls(agent.address, methods, connections, per_connection=16) as stalled, \
            agent.client(timeout=BOUND_S) as client:
        time.sleep(0.5)  # let the server take every stalled stream in before the real calls
        started = time.monotonic()
        paused = client.execute("pause-queue", "external_ai_queue", key, HOST, SITE)
        resumed = client.execute("resume-queue", "external_ai_queue", key, HOST, SITE)
        health = client.get_health()
        status = client.check(SERVICE)
        elapsed = time.monotonic() - started
        # Every stalled call is still held: the agent answered beside them, not after dropping them
        assert stalled.refused == 0
    assert (paused.outcome, resumed.outcome) == (pb.OUTCOME_EXECUTED, pb.OUTCOME_EXECUTED), (paused, resumed)
    assert health.host == HOST and status == health_pb2.HealthCheckResponse.SERVING
    assert elapsed < BOUND_S, f"answered in {elapsed:.1f} s with {connections * 16} calls held"


def test_a_connection_holds_at_most_sixteen_calls_at_once(agent: AgentProcess) -> None:
    with StalledCalls(agent.address, [f"/{SERVICE}/Execute"], 1, per_connection=24) as stalled:
        deadline = time.monotonic() + BOUND_S
        while stalled.refused < 8 and time.monotonic() < deadline:
            time.sleep(0.05)
        # The streams past the limit are refused by the server (RST_STREAM), not queued for a thread
        assert sorted(stalled.held[0].reset) == [2 * n + 1 for n in range(16, 24)]
