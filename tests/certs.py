"""
Throwaway certificates for the TLS tests: a cluster CA, certificates it
signs, and self-signed ones, written as PEM files into a test's directory.

Made with ``cryptography`` (P-256 keys: fast); one test of test_tls_nodes
makes them with the openssl commands of docs/tls.md instead.
"""

from __future__ import annotations

import datetime
import ipaddress
from pathlib import Path
from typing import Optional

from attrs import frozen
from cryptography import x509
from cryptography.hazmat.primitives import hashes, serialization
from cryptography.hazmat.primitives.asymmetric import ec
from cryptography.x509.oid import NameOID

from p2pstore.certificates import certificate_fingerprint


@frozen
class Issued:
    """
    A certificate and its key, as written to C{cert} and C{key}.
    """

    cert: Path
    key: Path
    certificate: x509.Certificate
    private_key: object

    @property
    def fingerprint(self) -> str:
        return certificate_fingerprint(self.certificate)

    @property
    def certificate_name(self) -> str:
        """
        The CN it was made for.
        """
        return self.cert.stem


def _name(common_name: str) -> x509.Name:
    return x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, common_name)])


def issue(
    directory: Path,
    name: str,
    ca: Optional[Issued] = None,
    is_ca: bool = False,
    days: int = 30,
    not_before_days: int = -1,
) -> Issued:
    """
    Make a key and a certificate for ``name`` (CN, and SAN DNS:name,
    DNS:localhost and IP:127.0.0.1), signed by ``ca`` or self-signed, and
    write them to ``<directory>/<name>.crt`` and ``<name>.key``.
    """
    directory.mkdir(parents=True, exist_ok=True)
    key = ec.generate_private_key(ec.SECP256R1())
    now = datetime.datetime.now(datetime.timezone.utc)
    builder = (
        x509.CertificateBuilder()
        .subject_name(_name(name))
        .issuer_name(ca.certificate.subject if ca else _name(name))
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now + datetime.timedelta(days=not_before_days))
        .not_valid_after(now + datetime.timedelta(days=days))
        .add_extension(x509.BasicConstraints(ca=is_ca, path_length=None), critical=True)
    )
    if not is_ca:
        builder = builder.add_extension(
            x509.SubjectAlternativeName(
                [
                    x509.DNSName(name),
                    x509.DNSName("localhost"),
                    x509.IPAddress(ipaddress.IPv4Address("127.0.0.1")),
                ]
            ),
            critical=False,
        )
    certificate = builder.sign(ca.private_key if ca else key, hashes.SHA256())
    cert_path = directory / f"{name}.crt"
    key_path = directory / f"{name}.key"
    cert_path.write_bytes(certificate.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(
        key.private_bytes(
            serialization.Encoding.PEM,
            serialization.PrivateFormat.PKCS8,
            serialization.NoEncryption(),
        )
    )
    key_path.chmod(0o600)
    return Issued(cert_path, key_path, certificate, key)


def cluster(directory: Path, *names: str, ca_name: str = "cluster-ca") -> tuple[Issued, list[Issued]]:
    """
    A cluster CA and one certificate it signed per name.
    """
    ca = issue(directory, ca_name, is_ca=True, days=365)
    return ca, [issue(directory, name, ca=ca) for name in names]
