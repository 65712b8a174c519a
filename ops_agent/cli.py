"""The ops agent's operator commands: ``keys`` (signing keys and trust bundles) and ``audit verify``.

Exit codes: 0 done, 1 the audit chain is broken, 2 invalid input (nothing was changed).
Private keys are never printed: commands name key ids and files only.
"""

from __future__ import annotations

from pathlib import Path
from typing import Annotated

import typer

from ops_agent import audit, keys
from ops_agent.errors import KeyStoreError

EXIT_BROKEN, EXIT_INPUT = 1, 2

keys_app = typer.Typer(help="Command-signing keys and the agents' trust bundles.", no_args_is_help=True)
audit_app = typer.Typer(help="The agent's hash-chained audit log.", no_args_is_help=True)

FolderArgument = Annotated[Path, typer.Argument(help="Key folder (signing key, its public key, a trust bundle).")]
BundleArgument = Annotated[Path, typer.Argument(help="Trust bundle file.")]


def _fail(code: int, message: str) -> typer.Exit:
    typer.echo(f"error: {message}", err=True)
    return typer.Exit(code)


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
