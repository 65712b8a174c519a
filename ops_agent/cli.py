"""The ops agent's commands: ``agent serve|health``, ``ops``, ``keys``, ``pki init`` and ``audit verify``.

Exit codes: 0 done, 1 the audit chain is broken (``audit verify``) or any other failure,
2 invalid input (nothing was changed or sent). ``ops`` adds 4 (the site refused the action;
nothing changed) and 5 (the agent rejected the command; nothing ran).
Private keys are never printed: commands name key ids and files only.
"""

from __future__ import annotations

import getpass
import sqlite3
from pathlib import Path
from typing import TYPE_CHECKING, Annotated

import typer

from ops_agent import audit, keys
from ops_agent.errors import AgentError, KeyStoreError

if TYPE_CHECKING:
    import grpc

EXIT_BROKEN, EXIT_FAILED, EXIT_INPUT, EXIT_REFUSED, EXIT_REJECTED = 1, 1, 2, 4, 5

keys_app = typer.Typer(help="Command-signing keys and the agents' trust bundles.", no_args_is_help=True)
audit_app = typer.Typer(help="The agent's hash-chained audit log.", no_args_is_help=True)
agent_app = typer.Typer(help="The per-host ops agent.", no_args_is_help=True)
pki_app = typer.Typer(help="A local CA and certificates for the agents' mutual TLS.", no_args_is_help=True)

FolderArgument = Annotated[Path, typer.Argument(help="Key folder (signing key, its public key, a trust bundle).")]
BundleArgument = Annotated[Path, typer.Argument(help="Trust bundle file.")]


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


def _unreachable(agent: str, exc: grpc.RpcError) -> typer.Exit:
    """What went wrong talking to the agent, as the exit of the command."""
    import grpc

    code = exc.code() if isinstance(exc, grpc.Call) else None
    detail = exc.details() if isinstance(exc, grpc.Call) else str(exc)
    return _fail(EXIT_FAILED, f"agent {agent}: {code.name if code else 'error'}: {detail}")


def _trusted(bundle: keys.TrustBundle) -> str:
    return ", ".join(f"{k.key_id} ({k.state})" for k in bundle.keys) or "none"


@keys_app.command("init")
def init(folder: FolderArgument) -> None:
    """Create a signing key in FOLDER (mode 0600) and a trust bundle that trusts it."""
    try:
        key, bundle = keys.init(folder)
    except KeyStoreError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    files = keys.KeyFolder(folder)
    typer.echo(f"signing key {key.key_id}: {files.signing_key} (mode 0600, keep it on the signer only)")
    typer.echo(f"public key: {files.public_key} (give it to `keys add` on each agent's bundle)")
    typer.echo(f"trust bundle {files.bundle} version {bundle.version}: {_trusted(bundle)}")


@keys_app.command("add")
def add(bundle_file: BundleArgument,
        key_file: Annotated[Path, typer.Argument(help="Public key file (or signing key file: only its public "
                                                      "half is read).")]) -> None:
    """Trust the key in KEY_FILE in BUNDLE_FILE."""
    try:
        key, bundle = keys.add(bundle_file, key_file)
    except KeyStoreError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    typer.echo(f"trust bundle {bundle_file} version {bundle.version}: added {key.key_id}; trusts {_trusted(bundle)}")


@keys_app.command("revoke")
def revoke(bundle_file: BundleArgument, key_id: Annotated[str, typer.Argument(help="The key id to revoke.")]) -> None:
    """Revoke KEY_ID in BUNDLE_FILE: commands it signed are refused from then on."""
    try:
        bundle = keys.revoke(bundle_file, key_id)
    except KeyStoreError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    typer.echo(f"trust bundle {bundle_file} version {bundle.version}: revoked {key_id}; trusts {_trusted(bundle)}")


@keys_app.command("rotate")
def rotate(folder: FolderArgument) -> None:
    """Make a new signing key in FOLDER and trust it; the old key stays trusted until you revoke it."""
    try:
        old, key, bundle = keys.rotate(folder)
    except KeyStoreError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    files = keys.KeyFolder(folder)
    typer.echo(f"signing key is now {key.key_id} ({files.signing_key}); {old} is no longer used to sign")
    typer.echo(f"trust bundle {files.bundle} version {bundle.version}: {_trusted(bundle)}")
    typer.echo(f"agents with their own bundle refuse {key.key_id} until `keys add BUNDLE {files.public_key}`; "
               f"revoke {old} once its last commands have expired ({old} stays trusted until then)")


