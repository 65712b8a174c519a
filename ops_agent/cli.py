"""The ops agent's commands: ``agent serve|health``, ``ops``, ``keys``, ``pki init`` and ``audit verify``.

Commands raise the agent's errors and print nothing about them: ``cinefleet`` turns each into
its message and exit code in one place (``cinefleet.cli.EXIT_CODES``): invalid input
(``AgentInputError``, a bad action or target) 2, a site's refusal 4, the agent's rejection
(``Rejected``, or mTLS refusing the caller) 5, an agent that cannot be reached 7, anything else 1
(a broken audit chain, a command that failed at the site). ``--json`` prints what a program can
read on stdout. Private keys are never printed: commands name key ids and files only.
"""

from __future__ import annotations

import getpass
import json
from pathlib import Path
from typing import Annotated, Any

import typer

from ops_agent import audit, keys
from ops_agent.errors import AgentInputError, AuditChainBroken, CommandFailed, Rejected
from protos.actions import ACTIONS

keys_app = typer.Typer(help="Command-signing keys and the agents' trust bundles.", no_args_is_help=True)
audit_app = typer.Typer(help="The agent's hash-chained audit log.", no_args_is_help=True)
agent_app = typer.Typer(help="The per-host ops agent.", no_args_is_help=True)
pki_app = typer.Typer(help="A local CA and certificates for the agents' mutual TLS.", no_args_is_help=True)

FolderArgument = Annotated[Path, typer.Argument(help="Key folder (signing key, its public key, a trust bundle).")]
BundleArgument = Annotated[Path, typer.Argument(help="Trust bundle file.")]
JsonOption = Annotated[bool, typer.Option("--json", help="Print one JSON object (key ids and files, never a key).")]


def _trusted(bundle: keys.TrustBundle) -> str:
    return ", ".join(f"{k.key_id} ({k.state})" for k in bundle.keys) or "none"


def _bundle_json(path: Path, bundle: keys.TrustBundle) -> dict[str, Any]:
    return {"file": str(path), "version": bundle.version,
            "keys": [{"key_id": k.key_id, "state": k.state} for k in bundle.keys]}


def _show(as_json: bool, value: dict[str, Any], lines: list[str]) -> None:
    if as_json:
        typer.echo(json.dumps(value, sort_keys=True))
        return
    for line in lines:
        typer.echo(line)


@keys_app.command("init")
def init(folder: FolderArgument, as_json: JsonOption = False) -> None:
    """Create a signing key in FOLDER (mode 0600) and a trust bundle that trusts it."""
    key, bundle = keys.init(folder)
    files = keys.KeyFolder(folder)
    _show(as_json, {"key_id": key.key_id, "signing_key": str(files.signing_key), "public_key": str(files.public_key),
                    "bundle": _bundle_json(files.bundle, bundle)},
          [f"signing key {key.key_id}: {files.signing_key} (mode 0600, keep it on the signer only)",
           f"public key: {files.public_key} (give it to `keys add` on each agent's bundle)",
           f"trust bundle {files.bundle} version {bundle.version}: {_trusted(bundle)}"])


@keys_app.command("add")
def add(bundle_file: BundleArgument,
        key_file: Annotated[Path, typer.Argument(help="Public key file (or signing key file: only its public "
                                                      "half is read).")],
        as_json: JsonOption = False) -> None:
    """Trust the key in KEY_FILE in BUNDLE_FILE."""
    key, bundle = keys.add(bundle_file, key_file)
    _show(as_json, {"added": key.key_id, "bundle": _bundle_json(bundle_file, bundle)},
          [f"trust bundle {bundle_file} version {bundle.version}: added {key.key_id}; trusts {_trusted(bundle)}"])


@keys_app.command("revoke")
def revoke(bundle_file: BundleArgument, key_id: Annotated[str, typer.Argument(help="The key id to revoke.")],
           as_json: JsonOption = False) -> None:
    """Revoke KEY_ID in BUNDLE_FILE: commands it signed are refused from then on."""
    bundle = keys.revoke(bundle_file, key_id)
    _show(as_json, {"revoked": key_id, "bundle": _bundle_json(bundle_file, bundle)},
          [f"trust bundle {bundle_file} version {bundle.version}: revoked {key_id}; trusts {_trusted(bundle)}"])


