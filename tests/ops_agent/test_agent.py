"""The running agent end to end: a real site, real supervised workers, real gRPC on loopback, real Ed25519.

One site and one agent (two supervised workers) serve most tests of this module; a second agent
with mutual TLS serves the TLS tests. Every wait is bounded.
"""

from __future__ import annotations

import json
import random
import subprocess
import sys
import time
from collections.abc import Callable, Iterator
from concurrent.futures import ThreadPoolExecutor
from dataclasses import dataclass
from pathlib import Path
from typing import Any, cast

import grpc
import pytest
from grpc_health.v1 import health_pb2
from grpc_reflection.v1alpha.proto_reflection_descriptor_database import ProtoReflectionDescriptorDatabase

from ops_agent import audit, keys
from ops_agent.client import AgentClient
from ops_agent.envelope import Target, new_payload, pae, sign
from ops_agent.keys import SigningKey
from ops_agent.servicer import SERVICE
from ops_agent.testing import AgentProcess
from pipeline.testing import wait_for
from protos import ops_agent_pb2 as pb
from protos import ops_agent_pb2_grpc
from protos import telemetry_pb2 as telemetry
from site_scheduler.keys import QUEUES
from site_scheduler.testing import SITE, Site
from tests.pipeline.conftest import require_espeak

