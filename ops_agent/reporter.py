"""Reports this host's health to the control plane (``agent serve --control ADDR``).

A daemon thread: every report interval (default 5 s) it sends the latest sample the health
loop handed it, with the address the agent serves on, so the centre can send commands later.
A centre that does not answer costs a warning now and then and nothing else: the agent serves,
samples and supervises exactly as without it, and the next report goes out on time.
"""

from __future__ import annotations

import logging
import threading
import time
from pathlib import Path

import grpc

from ops_agent.config import AgentConfigError
from protos import replication_pb2 as pb
from protos import replication_pb2_grpc, telemetry_pb2

log = logging.getLogger(__name__)

#: The site's token for the control plane, in the site's data folder (``site serve`` reads the same file).
CONTROL_TOKEN_FILE = "control.token"
#: A report that takes longer than this is dropped (the next one carries a fresher sample anyway).
REPORT_TIMEOUT_S = 3.0


def read_token(path: Path) -> str:
    """The site's token (the one its shipper uses), from ``path``."""
    try:
        token = Path(path).read_text().strip()
    except OSError as exc:
        raise AgentConfigError(f"--control-token-file: {path}: cannot read ({exc.strerror}); expected the site's "
                               "token from `cinefleet control site add SITE`") from None
    if not token:
        raise AgentConfigError(f"--control-token-file: {path}: empty; expected the site's token")
    return token


class Reporter(threading.Thread):
    """Sends :meth:`want`'s latest sample to the centre at ``address`` every ``interval`` seconds."""

    def __init__(self, address: str, token: str, interval: float, tls: bool) -> None:
        super().__init__(name="control-reporter", daemon=True)
        if not 0.05 <= interval <= 3600:
            raise AgentConfigError(f"--report-interval: value {interval!r}: expected 0.05 to 3600 seconds")
        self.address, self.interval, self.tls = address, interval, tls
        self._metadata = (("authorization", f"Bearer {token}"),)
        self._latest: telemetry_pb2.HostHealth | None = None
        self.agent_address = ""
        self._stop_event = threading.Event()

    def want(self, sample: telemetry_pb2.HostHealth) -> None:
        self._latest = sample

    def run(self) -> None:
        channel = grpc.insecure_channel(self.address)
        stub = replication_pb2_grpc.ReplicationStub(channel)
        failures = 0
        due = time.monotonic()
        try:
            while not self._stop_event.wait(max(0.0, due - time.monotonic())):
                due = max(due + self.interval, time.monotonic())
                sample = self._latest
                if sample is None:
                    continue
                try:
                    stub.ReportHealth(pb.HostReport(health=sample, agent_address=self.agent_address,
                                                    agent_tls=self.tls, interval_seconds=self.interval),
                                      timeout=REPORT_TIMEOUT_S, metadata=self._metadata)
                except grpc.RpcError as exc:
                    failures += 1
                    if failures == 1 or failures % 60 == 0:
                        code = exc.code() if isinstance(exc, grpc.Call) else None
                        log.warning("could not report health to the control plane at %s (%d failed): %s",
                                    self.address, failures, code.name if code else exc)
                    continue
                if failures:
                    log.info("reporting health to the control plane at %s again", self.address)
                failures = 0
        finally:
            channel.close()

    def stop(self) -> None:
        self._stop_event.set()