@keys_app.command("rotate")
def rotate(folder: FolderArgument, as_json: JsonOption = False) -> None:
    """Make a new signing key in FOLDER and trust it; the old key stays trusted until you revoke it."""
    old, key, bundle = keys.rotate(folder)
    files = keys.KeyFolder(folder)
    _show(as_json, {"key_id": key.key_id, "previous_key_id": old, "signing_key": str(files.signing_key),
                    "public_key": str(files.public_key), "bundle": _bundle_json(files.bundle, bundle)},
          [f"signing key is now {key.key_id} ({files.signing_key}); {old} is no longer used to sign",
           f"trust bundle {files.bundle} version {bundle.version}: {_trusted(bundle)}",
           f"agents with their own bundle refuse {key.key_id} until `keys add BUNDLE {files.public_key}`; "
           f"revoke {old} once its last commands have expired ({old} stays trusted until then)"])


@audit_app.command("verify")
def verify(file: Annotated[Path, typer.Argument(help="The audit log (JSON lines).")],
           as_json: Annotated[bool, typer.Option("--json", help="Print the report as one JSON object, "
                                                                "intact or not.")] = False) -> None:
    """Walk FILE's hash chain (and its rotated files FILE.1, FILE.2, ...); exit 1 naming the first bad entry."""
    try:
        report = audit.verify(file)
    except OSError as exc:
        raise AgentInputError(f"{file}: cannot read audit log: {exc.strerror}") from None
    if as_json:
        typer.echo(json.dumps({"file": str(report.path), "files": report.files, "entries": report.entries,
                               "ok": report.ok, "line": report.line, "seq": report.seq, "problem": report.problem},
                              sort_keys=True))
    if not report.ok:
        raise AuditChainBroken(str(report))
    if not as_json:
        typer.echo(str(report))


@pki_app.command("init")
def pki_init(
    folder: Annotated[Path, typer.Argument(help="Folder for the CA and certificates (created 0700).")],
    host: Annotated[list[str], typer.Option("--host", help="A host id to issue an agent certificate for; "
                                                           "repeat for each host.")],
    trust_domain: Annotated[str, typer.Option(help="SPIFFE trust domain of the identities.")] = "cinefleet.local",
) -> None:
    """Make a CA, one certificate per --host and the operator's client certificate in FOLDER."""
    from ops_agent import pki

    written = pki.init(folder, host, trust_domain)
    for path in written:
        typer.echo(str(path))
    typer.echo(f"agents: --tls-dir {folder} (each uses its own <host>.pem); operator: ops --tls-dir {folder}")