@audit_app.command("verify")
def verify(file: Annotated[Path, typer.Argument(help="The audit log (JSON lines).")]) -> None:
    """Walk FILE's hash chain; exit 1 naming the first edited, deleted or reordered entry."""
    try:
        report = audit.verify(file)
    except OSError as exc:
        raise _fail(EXIT_INPUT, f"{file}: cannot read audit log: {exc.strerror}") from None
    if not report.ok:
        raise _fail(EXIT_BROKEN, str(report))
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

    try:
        written = pki.init(folder, host, trust_domain)
    except pki.PkiError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
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
) -> None:
    """Serve host health and signed, allow-listed actions; supervise this host's workers until SIGTERM."""
    from ops_agent.config import AgentConfig, AgentConfigError
    from ops_agent.health import InvalidThresholds, Thresholds
    from ops_agent.pki import PkiError
    from ops_agent.server import serve
    from ops_agent.supervisor import WorkerSpecError, parse_specs
    from site_scheduler.config import default_data_dir

    try:
        specs = tuple(parse_specs(workers)) if workers is not None else ()
        thresholds = Thresholds(load_per_cpu_degraded=load_per_cpu, memory_degraded=memory_high,
                                disk_high_water=disk_high_water)
        config = AgentConfig(host=host, site=site, data_dir=data_dir or default_data_dir(site), state_dir=state_dir,
                             listen=listen, trust=trust, tls_dir=tls_dir, workers=specs, audit=audit_file,
                             thresholds=thresholds, interval=interval, reflection=reflection)
    except (WorkerSpecError, InvalidThresholds) as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    try:
        serve(config)
    except (KeyStoreError, PkiError, AgentConfigError) as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    except AgentError as exc:
        raise _fail(EXIT_FAILED, str(exc)) from None
    except (OSError, sqlite3.Error) as exc:  # the state folder, its nonce database or its audit log
        raise _fail(EXIT_FAILED, f"agent state: {exc}") from None


def _user() -> str:
    try:
        return getpass.getuser()
    except (KeyError, OSError):  # no login name (a container without a passwd entry)
        return "unknown"


def ops(
    action: Annotated[str, typer.Argument(help="drain-worker, undrain-worker, restart-worker, pause-queue, "
                                               "resume-queue, cancel-run or retry-stage.")],
    target: Annotated[list[str], typer.Argument(help="The worker, queue or run; RUN STAGE for retry-stage.")],
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
) -> None:
    """Sign ACTION on TARGET with KEY and have the agent at --agent carry it out.

    Exit 0 executed, 4 refused by the site (nothing changed), 5 rejected by the agent (nothing ran), 2 bad
    arguments, 1 any other failure.
    """
    import grpc

    from ops_agent.actions import UnknownAction, action_number, make_target
    from ops_agent.client import AgentClient
    from ops_agent.pki import PkiError
    from protos import ops_agent_pb2 as pb

    try:
        number = action_number(action)
        typed = make_target(number, target)
    except (UnknownAction, ValueError) as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    if not 0 < ttl <= 300:
        raise _fail(EXIT_INPUT, f"--ttl: value {ttl}: expected 1 to 300 seconds")
    try:
        signing_key = keys.SigningKey.load(key)
    except KeyStoreError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    try:
        with AgentClient(agent, tls_dir, timeout=timeout) as client:
            result = client.execute(number, typed, signing_key, host, site, actor=actor or _user(),
                                    actor_role=role)
    except PkiError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    except grpc.RpcError as exc:
        raise _unreachable(agent, exc) from None
    replayed = " (the stored result of an earlier execution)" if result.replayed_result else ""
    what = f"{action} {' '.join(target)} on {result.host or host}"
    if result.outcome == pb.OUTCOME_EXECUTED:
        typer.echo(f"executed {what}: {result.message}{replayed} [command {result.command_id}]")
        return
    if result.outcome == pb.OUTCOME_REFUSED:
        raise _fail(EXIT_REFUSED, f"refused {what}: {result.message}{replayed} [command {result.command_id}]")
    if result.outcome == pb.OUTCOME_REJECTED:
        raise _fail(EXIT_REJECTED, f"rejected {what}: {pb.RejectReason.Name(result.reason)}: {result.message}")
    raise _fail(EXIT_FAILED, f"failed {what}: {pb.Outcome.Name(result.outcome)}: {result.message}{replayed}")


@agent_app.command("health")
def agent_health(
    agent: Annotated[str, typer.Option("--agent", help="The agent's HOST:PORT.")],
    tls_dir: Annotated[Path | None, typer.Option(help="`pki init` folder: mutual TLS with the operator's "
                                                      "certificate.")] = None,
    watch: Annotated[bool, typer.Option("--watch", help="Keep printing each new sample until interrupted.")] = False,
    as_json: Annotated[bool, typer.Option("--json", help="One JSON object per sample.")] = False,
    timeout: Annotated[float, typer.Option(help="Seconds to wait for the agent's answer.")] = 10.0,
) -> None:
    """Print the host's health as its agent last sampled it (state, reasons, workers, trusted key ids)."""
    import grpc
    from google.protobuf.json_format import MessageToJson

    from ops_agent.client import AgentClient
    from ops_agent.pki import PkiError
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

    try:
        with AgentClient(agent, tls_dir, timeout=timeout) as client:
            if not watch:
                show(client.get_health())
                return
            for sample in client.watch_health():
                show(sample)
    except PkiError as exc:
        raise _fail(EXIT_INPUT, str(exc)) from None
    except grpc.RpcError as exc:
        raise _unreachable(agent, exc) from None
