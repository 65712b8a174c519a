"""A small local PKI for the agents' mutual TLS: one CA, a server certificate per host, an operator client.

``init(DIR, hosts)`` writes, in ``DIR`` (created 0700)::

    ca.pem  ca.key                 the CA (ECDSA P-256, self-signed, 10 years)
    <host>.pem  <host>.key         one per host: the agent's identity, spiffe://<domain>/agent/<host>
    operator.pem  operator.key     the control plane / operator: spiffe://<domain>/control-plane

Keys are PKCS#8 PEM, mode 0600; certificates 0644. Every file is written to a temporary file,
fsynced and renamed, and ``ca.pem`` last, so an interrupted ``init`` leaves no CA behind and can
be run again. An existing CA is never overwritten: its certificates would stop verifying
everywhere at once.

Identities follow SPIFFE X.509-SVIDs: each leaf carries exactly one URI SAN. An agent's
certificate names its own host and nothing else: one DNS SAN, ``<host>.agent.<trust domain>``
(:func:`agent_dns_name`), beside its SPIFFE ID. No ``localhost``, no ``127.0.0.1``: when every
agent's certificate carried those, a client dialling ``localhost`` accepted any agent as any
other, and a holder of h1's key could take a command signed for h3 (issue 8). The client checks
the agent's certificate against the name of the host it signs for (``AgentClient``), whatever
address it dials. The certificate is valid for both server and client authentication (an agent
may dial out). ECDSA P-256 because every TLS stack, BoringSSL in grpcio included, accepts it for
both roles.

The signed command envelope still authorizes every action; mTLS only says who is on the line
(see docs and ``research/security.md`` §1.7).
"""

from __future__ import annotations

import datetime as dt
import re
from collections.abc import Sequence
from pathlib import Path
from typing import Any

import grpc
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import ExtendedKeyUsageOID, NameOID

from ops_agent.errors import AgentInputError
from ops_agent.files import fsync_dir, write_file

DEFAULT_TRUST_DOMAIN = "cinefleet.local"
#: The client identity ``init`` issues for the operator / control plane.
OPERATOR = "operator"
CA_DAYS = 3650
LEAF_DAYS = 365
#: Certificates are valid from a little before they are made, for clocks slightly behind.
BACKDATE = dt.timedelta(minutes=5)

_HOST = re.compile(r"[A-Za-z0-9][A-Za-z0-9._-]{0,62}")
_TRUST_DOMAIN = re.compile(r"[a-z0-9._-]{1,255}")
_RESERVED = ("ca", OPERATOR)


class PkiError(AgentInputError):
    """Raised when a PKI folder cannot be made or read; the message names the file or value."""


def spiffe_id(trust_domain: str, *path: str) -> str:
    return "spiffe://" + "/".join((trust_domain, *path))


def agent_id(trust_domain: str, host: str) -> str:
    """The SPIFFE ID an agent's certificate carries."""
    return spiffe_id(trust_domain, "agent", host)


def agent_dns_name(trust_domain: str, host: str) -> str:
    """The one DNS name an agent's certificate carries, and the name a client checks it against."""
    return f"{host}.agent.{trust_domain}"


def control_plane_id(trust_domain: str) -> str:
    """The SPIFFE ID of the operator / control-plane client certificate."""
    return spiffe_id(trust_domain, "control-plane")


def init(dir: Path, hosts: Sequence[str], trust_domain: str = DEFAULT_TRUST_DOMAIN) -> list[Path]:
    """Make a CA, one certificate per host and the operator's client certificate in ``dir``.

    Returns:
        The files written, ``ca.pem`` last.

    Raises:
        PkiError: ``dir`` already holds a CA, a host id or the trust domain is malformed, or a
            host is named twice.
    """
    dir = Path(dir)
    if not _TRUST_DOMAIN.fullmatch(trust_domain):
        raise PkiError(f"trust domain {trust_domain!r}: expected lowercase letters, digits, '.', '-' or '_' "
                       "(a SPIFFE trust domain, e.g. cinefleet.local)")
    for host in hosts:
        if not isinstance(host, str) or not _HOST.fullmatch(host) or host in _RESERVED:
            raise PkiError(f"host id {host!r}: expected 1-63 letters, digits, '.', '_' or '-', starting with a "
                           f"letter or digit, and not {' or '.join(_RESERVED)}")
    if len(set(hosts)) != len(hosts):
        raise PkiError(f"hosts {list(hosts)}: expected each host once")
    if (dir / "ca.pem").exists():
        raise PkiError(f"{dir / 'ca.pem'}: a CA already exists; refusing to overwrite it (every certificate it "
                       "issued would stop verifying). Use another folder, or remove it deliberately")
    dir.mkdir(parents=True, exist_ok=True, mode=0o700)

    now = dt.datetime.now(dt.UTC)
    ca_key = ec.generate_private_key(ec.SECP256R1())
    ca_name = x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cinefleet"),
                         x509.NameAttribute(NameOID.COMMON_NAME, f"cinefleet CA {trust_domain}")])
    ca_cert = (
        x509.CertificateBuilder()
        .subject_name(ca_name).issuer_name(ca_name).public_key(ca_key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=CA_DAYS))
        .add_extension(x509.BasicConstraints(ca=True, path_length=0), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=True, crl_sign=True,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.SubjectAlternativeName([x509.UniformResourceIdentifier(spiffe_id(trust_domain))]),
                       critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )

    written: list[Path] = []
    for host in hosts:
        names: list[x509.GeneralName] = [x509.DNSName(agent_dns_name(trust_domain, host)),
                                         x509.UniformResourceIdentifier(agent_id(trust_domain, host))]
        written += _issue(dir, host, f"cinefleet agent {host}", names, server=True, ca=(ca_cert, ca_key), now=now)
    written += _issue(dir, OPERATOR, "cinefleet control plane",
                      [x509.UniformResourceIdentifier(control_plane_id(trust_domain))], server=False,
                      ca=(ca_cert, ca_key), now=now)
    written.append(_write(dir / "ca.key", _key_pem(ca_key), 0o600))
    written.append(_write(dir / "ca.pem", ca_cert.public_bytes(serialization.Encoding.PEM), 0o644))
    fsync_dir(dir)
    return written