@agent_app.command("serve")
def agent_serve(
    host: Annotated[str, typer.Option("--host", help="This host's id (its workers report it; commands name it).")],
    site: Annotated[str, typer.Option("--site", help="Site id.")],
    data_dir: Annotated[Path | None, typer.Option("--data-dir", help="Site data folder (default per user).")] = None,
    listen: Annotated[str, typer.Option(help="HOST:PORT to serve gRPC on (port 0: any free port).")] =
    "127.0.0.1:50151",
    trust: Annotated[Path | None, typer.Option(help="Trust bundle file (default STATE_DIR/trust-bundle.json).")] =
    None,
    tls_dir: Annotated[Path | None, typer.Option(help="`pki init` folder: serve mutual TLS with this host's "
                                                      "certificate. Without it, loopback only.")] = None,
    workers: Annotated[str | None, typer.Option(help='Workers to supervise: "w1=cpu_queue,media_queue;'
                                                     'w2=cpu_queue".')] = None,
    audit_file: Annotated[Path | None, typer.Option("--audit", help="Audit log (default STATE_DIR/audit.jsonl).")] =
    None,
    state_dir: Annotated[Path | None, typer.Option(help="Nonces, audit log, worker logs "
                                                        "(default DATA_DIR/agents/HOST).")] = None,
    load_per_cpu: Annotated[float, typer.Option(help="Degraded at this 1-min load per cpu.")] = 2.0,
    memory_high: Annotated[float, typer.Option(help="Degraded at this fraction of memory used.")] = 0.9,
    disk_high_water: Annotated[float, typer.Option(help="Degraded at this fraction of a volume used.")] = 0.9,
    interval: Annotated[float, typer.Option(help="Seconds between health samples.")] = 1.0,
    reflection: Annotated[bool, typer.Option(help="Serve gRPC reflection.")] = True,
    audit_max_bytes: Annotated[int, typer.Option(help="Rotate the audit log before it grows past this many "
                                                      "bytes.")] = 64 * 1024 * 1024,
    rejection_interval: Annotated[float, typer.Option(help="Seconds over which one peer's rejections for one "
                                                           "reason get one full audit line; the rest are counted "
                                                           "on a summary line.")] = 60.0,
    control: Annotated[str | None, typer.Option(help="The control plane's HOST:PORT: report this host's health "
                                                     "there (the agent works the same without it).")] = None,
    control_token_file: Annotated[Path | None, typer.Option(help="The site's token from `cinefleet control site "
                                                                 "add` (default DATA_DIR/control.token).")] = None,
    report_interval: Annotated[float, typer.Option(help="Seconds between two reports to the control "
                                                        "plane.")] = 5.0,
) -> None:
    """Serve host health and signed, allow-listed actions; supervise this host's workers until SIGTERM."""
    import sqlite3

    from ops_agent.config import AgentConfig
    from ops_agent.errors import AgentError
    from ops_agent.health import Thresholds
    from ops_agent.server import serve
    from ops_agent.supervisor import parse_specs
    from site_scheduler.config import default_data_dir

    specs = tuple(parse_specs(workers)) if workers is not None else ()
    thresholds = Thresholds(load_per_cpu_degraded=load_per_cpu, memory_degraded=memory_high,
                            disk_high_water=disk_high_water)
    config = AgentConfig(host=host, site=site, data_dir=data_dir or default_data_dir(site), state_dir=state_dir,
                         listen=listen, trust=trust, tls_dir=tls_dir, workers=specs, audit=audit_file,
                         thresholds=thresholds, interval=interval, reflection=reflection,
                         audit_max_bytes=audit_max_bytes, rejection_interval=rejection_interval,
                         control=control, control_token_file=control_token_file, report_interval=report_interval)
    try:
        serve(config)
    except (OSError, sqlite3.Error) as exc:  # the state folder, its nonce database or its audit log
        raise AgentError(f"agent state: {exc}") from None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


