"""How an agent is told what to run: ``cinefleet agent serve``'s options as one value, checked."""

from __future__ import annotations

import ipaddress
from dataclasses import dataclass, field
from pathlib import Path

from ops_agent.audit import DEFAULT_MAX_BYTES
from ops_agent.errors import AgentInputError
from ops_agent.health import Thresholds
from ops_agent.rejections import DEFAULT_INTERVAL_S as DEFAULT_REJECTION_INTERVAL_S
from ops_agent.supervisor import WorkerSpec

#: Where ``cinefleet agent serve`` listens unless told otherwise.
DEFAULT_LISTEN = "127.0.0.1:50151"
#: Seconds between health samples (and supervisor polls, trust reload checks, state pushes).
DEFAULT_INTERVAL_S = 1.0
#: The file, in the state folder, that says where a running agent listens (removed on a clean stop).
AGENT_FILE = "agent.json"
NONCES_FILE = "nonces.sqlite"
AUDIT_FILE = "audit.jsonl"
TRUST_FILE = "trust-bundle.json"
TRUST_FLOOR_FILE = "trust-version"


def default_state_dir(data_dir: Path, host: str) -> Path:
    """Where an agent keeps its nonces, audit log and trust bundle unless told otherwise."""
    return Path(data_dir) / "agents" / host


@dataclass(frozen=True)
class AgentConfig:
    """Everything ``cinefleet agent serve`` is told; see :func:`serve`.

    Parameters:
        host, site: this agent's host id and its site.
        data_dir: the site's data folder (its ``site.json``).
        state_dir: nonces, audit log, default trust bundle, ``agent.json``; default ``DATA_DIR/agents/HOST``.
        listen: ``HOST:PORT`` to listen on (port 0: any free port, written to ``agent.json``).
        trust: the trust bundle file; default ``STATE_DIR/trust-bundle.json``.
        tls_dir: a ``cinefleet pki init`` folder holding ``ca.pem`` and this host's key and certificate;
            None serves without TLS, which is allowed on a loopback address only.
        workers: the workers to supervise.
        audit: the audit log; default ``STATE_DIR/audit.jsonl``.
        thresholds: when the host counts as degraded.
        interval: seconds between health samples.
        reflection: serve gRPC reflection.
        audit_max_bytes: rotate the audit log before it grows past this.
        rejection_interval: seconds over which one peer's rejections for one reason get one full audit line.
        control: the control plane's ``HOST:PORT`` to report health to; None reports nowhere.
        control_token_file: the site's token for it; default ``DATA_DIR/control.token``.
        report_interval: seconds between two reports to the control plane.
    """

    host: str
    site: str
    data_dir: Path
    state_dir: Path | None = None
    listen: str = DEFAULT_LISTEN
    trust: Path | None = None
    tls_dir: Path | None = None
    workers: tuple[WorkerSpec, ...] = ()
    audit: Path | None = None
    thresholds: Thresholds = field(default_factory=Thresholds)
    interval: float = DEFAULT_INTERVAL_S
    reflection: bool = True
    audit_max_bytes: int = DEFAULT_MAX_BYTES
    rejection_interval: float = DEFAULT_REJECTION_INTERVAL_S
    control: str | None = None
    control_token_file: Path | None = None
    report_interval: float = 5.0

    @property
    def state(self) -> Path:
        return Path(self.state_dir) if self.state_dir is not None else default_state_dir(self.data_dir, self.host)

    @property
    def trust_file(self) -> Path:
        return Path(self.trust) if self.trust is not None else self.state / TRUST_FILE

    @property
    def audit_file(self) -> Path:
        return Path(self.audit) if self.audit is not None else self.state / AUDIT_FILE


class AgentConfigError(AgentInputError):
    """Raised when the agent is told something it cannot run with; the message names the option and value."""


def check_listen(listen: str, tls: bool) -> None:
    """Refuse an address gRPC cannot bind, and one off loopback when there is no TLS."""
    host, sep, port = listen.rpartition(":")
    if not sep or not port.isdigit() or not host:
        raise AgentConfigError(f"--listen: value {listen!r}: expected HOST:PORT, e.g. {DEFAULT_LISTEN}")
    if tls:
        return
    name = host[1:-1] if host.startswith("[") and host.endswith("]") else host
    try:
        loopback = ipaddress.ip_address(name).is_loopback
    except ValueError:
        loopback = name == "localhost"
    if not loopback:
        raise AgentConfigError(f"--listen: value {listen!r}: without --tls-dir the agent listens on a loopback "
                               "address only (127.0.0.1, ::1 or localhost); give --tls-dir to serve other hosts")