def _issue(dir: Path, name: str, common_name: str, sans: list[x509.GeneralName], *, server: bool,
           ca: tuple[x509.Certificate, ec.EllipticCurvePrivateKey], now: dt.datetime) -> list[Path]:
    ca_cert, ca_key = ca
    key = ec.generate_private_key(ec.SECP256R1())
    usages = [ExtendedKeyUsageOID.SERVER_AUTH, ExtendedKeyUsageOID.CLIENT_AUTH] if server else [
        ExtendedKeyUsageOID.CLIENT_AUTH]
    cert = (
        x509.CertificateBuilder()
        .subject_name(x509.Name([x509.NameAttribute(NameOID.ORGANIZATION_NAME, "cinefleet"),
                                 x509.NameAttribute(NameOID.COMMON_NAME, common_name)]))
        .issuer_name(ca_cert.subject).public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - BACKDATE).not_valid_after(now + dt.timedelta(days=LEAF_DAYS))
        .add_extension(x509.BasicConstraints(ca=False, path_length=None), critical=True)
        .add_extension(x509.KeyUsage(digital_signature=True, key_cert_sign=False, crl_sign=False,
                                     content_commitment=False, key_encipherment=False, data_encipherment=False,
                                     key_agreement=False, encipher_only=False, decipher_only=False), critical=True)
        .add_extension(x509.ExtendedKeyUsage(usages), critical=False)
        .add_extension(x509.SubjectAlternativeName(sans), critical=False)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .add_extension(x509.AuthorityKeyIdentifier.from_issuer_public_key(ca_key.public_key()), critical=False)
        .sign(ca_key, hashes.SHA256())
    )
    return [_write(dir / f"{name}.key", _key_pem(key), 0o600),
            _write(dir / f"{name}.pem", cert.public_bytes(serialization.Encoding.PEM), 0o644)]


def _key_pem(key: ec.EllipticCurvePrivateKey) -> bytes:
    return key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                             serialization.NoEncryption())


def _write(path: Path, data: bytes, mode: int) -> Path:
    write_file(path, data, mode)
    return path



def read(path: Path) -> bytes:
    """A PKI file's bytes; a missing or unreadable one is a :class:`PkiError` naming it."""
    try:
        return path.read_bytes()
    except FileNotFoundError:
        raise PkiError(f"{path}: no such file; run the PKI init for this folder and host first") from None
    except OSError as exc:
        raise PkiError(f"{path}: cannot read ({exc.strerror})") from None


def server_credentials(dir: Path, host: str) -> grpc.ServerCredentials:
    """TLS for ``host``'s agent that requires a client certificate issued by this folder's CA."""
    dir = Path(dir)
    return grpc.ssl_server_credentials([(read(dir / f"{host}.key"), read(dir / f"{host}.pem"))],
                                       root_certificates=read(dir / "ca.pem"), require_client_auth=True)


def trust_domain(dir: Path) -> str:
    """The SPIFFE trust domain of ``dir``'s CA (its ``spiffe://`` URI SAN)."""
    path = Path(dir) / "ca.pem"
    try:
        ca = x509.load_pem_x509_certificate(read(path))
    except ValueError as exc:
        raise PkiError(f"{path}: not a PEM certificate ({exc}); expected the CA made by `cinefleet pki init`") from None
    try:
        uris = ca.extensions.get_extension_for_class(x509.SubjectAlternativeName).value.get_values_for_type(
            x509.UniformResourceIdentifier)
    except x509.ExtensionNotFound:
        uris = []
    domains = [u.removeprefix("spiffe://").split("/")[0] for u in uris if u.startswith("spiffe://")]
    if not domains:
        raise PkiError(f"{path}: no spiffe:// URI SAN naming the trust domain; expected a CA made by "
                       "`cinefleet pki init`")
    return domains[0]


def channel_credentials(dir: Path, name: str = OPERATOR) -> grpc.ChannelCredentials:
    """TLS for a client presenting ``name``'s certificate and trusting only this folder's CA."""
    dir = Path(dir)
    return grpc.ssl_channel_credentials(root_certificates=read(dir / "ca.pem"),
                                        private_key=read(dir / f"{name}.key"),
                                        certificate_chain=read(dir / f"{name}.pem"))


def peer_spiffe_ids(context: Any) -> list[str]:
    """The SPIFFE IDs in the verified client certificate of an RPC (``grpc.ServicerContext``).

    gRPC's auth context is the only reliable source of the peer's identity; it holds the SANs
    of a certificate that has already been verified against the CA.
    """
    sans = context.auth_context().get("x509_subject_alternative_name", [])
    return [san.decode() for san in sans if san.startswith(b"spiffe://")]