def ops(
    action: Annotated[str, typer.Argument(help=", ".join(f"{row.cli}{' (destructive)' if row.destructive else ''}"
                                                         for row in ACTIONS) + ".")],
    target: Annotated[list[str], typer.Argument(help="The target's ids: " + "; ".join(
        f"{row.cli} {row.target.shape}" for row in ACTIONS) + ".")],
    agent: Annotated[str, typer.Option("--agent", help="The agent's HOST:PORT.")],
    key: Annotated[Path, typer.Option("--key", help="Signing key file (`keys init`).")],
    host: Annotated[str, typer.Option("--host", help="The host id the command is for (the agent's).")],
    site: Annotated[str, typer.Option("--site", help="The site id the command is for.")],
    tls_dir: Annotated[Path | None, typer.Option(help="`pki init` folder: mutual TLS with the operator's "
                                                      "certificate.")] = None,
    actor: Annotated[str | None, typer.Option(help="Who asks (default: your user name).")] = None,
    role: Annotated[str, typer.Option(help="The asker's role, recorded in the audit log.")] = "operator",
    ttl: Annotated[int, typer.Option(help="Seconds the command stays valid (at most 300).")] = 60,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agent's answer.")] = 30.0,
    as_json: Annotated[bool, typer.Option("--json", help="Print the agent's CommandResult as one JSON object, "
                                                         "whatever the outcome.")] = False,
) -> None:
    """Sign ACTION on TARGET with KEY and have the agent at --agent carry it out.

    Exit 0 executed, 4 refused by the site (nothing changed), 5 rejected by the agent (nothing ran), 2 bad
    arguments (nothing sent), 7 agent unreachable, 1 any other failure.
    """
    from google.protobuf.json_format import MessageToDict

    from ops_agent.client import AgentClient
    from ops_agent.envelope import MAX_TTL_S
    from protos import ops_agent_pb2 as pb
    from protos.actions import lookup
    from site_scheduler.errors import ControlRefused

    row = lookup(action)
    typed = row.make_target(target)
    if not 0 < ttl <= MAX_TTL_S:
        raise AgentInputError(f"--ttl: value {ttl}: expected 1 to {MAX_TTL_S} seconds")
    signing_key = keys.SigningKey.load(key)
    with AgentClient(agent, tls_dir, host=host, timeout=timeout) as client:
        result = client.execute(row.action, typed, signing_key, host, site, actor=actor or _user(), actor_role=role)
    if as_json:
        typer.echo(json.dumps(MessageToDict(result, preserving_proto_field_name=True), sort_keys=True))
    replayed = " (the stored result of an earlier execution)" if result.replayed_result else ""
    what = f"{row.cli} {' '.join(target)} on {result.host or host}"
    if result.outcome == pb.OUTCOME_EXECUTED:
        if not as_json:
            typer.echo(f"executed {what}: {result.message}{replayed} [command {result.command_id}]")
        return
    if result.outcome == pb.OUTCOME_REFUSED:
        raise ControlRefused(f"refused {what}: {result.message}{replayed} [command {result.command_id}]")
    if result.outcome == pb.OUTCOME_REJECTED:
        raise Rejected(result.reason, f"rejected {what}: {result.message}")
    raise CommandFailed(f"failed {what}: {pb.Outcome.Name(result.outcome)}: {result.message}{replayed}")


@agent_app.command("health")
def agent_health(
    agent: Annotated[str, typer.Option("--agent", help="The agent's HOST:PORT.")],
    tls_dir: Annotated[Path | None, typer.Option(help="`pki init` folder: mutual TLS with the operator's "
                                                      "certificate.")] = None,
    host: Annotated[str | None, typer.Option("--host", help="The agent's host id; required with --tls-dir (its "
                                                           "certificate must name this host).")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Keep printing each new sample until interrupted.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per sample.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agent's answer.")] = 10.0,
) -> None:
    """Print the host's health as its agent last sampled it (state, reasons, workers, trusted key ids)."""
    from google.protobuf.json_format import MessageToJson

    from ops_agent.client import AgentClient
    from protos import telemetry_pb2

    def show(sample: telemetry_pb2.HostHealth) -> None:
        if as_json:
            typer.echo(MessageToJson(sample, indent=None, preserving_proto_field_name=True))
            return
        state = telemetry_pb2.HostState.Name(sample.state).removeprefix("HOST_STATE_").lower()
        typer.echo(f"{sample.host} ({sample.site_id}) {state}: load {sample.load_1m:.2f}/{sample.load_5m:.2f} "
                   f"on {sample.cpu_count} cpus, memory {sample.memory_used_bytes / 2**30:.1f}/"
                   f"{sample.memory_total_bytes / 2**30:.1f} GiB")
        for reason in sample.reasons:
            typer.echo(f"  reason: {reason}")
        for worker in sample.workers:
            typer.echo(f"  worker {worker.name:<16} {worker.status:<9} pid {worker.pid:<8} restarts {worker.restarts}"
                       f"{' (supervised)' if worker.supervised else ''}")
        typer.echo(f"  trusted keys: {', '.join(sample.trusted_key_ids) or 'none'}")

    with AgentClient(agent, tls_dir, host=host, timeout=timeout) as client:
        if not watch:
            show(client.get_health())
            return
        for sample in client.watch_health():
            show(sample)
