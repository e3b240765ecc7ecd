"""
The certificates of peer TLS, read from their PEM files: this node's
certificate and key, the cluster CA or the pinned fingerprints its peers'
certificates are checked against, and the fingerprint that names a
certificate (``sha256:<hex>``, as Syncthing pins device certificates).

Pure: no Twisted. Every problem is a L{CertificateError} that says what
is wrong with which file; the settings turn it into a ConfigError naming
the option.
"""

from __future__ import annotations

import re
from pathlib import Path
from typing import Optional

from attrs import field, frozen
from cryptography import x509
from cryptography.exceptions import UnsupportedAlgorithm
from cryptography.hazmat.primitives import hashes, serialization

FINGERPRINT_PREFIX = "sha256:"
# 32 bytes of SHA-256 as hex, with or without the colons openssl prints.
_HEX = re.compile(r"\A[0-9a-fA-F]{64}\Z")
# A PEM file of certificates or keys is small; a bigger file is not one.
MAX_PEM = 1024 * 1024


class CertificateError(ValueError):
    """
    A certificate, key or fingerprint cannot be used; the message says why.
    """


def fingerprint(der: bytes) -> str:
    """
    The fingerprint of a certificate in DER form: ``sha256:`` and the
    lowercase hex of its SHA-256 (the hex of
    ``openssl x509 -noout -fingerprint -sha256``, without the colons).
    """
    digest = hashes.Hash(hashes.SHA256())
    digest.update(der)
    return FINGERPRINT_PREFIX + digest.finalize().hex()


def certificate_fingerprint(certificate: x509.Certificate) -> str:
    """
    The fingerprint of a certificate.
    """
    return fingerprint(certificate.public_bytes(serialization.Encoding.DER))


def subject_name(certificate: x509.Certificate) -> str:
    """
    The subject of a certificate, for the log (``CN=node-b``).
    """
    return certificate.subject.rfc4514_string() or "(no subject)"


def parse_fingerprints(text: str) -> frozenset[str]:
    """
    Comma-separated ``sha256:HEX`` fingerprints, HEX being 64 hex digits
    with or without colons between the bytes, in either case.

    @raise CertificateError: one of them is not such a fingerprint.
    """
    pins = set()
    for item in str(text).split(","):
        item = item.strip()
        if not item:
            continue
        algorithm, colon, digits = item.partition(":")
        hex_digits = digits.replace(":", "")
        if not colon or algorithm.lower() != "sha256" or not _HEX.match(hex_digits):
            raise CertificateError(
                f"{item!r} is not a fingerprint: give sha256: and the 64 hex digits that "
                "`openssl x509 -noout -fingerprint -sha256 -in CERT` prints (or that the "
                "node logs at start)"
            )
        pins.add(FINGERPRINT_PREFIX + hex_digits.lower())
    return frozenset(pins)


def _read(path: Path, what: str) -> bytes:
    try:
        with open(path, "rb") as f:
            data = f.read(MAX_PEM + 1)
    except FileNotFoundError:
        raise CertificateError(f"{str(path)!r} does not exist: give the {what}") from None
    except IsADirectoryError:
        raise CertificateError(f"{str(path)!r} is a directory, not the {what}") from None
    except OSError as e:
        raise CertificateError(f"cannot read {str(path)!r} ({e.strerror})") from None
    if len(data) > MAX_PEM:
        raise CertificateError(f"{str(path)!r} is larger than {MAX_PEM} bytes: not the {what}")
    return data


def load_certificates(path: Path, what: str) -> tuple[x509.Certificate, ...]:
    """
    Every certificate in a PEM file, in order.

    @raise CertificateError: the file is missing, unreadable or holds no
        PEM certificate.
    """
    data = _read(path, what)
    try:
        certificates = x509.load_pem_x509_certificates(data)
    except ValueError:
        raise CertificateError(
            f"{str(path)!r} holds no PEM certificate (-----BEGIN CERTIFICATE-----): "
            f"it should be the {what}"
        ) from None
    return tuple(certificates)


def load_key(path: Path):
    """
    An unencrypted PEM private key.

    @raise CertificateError: the file is missing, unreadable, encrypted or
        holds no PEM private key.
    """
    data = _read(path, "node's private key (PEM)")
    try:
        return serialization.load_pem_private_key(data, password=None)
    except TypeError:
        raise CertificateError(
            f"{str(path)!r} is encrypted: give the key unencrypted "
            "(openssl pkey -in KEY -out KEY.plain), readable only by the node's user"
        ) from None
    except (ValueError, UnsupportedAlgorithm) as e:
        raise CertificateError(
            f"{str(path)!r} holds no PEM private key (-----BEGIN PRIVATE KEY-----) ({e})"
        ) from None


def _public(key) -> bytes:
    return key.public_bytes(
        serialization.Encoding.DER, serialization.PublicFormat.SubjectPublicKeyInfo
    )


@frozen
class PeerCredentials:
    """
    What a node needs for TLS on its peer links: its own certificate (and
    any intermediate certificates after it in the file), its key, and how
    it checks the certificates of its peers: signed by one of C{ca}, or
    pinned in C{pins}; exactly one of the two is given.
    """

    certificate: x509.Certificate
    chain: tuple[x509.Certificate, ...]
    key: object = field(repr=False, eq=False)
    ca: tuple[x509.Certificate, ...] = ()
    pins: frozenset[str] = frozenset()
    certificate_path: Optional[Path] = None
    ca_path: Optional[Path] = None

    @property
    def fingerprint(self) -> str:
        """
        This node's own certificate fingerprint, which peers pin.
        """
        return certificate_fingerprint(self.certificate)

    @property
    def trust(self) -> str:
        """
        ``ca`` or ``pinned``: how peers' certificates are checked.
        """
        return "ca" if self.ca else "pinned"


def check_key(certificate: x509.Certificate, key, key_path: Path) -> None:
    """
    Check that ``key`` is the private key of ``certificate``.

    @raise CertificateError: it is another key.
    """
    if _public(certificate.public_key()) != _public(key.public_key()):
        raise CertificateError(
            f"{str(key_path)!r} is not the key of the certificate "
            f"({subject_name(certificate)}): give the key it was made with"
        )