HOST = "agent-t1"
TLS_HOST = "agent-tls"
WORKERS = ("aw1", "aw2")
#: The host's own load, memory and disk never make these agents degraded: tests do not depend on the machine.
GENEROUS = ["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "1.0"]
#: Seconds over which the main agent writes one full line per peer and reason (the rest are counted).
REJECTION_INTERVAL_S = 1.0
SERVING = health_pb2.HealthCheckResponse.SERVING


# -- fixtures ----------------------------------------------------------------------------------


@dataclass
class Kit:
    """The keys of these tests: the agent trusts ``key``; ``revoked`` it no longer trusts; ``stranger`` never."""

    folder: Path
    key: SigningKey
    revoked: SigningKey
    stranger: SigningKey

    @property
    def bundle(self) -> Path:
        return keys.KeyFolder(self.folder).bundle

    def payload(self, action: pb.Action = pb.ACTION_PAUSE_QUEUE, target: Target | None = None, *,
                now: float | None = None, ttl_s: int = 60, **fields: Any) -> pb.CommandPayload:
        """A command for this agent; by default one that would pause cpu_queue if it got through."""
        payload = new_payload(audience_host=HOST, site_id=SITE, action=action,
                              target=target if target is not None else pb.QueueRef(name="cpu_queue"),
                              actor="tester", actor_role="operator", ttl_s=ttl_s, now=now)
        for name, value in fields.items():
            setattr(payload, name, value)
        return payload

    def command(self, action: pb.Action = pb.ACTION_PAUSE_QUEUE, target: Target | None = None, *,
                key: SigningKey | None = None, **fields: Any) -> pb.SignedCommand:
        return sign(self.payload(action, target, **fields), key or self.key)


@pytest.fixture(scope="module")
def kit(tmp_path_factory: pytest.TempPathFactory) -> Kit:
    folder = tmp_path_factory.mktemp("keys")
    key, _ = keys.init(folder)
    revoked = SigningKey.generate()
    revoked.save(folder / "revoked.json")
    keys.add(keys.KeyFolder(folder).bundle, folder / "revoked.json")
    keys.revoke(keys.KeyFolder(folder).bundle, revoked.key_id)
    return Kit(folder, key, revoked, SigningKey.generate())


@dataclass
class Ffmpeg:
    """An ffmpeg that fails its next encode while ``marker`` exists (as in tests/site_scheduler)."""

    wrapper: Path
    marker: Path


@pytest.fixture(scope="module")
def ffmpeg(tmp_path_factory: pytest.TempPathFactory) -> Ffmpeg:
    from pipeline.media.ffmpeg import ffmpeg_path

    folder = tmp_path_factory.mktemp("ffmpeg")
    marker, wrapper = folder / "fail-next-encode", folder / "ffmpeg"
    wrapper.write_text(
        "#!/bin/sh\n"
        f'if [ "$1" != "-version" ] && [ -e "{marker}" ]; then\n'
        f'  rm -f "{marker}"; echo injected failure >&2; exit 1\n'
        "fi\n"
        f'exec "{ffmpeg_path()}" "$@"\n')
    wrapper.chmod(0o755)
    return Ffmpeg(wrapper, marker)


def _host_workers(site: Site, host: str = HOST) -> dict[str, dict[str, Any]]:
    return {w["name"]: w for w in site.client.workers() if w["host"] == host}


def _workers_up(site: Site, names: tuple[str, ...] = WORKERS, host: str = HOST) -> dict[str, dict[str, Any]] | None:
    rows = _host_workers(site, host)
    return rows if all(rows.get(n, {}).get("status") in ("idle", "active") for n in names) else None


@pytest.fixture(scope="module")
def agent(site: Site, kit: Kit, ffmpeg: Ffmpeg, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("agent")
    every_queue = ",".join(QUEUES)
    process = AgentProcess(HOST, SITE, site.data_dir, root / "state", kit.bundle, root / "agent.log",
                           workers=";".join(f"{name}={every_queue}" for name in WORKERS),
                           options=[*GENEROUS, "--rejection-interval", str(REJECTION_INTERVAL_S)],
                           env={"CINEFLEET_FFMPEG": str(ffmpeg.wrapper)})
    process.start()
    try:
        wait_for(lambda: _workers_up(site), "the supervised workers at the site")
        # On a loaded machine (xdist beside other suites) a worker can take longer than the agent's
        # startup grace to send its first heartbeat: the agent then says degraded until its hysteresis
        # has seen enough good samples. The tests start from the verdict the host has once it is up.
        with process.client() as client:
            wait_for(lambda: client.get_health().state == telemetry.HOST_STATE_HEALTHY,
                     "the agent to find its host healthy", timeout=60)
        yield process
    finally:
        process.close()


@pytest.fixture
def client(agent: AgentProcess) -> Iterator[AgentClient]:
    with agent.client() as opened:
        yield opened


def _state(site: Site) -> tuple[dict[str, str], dict[str, bool]]:
    """What a refused command must leave as it was: this host's worker statuses and every queue's paused flag."""
    return ({n: w["status"] for n, w in _host_workers(site).items()},
            {q["queue"]: q["paused"] for q in site.client.queues()})


def _paused(site: Site, queue: str) -> bool:
    return next(q["paused"] for q in site.client.queues() if q["queue"] == queue)


def _accounted(agent: AgentProcess, after: int, reason: str | None = None, since: float = 0.0) -> int:
    """How many rejections the audit entries past the first ``after`` account for: 1 a full line, ``count`` a summary.

    With ``since``, a summary counts only if its window began then or later.
    """
    return sum(e.get("count", 1) for e in agent.audit_entries()[after:]
               if e["outcome"] == "OUTCOME_REJECTED" and (reason is None or e["reason"] == reason)
               and e.get("since", since) >= since)


def _cli(*args: str | Path) -> subprocess.CompletedProcess[str]:
    return subprocess.run([sys.executable, "-m", "cinefleet", *map(str, args)], capture_output=True, text=True,
                          timeout=120, check=False)


# -- health ------------------------------------------------------------------------------------


def test_health_names_the_supervised_workers_the_queues_and_the_trusted_keys(agent: AgentProcess, kit: Kit,
                                                                              client: AgentClient) -> None:
    health = client.get_health()
    assert (health.host, health.site_id, health.state) == (HOST, SITE, telemetry.HOST_STATE_HEALTHY), health.reasons
    assert [(w.name, w.supervised, w.host) for w in health.workers] == [(n, True, HOST) for n in WORKERS]
    assert [q.name for q in health.queues] == list(QUEUES)
    assert list(health.trusted_key_ids) == [kit.key.key_id], "the revoked key is not reported as trusted"
    # The standard health service and reflection answer too
    assert client.check() == SERVING and client.check(SERVICE) == SERVING
    services = ProtoReflectionDescriptorDatabase(client.channel).get_services()
    assert {SERVICE, "grpc.health.v1.Health"} <= set(services)
    # And `cinefleet agent health` prints it
    shown = _cli("agent", "health", "--agent", agent.address)
    assert shown.returncode == 0 and shown.stdout.startswith(f"{HOST} ({SITE}) healthy: load "), shown.stderr
    assert f"trusted keys: {kit.key.key_id}" in shown.stdout and "worker aw1" in shown.stdout
    assert json.loads(_cli("agent", "health", "--agent", agent.address, "--json").stdout)["host"] == HOST


def test_watch_health_streams_a_sample_now_then_one_per_interval_until_the_client_goes(client: AgentClient) -> None:
    began = time.monotonic()
    stream = client.watch_health(timeout=30)
    received = []
    for sample in stream:
        received.append((time.monotonic() - began, sample.sampled_at))
        if len(received) == 3:
            stream.cancel()  # type: ignore[attr-defined]
            break
    assert received[0][0] < 2.0, "the first sample comes at once"
    assert received[0][1] < received[1][1] < received[2][1], "then each new sample"
    assert 1.0 < received[2][1] - received[0][1] < 4.0, "about one a second"
    # And the agent still answers afterwards (the stream freed its thread)
    assert client.get_health().host == HOST


# -- the rejection corpus ----------------------------------------------------------------------


def _unsigned(kit: Kit) -> bytes:
    command = kit.command()
    command.signature = b""
    return command.SerializeToString()


def _bad_signature(kit: Kit) -> bytes:
    command = kit.command(key=kit.stranger)
    command.key_id = kit.key.key_id  # claims the trusted key, signed by another
    return command.SerializeToString()


def _tampered_byte(kit: Kit) -> bytes:
    command = kit.command()
    body = bytearray(command.payload)
    at = body.index(b"cpu_queue")
    body[at] ^= 0x01  # "cpu_queue" -> "bpu_queue": one byte, still a well-formed payload
    command.payload = bytes(body)
    return command.SerializeToString()


def _wrong_payload_type(kit: Kit) -> bytes:
    body = kit.payload().SerializeToString()
    kind = "application/json"
    return pb.SignedCommand(payload=body, payload_type=kind, key_id=kit.key.key_id,
                            signature=kit.key.sign(pae(kind, body))).SerializeToString()


CORPUS: dict[str, tuple[Callable[[Kit], bytes], int]] = {
    "unsigned": (_unsigned, pb.REJECT_UNSIGNED),
    "bad signature": (_bad_signature, pb.REJECT_BAD_SIGNATURE),
    "tampered payload byte": (_tampered_byte, pb.REJECT_BAD_SIGNATURE),
    "unknown key id": (lambda k: k.command(key=k.stranger).SerializeToString(), pb.REJECT_UNKNOWN_KEY),
    "revoked key": (lambda k: k.command(key=k.revoked).SerializeToString(), pb.REJECT_REVOKED_KEY),
    "expired": (lambda k: k.command(now=time.time() - 400, ttl_s=120).SerializeToString(), pb.REJECT_EXPIRED),
    "issued too far in the future": (lambda k: k.command(now=time.time() + 600).SerializeToString(),
                                     pb.REJECT_NOT_YET_VALID),
    "window too long": (lambda k: k.command(expires_at=int(time.time()) + 3600).SerializeToString(),
                        pb.REJECT_TTL_TOO_LONG),
    "another host": (lambda k: k.command(audience_host="agent-elsewhere").SerializeToString(), pb.REJECT_WRONG_HOST),
    "another site": (lambda k: k.command(site_id="t2").SerializeToString(), pb.REJECT_WRONG_SITE),
    # cast: 99 is deliberately a value the Action enum does not define.
    "unknown action": (lambda k: k.command(action=cast(pb.Action, 99)).SerializeToString(), pb.REJECT_UNKNOWN_ACTION),
    "unspecified action": (lambda k: k.command(action=pb.ACTION_UNSPECIFIED).SerializeToString(),
                           pb.REJECT_UNKNOWN_ACTION),
    "target of the wrong kind": (lambda k: k.command(pb.ACTION_DRAIN_WORKER, pb.QueueRef(name="cpu_queue"))
                                 .SerializeToString(), pb.REJECT_BAD_TARGET),
    "unknown queue": (lambda k: k.command(target=pb.QueueRef(name="gpu_queue")).SerializeToString(),
                      pb.REJECT_UNKNOWN_TARGET),
    "unknown worker": (lambda k: k.command(pb.ACTION_DRAIN_WORKER, pb.WorkerRef(name="nobody")).SerializeToString(),
                       pb.REJECT_UNKNOWN_TARGET),
    "unknown run": (lambda k: k.command(pb.ACTION_CANCEL_RUN, pb.RunRef(run_id="no-such-run")).SerializeToString(),
                    pb.REJECT_UNKNOWN_TARGET),
    "oversize payload": (lambda k: k.command(actor="x" * 5000).SerializeToString(), pb.REJECT_OVERSIZE),
    "wrong payload type": (_wrong_payload_type, pb.REJECT_PAYLOAD_TYPE),
    "not an envelope": (lambda k: b"\xff\xff\xff\xff", pb.REJECT_MALFORMED),
}


@pytest.mark.parametrize("case", list(CORPUS))
def test_a_bad_command_is_rejected_with_its_reason_audited_and_changes_nothing(
        case: str, agent: AgentProcess, site: Site, kit: Kit, client: AgentClient) -> None:
    build, reason = CORPUS[case]
    before, entries = _state(site), len(agent.audit_entries())
    # When the bad command arrives over gRPC
    result = client.send_bytes(build(kit))
    # Then it is rejected with its own reason
    assert (result.outcome, pb.RejectReason.Name(result.reason)) == (pb.OUTCOME_REJECTED,
                                                                      pb.RejectReason.Name(reason)), result
    assert result.host == HOST and not result.command_id and not result.replayed_result
    # And it is on the audit: a line of its own, or counted on the summary of its peer and reason
    wait_for(lambda: _accounted(agent, entries, pb.RejectReason.Name(reason)) >= 1,
             "the rejection on the audit", timeout=15)
    written = [e for e in agent.audit_entries()[entries:] if e["outcome"] == "OUTCOME_REJECTED"]
    assert all(e["action"] == "" and e["target"] == "" for e in written), "nothing unverified is recorded as fact"
    # And no worker or queue changed
    assert _state(site) == before


def test_mutated_envelopes_over_the_wire_execute_nothing_and_the_agent_keeps_answering(
        agent: AgentProcess, site: Site, kit: Kit, client: AgentClient) -> None:
    # Given a command that ran once (the site refused it: resuming a running queue changes nothing)
    base = kit.command(pb.ACTION_RESUME_QUEUE, pb.QueueRef(name="external_ai_queue"))
    assert client.send(base).outcome == pb.OUTCOME_REFUSED
    raw = base.SerializeToString()
    time.sleep(REJECTION_INTERVAL_S)  # every earlier window of rejections has ended: this test's start afresh
    before, entries, since = _state(site), len(agent.audit_entries()), time.time()
    rng = random.Random(20261121)
    outcomes: dict[str, int] = {}
    # When 300 mutations of its bytes are sent as they are
    for _ in range(300):
        data = bytearray(raw)
        for _ in range(rng.randint(1, 3)):
            kind = rng.choices(("flip", "replace", "insert", "delete", "truncate"), (40, 25, 15, 15, 5))[0]
            at = rng.randrange(len(data) or 1)
            if kind == "flip" and data:
                data[at] ^= 1 << rng.randrange(8)
            elif kind == "replace" and data:
                data[at] = rng.randrange(256)
            elif kind == "insert":
                data.insert(at, rng.randrange(256))
            elif kind == "delete" and data:
                del data[at]
            else:
                data = data[:at]
        result = client.send_bytes(bytes(data))
        # Then each gets an answer: rejected, or (bytes that still verify) the first result replayed
        assert result.outcome == pb.OUTCOME_REJECTED or (result.replayed_result and
                                                         result.outcome == pb.OUTCOME_REFUSED), result
        name = pb.RejectReason.Name(result.reason) if result.reason else "replayed"
        outcomes[name] = outcomes.get(name, 0) + 1
    print(f"mutations: {sorted(outcomes.items(), key=lambda item: -item[1])}")
    # And nothing ran, every one was audited (in full, or counted per reason), and the agent still answers
    assert _state(site) == before
    wait_for(lambda: _accounted(agent, entries, since=since) + outcomes.get("replayed", 0) == 300,
             "all 300 on the audit", timeout=15)
    # And bounded: per reason, one full line and one summary per window the test lasted
    windows = (time.time() - since) / REJECTION_INTERVAL_S + 1
    assert len(agent.audit_entries()) - entries <= 2 * len(outcomes) * windows + outcomes.get("replayed", 0)
    assert client.get_health().host == HOST and client.check(SERVICE) == SERVING


# -- replay and idempotency --------------------------------------------------------------------


def test_the_same_command_twice_executes_once_and_returns_the_first_result(agent: AgentProcess, site: Site,
                                                                            kit: Kit, client: AgentClient) -> None:
    # Given a pause that ran
    command = kit.command(pb.ACTION_PAUSE_QUEUE, pb.QueueRef(name="external_ai_queue"))
    first = client.send(command)
    assert first.outcome == pb.OUTCOME_EXECUTED and not first.replayed_result, first
    assert _paused(site, "external_ai_queue")
    # When it is sent again: the stored result, not a second pause (which the site would refuse)
    again = client.send(command)
    assert again.replayed_result and again.outcome == pb.OUTCOME_EXECUTED
    assert (again.command_id, again.message, again.started_at) == (first.command_id, first.message, first.started_at)
    # And the same holds when copies race each other
    resume = kit.command(pb.ACTION_RESUME_QUEUE, pb.QueueRef(name="external_ai_queue"))
    with ThreadPoolExecutor(4) as pool:
        results = list(pool.map(lambda _: client.send(resume), range(4)))
    assert [r.outcome for r in results] == [pb.OUTCOME_EXECUTED] * 4, results
    assert sorted(r.replayed_result for r in results) == [False, True, True, True]
    assert not _paused(site, "external_ai_queue")
    entries = [e for e in agent.audit_entries() if e["command_id"] in (first.command_id, results[0].command_id)]
    assert [e["command_id"] for e in entries if e["outcome"] == "DISPATCHED"] == [first.command_id,
                                                                                 results[0].command_id]
    ran = [e for e in entries if e["outcome"] != "DISPATCHED"]
    assert [e["message"].startswith("replayed result: ") for e in ran] == [False, True, False, True, True, True]


def test_a_replayed_nonce_is_refused_also_after_the_agent_restarts(agent: AgentProcess, site: Site,
                                                                   kit: Kit) -> None:
    client = agent.client()
    # Given a command that ran (refused by the site: nothing changes)
    first = kit.payload(pb.ACTION_RESUME_QUEUE, pb.QueueRef(name="media_queue"))
    first_result = client.send(sign(first, kit.key))
    assert first_result.outcome == pb.OUTCOME_REFUSED and "already running" in first_result.message
    # When another command reuses its nonce, it is refused
    before = _state(site)
    reuse = kit.payload(nonce=first.nonce)
    assert client.send(sign(reuse, kit.key)).reason == pb.REJECT_REPLAYED_NONCE
    # And a health stream open when the agent stops ends cleanly
    stream = client.watch_health(timeout=60)
    next(stream)
    assert agent.stop() == 0
    assert sum(1 for _ in stream) <= 2, "the stream ends with the agent, without an error"
    client.close()

    # When the agent starts again on the same state folder
    old_pids = {n: w["pid"] for n, w in _host_workers(site).items()}
    agent.start()
    with agent.client() as client:
        # Then the nonce is still remembered
        again = client.send(sign(kit.payload(nonce=first.nonce), kit.key))
        assert (again.outcome, again.reason) == (pb.OUTCOME_REJECTED, pb.REJECT_REPLAYED_NONCE), again
        # And the first command itself still returns its first result
        replayed = client.send(sign(first, kit.key))
        assert replayed.replayed_result and replayed.command_id == first_result.command_id
        assert replayed.message == first_result.message
    assert _state(site)[1] == before[1]
    # And the audit chain continues across the restart; the workers came back under new pids
    assert audit.verify(agent.audit).ok
    rows = wait_for(lambda: _workers_up(site), "the workers after the restart")
    assert all(rows[n]["pid"] != old_pids.get(n) for n in WORKERS)


# -- the six actions ---------------------------------------------------------------------------


def test_pause_and_resume_a_queue_through_cinefleet_ops(agent: AgentProcess, site: Site, kit: Kit,
                                                        tmp_path: Path) -> None:
    key = keys.KeyFolder(kit.folder).signing_key

    def ops(*args: str, host: str = HOST, key_file: Path = key, address: str = "") -> subprocess.CompletedProcess[str]:
        return _cli("ops", "--agent", address or agent.address, "--key", key_file, "--host", host, "--site", SITE,
                    *args)

    done = ops("pause-queue", "media_queue")
    assert done.returncode == 0 and done.stdout.startswith("executed pause-queue media_queue"), done.stderr
    assert _paused(site, "media_queue")
    refused = ops("pause-queue", "media_queue")
    assert refused.returncode == 4 and "already paused" in refused.stderr
    done = ops("resume-queue", "media_queue")
    assert done.returncode == 0, done.stderr
    assert not _paused(site, "media_queue")
    rejected = ops("pause-queue", "media_queue", host="agent-elsewhere")
    assert rejected.returncode == 5 and "REJECT_WRONG_HOST" in rejected.stderr
    assert not _paused(site, "media_queue")
    # Bad arguments: exit 2 with the reason, nothing sent
    entries = len(agent.audit_entries())
    for args, message in ((("reboot-host", "x"), "action 'reboot-host': expected one of drain-worker"),
                          (("retry-stage", "run-only"), "retry-stage takes RUN STAGE; got 1 target value(s)"),
                          (("pause-queue", "a", "b"), "pause-queue takes QUEUE; got 2")):
        bad = ops(*args)
        assert bad.returncode == 2 and message in bad.stderr, bad.stderr
    missing = ops("pause-queue", "media_queue", key_file=tmp_path / "nope.json")
    assert missing.returncode == 2 and "no such signing key file" in missing.stderr
    assert [e for e in agent.audit_entries()[entries:] if "count" not in e] == [], "nothing sent (bar summaries)"
    # No agent there: exit 7, unreachable
    gone = ops("pause-queue", "media_queue", address="127.0.0.1:9")
    assert gone.returncode == 7 and "UNAVAILABLE" in gone.stderr
    # --json: the agent's CommandResult on stdout, whatever the outcome; the exit code as without it
    done = ops("pause-queue", "media_queue", "--json")
    assert done.returncode == 0, done.stderr
    result = json.loads(done.stdout)
    assert result["outcome"] == "OUTCOME_EXECUTED" and result["host"] == HOST and result["command_id"]
    refused = ops("pause-queue", "media_queue", "--json")
    assert refused.returncode == 4 and json.loads(refused.stdout)["outcome"] == "OUTCOME_REFUSED"
    assert ops("resume-queue", "media_queue").returncode == 0


def test_drain_and_undrain_a_worker(site: Site, kit: Kit, client: AgentClient) -> None:
    result = client.execute("drain-worker", "aw2", kit.key, HOST, SITE)
    assert result.outcome == pb.OUTCOME_EXECUTED and "draining" in result.message, result
    wait_for(lambda: _host_workers(site)["aw2"]["status"] == "drained", "aw2 to report drained", timeout=15)
    assert _host_workers(site)["aw1"]["status"] == "idle"
    again = client.execute("drain-worker", "aw2", kit.key, HOST, SITE)
    assert again.outcome == pb.OUTCOME_REFUSED and "already drained" in again.message
    result = client.execute("undrain-worker", "aw2", kit.key, HOST, SITE)
    assert result.outcome == pb.OUTCOME_EXECUTED, result
    wait_for(lambda: _host_workers(site)["aw2"]["status"] == "idle", "aw2 to take work again", timeout=15)


def test_restart_a_worker_gives_a_fresh_process_under_the_same_pid(site: Site, kit: Kit,
                                                                   client: AgentClient) -> None:
    before = wait_for(lambda: (w := _host_workers(site)["aw1"])["started_at"] and w, "aw1's start time")
    result = client.execute(pb.ACTION_RESTART_WORKER, pb.WorkerRef(name="aw1"), kit.key, HOST, SITE)
    assert result.outcome == pb.OUTCOME_EXECUTED and "restarting" in result.message, result
    after = wait_for(lambda: (w := _host_workers(site)["aw1"])["started_at"] > before["started_at"]
                     and w["status"] == "idle" and w, "aw1 to come back as a fresh process", timeout=30)
    assert after["pid"] == before["pid"]
    # The supervisor saw no crash: the same process re-executed itself
    worker = next(w for w in client.get_health().workers if w.name == "aw1")
    assert (worker.pid, worker.restarts) == (before["pid"], 0)


def test_retry_a_failed_stage_and_cancel_the_run(site: Site, kit: Kit, client: AgentClient, ffmpeg: Ffmpeg,
                                                 pilot: Path) -> None:
    require_espeak()
    # Given a run whose first encode failed
    ffmpeg.marker.touch()
    run_id = site.client.submit(pilot)
    run = site.wait(run_id, timeout=120)
    assert run["status"] == "failed", run
    failed = next(s for s in run["stages"] if s["status"] == "failed")
    assert "injected failure" in failed["error"]

    # When a stage that did not fail is retried: the site refuses, nothing changes
    refused = client.execute("retry-stage", (run_id, "script"), kit.key, HOST, SITE)
    assert refused.outcome == pb.OUTCOME_REFUSED and "not failed" in refused.message, refused
    assert site.run(run_id)["status"] == "failed"
    assert site.stage(run_id, failed["stage_id"]) == failed
    assert site.stage(run_id, "script") == next(s for s in run["stages"] if s["stage_id"] == "script")
    # And a stage the run does not have is rejected by the agent
    unknown = client.execute("retry-stage", (run_id, "shot:nope"), kit.key, HOST, SITE)
    assert unknown.reason == pb.REJECT_UNKNOWN_TARGET

    # When the failed stage is retried: re-enqueued with its identity, the run goes on
    retried = client.execute("retry-stage", (run_id, failed["stage_id"]), kit.key, HOST, SITE)
    assert retried.outcome == pb.OUTCOME_EXECUTED and "re-enqueued" in retried.message, retried
    now = site.run(run_id)
    assert now["status"] == "running"
    stage = site.stage(run_id, failed["stage_id"])
    assert stage["status"] != "failed" and stage["identity"] == failed["identity"]

    # When the run is cancelled: it is cancelled, and a second cancel is refused
    cancelled = client.execute("cancel-run", run_id, kit.key, HOST, SITE)
    assert cancelled.outcome == pb.OUTCOME_EXECUTED, cancelled
    run = site.run(run_id)
    assert run["status"] == "cancelled" and run["episode"] is None
    assert not any(s["status"] in ("waiting", "queued") for s in run["stages"])
    assert client.execute("cancel-run", run_id, kit.key, HOST, SITE).outcome == pb.OUTCOME_REFUSED


# -- mutual TLS --------------------------------------------------------------------------------


@pytest.fixture(scope="module")
def tls_agent(site: Site, kit: Kit, tmp_path_factory: pytest.TempPathFactory) -> Iterator[AgentProcess]:
    root = tmp_path_factory.mktemp("tls-agent")
    made = _cli("pki", "init", root / "pki", "--host", TLS_HOST)
    assert made.returncode == 0 and (root / "pki" / f"{TLS_HOST}.pem").exists(), made.stderr
    # Any disk is over this high-water mark: the host turns degraded after a few samples.
    options = ["--load-per-cpu", "1000", "--memory-high", "1.0", "--disk-high-water", "0.0001"]
    process = AgentProcess(TLS_HOST, SITE, site.data_dir, root / "state", kit.bundle, root / "agent.log",
                           workers="tw1=external_ai_queue", tls_dir=root / "pki", options=options)
    process.start()
    try:
        yield process
    finally:
        process.close()


def test_with_tls_a_client_without_a_certificate_is_refused(tls_agent: AgentProcess, kit: Kit) -> None:
    assert tls_agent.tls_dir is not None
    # A client with the operator's certificate is served, commands included
    with tls_agent.client() as client:
        assert client.check() == SERVING and client.get_health().host == TLS_HOST
        result = client.execute("resume-queue", "external_ai_queue", kit.key, TLS_HOST, SITE)
        assert result.outcome == pb.OUTCOME_REFUSED and "already running" in result.message, result
    entries = len(tls_agent.audit_entries())
    # A client that trusts the CA but has no certificate is not
    ca = (tls_agent.tls_dir / "ca.pem").read_bytes()
    for channel in (grpc.secure_channel(tls_agent.address, grpc.ssl_channel_credentials(root_certificates=ca)),
                    grpc.insecure_channel(tls_agent.address)):
        stub = ops_agent_pb2_grpc.OpsAgentStub(channel)
        for call, request in ((stub.GetHealth, pb.HealthRequest()), (stub.Execute, kit.command())):
            with pytest.raises(grpc.RpcError) as refused:
                call(request, timeout=10)
            assert refused.value.code() == grpc.StatusCode.UNAVAILABLE
        channel.close()
    assert len(tls_agent.audit_entries()) == entries, "nothing reached the agent"


def test_with_tls_only_the_control_plane_identity_may_send_commands(tls_agent: AgentProcess, kit: Kit) -> None:
    # An agent's own certificate is from the same CA, but names an agent, not the control plane
    with tls_agent.client(client_name=TLS_HOST) as client:
        assert client.get_health().host == TLS_HOST
        with pytest.raises(grpc.RpcError) as denied:
            client.execute("pause-queue", "external_ai_queue", kit.key, TLS_HOST, SITE)
    assert denied.value.code() == grpc.StatusCode.PERMISSION_DENIED
    last = tls_agent.audit_entries()[-1]
    assert last["outcome"] == "OUTCOME_REJECTED" and f"spiffe://cinefleet.local/agent/{TLS_HOST}" in last["message"]


def test_a_degraded_host_is_streamed_and_pushed_to_the_site(tls_agent: AgentProcess, site: Site) -> None:
    with tls_agent.client() as client:
        stream = client.watch_health(timeout=40)
        degraded = next(s for s in stream if s.state == telemetry.HOST_STATE_DEGRADED)
        stream.cancel()  # type: ignore[attr-defined]
    assert any(reason.startswith("disk ") for reason in degraded.reasons), degraded.reasons
    # The site hears it, so the host's workers take no new jobs
    keys_ = site.client.keys
    wait_for(lambda: site.client.redis.get(keys_.host_state(TLS_HOST)) == b"degraded",
             "the site to mark the host degraded", timeout=30)
    assert site.client.redis.get(keys_.host_state(HOST)) == b"healthy"
    # A site whose Redis forgot the mark (reset, flushed) hears it again within ten intervals.
    site.client.redis.delete(keys_.host_state(TLS_HOST))
    wait_for(lambda: site.client.redis.get(keys_.host_state(TLS_HOST)) == b"degraded",
             "the agent to push the state again", timeout=30)


def test_agent_serve_refuses_bad_options_with_exit_2(site: Site, kit: Kit, tmp_path: Path) -> None:
    base: list[str | Path] = ["agent", "serve", "--host", "agent-bad", "--site", SITE, "--data-dir", site.data_dir,
            "--state-dir", tmp_path / "state", "--trust", kit.bundle]
    for extra, message in ((["--listen", "0.0.0.0:0"], "without --tls-dir the agent listens on a loopback address"),
                           (["--workers", "w1=gpu_queue"], "worker w1: queue 'gpu_queue': expected one of"),
                           (["--disk-high-water", "1.5"], "thresholds.disk_high_water: value 1.5"),
                           (["--tls-dir", tmp_path], f"{tmp_path / 'ca.pem'}: no such file")):
        refused = _cli(*base, *extra)
        assert refused.returncode == 2 and message in refused.stderr, refused.stderr
    assert not (tmp_path / "state" / "agent.json").exists()


# -- keys and the audit log --------------------------------------------------------------------


def test_a_key_rotates_without_downtime_and_a_revoked_key_is_refused_at_once(agent: AgentProcess, site: Site,
                                                                             kit: Kit) -> None:
    old = kit.key
    rotated = _cli("keys", "rotate", kit.folder)
    assert rotated.returncode == 0, rotated.stderr
    new = SigningKey.load(keys.KeyFolder(kit.folder).signing_key)
    assert new.key_id != old.key_id
    with agent.client() as client:
        # Both keys are accepted while the old one's commands may still be in flight
        assert client.execute("pause-queue", "external_ai_queue", new, HOST, SITE).outcome == pb.OUTCOME_EXECUTED
        assert client.execute("resume-queue", "external_ai_queue", old, HOST, SITE).outcome == pb.OUTCOME_EXECUTED
        wait_for(lambda: set(client.get_health().trusted_key_ids) == {old.key_id, new.key_id},
                 "health to report both keys", timeout=10)
        bundle_before_revoke = kit.bundle.read_bytes()
        # When the old key is revoked, the next command it signed is refused
        assert _cli("keys", "revoke", kit.bundle, old.key_id).returncode == 0
        refused = client.execute("pause-queue", "external_ai_queue", old, HOST, SITE)
        assert refused.reason == pb.REJECT_REVOKED_KEY, refused
        # And an older bundle put back is not taken (no rollback)
        kit.bundle.write_bytes(bundle_before_revoke)
        still = client.execute("pause-queue", "external_ai_queue", old, HOST, SITE)
        assert still.reason == pb.REJECT_REVOKED_KEY, still

        def stale_bundle() -> telemetry.HostHealth | None:
            health = client.get_health()
            return health if health.trust_problem else None

        stale = wait_for(stale_bundle, "health to say the bundle is stale", timeout=10)
        assert "refusing the rollback" in stale.trust_problem, stale.trust_problem
        assert f"version {stale.trust_bundle_version} still in use" in stale.trust_problem
        assert not any("trust" in reason for reason in stale.reasons), "a stale bundle is reported, not a breach"
        assert client.execute("pause-queue", "external_ai_queue", new, HOST, SITE).outcome == pb.OUTCOME_EXECUTED
        assert client.execute("resume-queue", "external_ai_queue", new, HOST, SITE).outcome == pb.OUTCOME_EXECUTED
    # Nor after a restart: an agent on the same state folder refuses to start with the old bundle
    restarted = _cli("agent", "serve", "--host", HOST, "--site", SITE, "--data-dir", site.data_dir,
                     "--state-dir", agent.state_dir, "--trust", kit.bundle, "--listen", "127.0.0.1:0",
                     "--audit", agent.state_dir / "second-audit.jsonl")
    assert restarted.returncode == 2 and "refusing the rollback" in restarted.stderr, restarted.stderr


def test_the_audit_log_verifies_after_everything_above(agent: AgentProcess) -> None:
    verified = _cli("audit", "verify", agent.audit)
    assert verified.returncode == 0, verified.stderr
    entries = agent.audit_entries()
    assert verified.stdout.strip() == f"audit: {len(entries)} entries, chain intact"
    assert {"OUTCOME_EXECUTED", "OUTCOME_REFUSED", "OUTCOME_REJECTED"} <= {e["outcome"] for e in entries}
