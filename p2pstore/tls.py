"""
Mutual TLS on peer links: the peer port and every ``tls:`` address in
``--peers`` speak TLS, each side presenting this node's certificate and
checking the other's, either against the cluster CA (``--peer-ca``) or
against the pinned fingerprints (``--peer-tls-fingerprints``).

No host name is checked. With pinning the fingerprint names the exact
certificate. With a cluster CA, every certificate that CA signed is a
member of the cluster, whatever address it is dialled at: peers are often
dialled by IP address, and a CA made for one cluster (docs/tls.md) is the
membership list. Which node it is, the cluster-key handshake then proves.

A refused certificate is logged once per connection by the side that
refused it, with its fingerprint and what to add where; the side that was
refused logs that the other ended the handshake. Both are counted in the
``tls`` part of the status.
"""

from __future__ import annotations

from collections import deque
from typing import Optional

from OpenSSL import SSL, crypto
from twisted.internet.interfaces import (
    IOpenSSLClientConnectionCreator,
    IOpenSSLServerConnectionCreator,
    IStreamClientEndpoint,
    IStreamServerEndpoint,
)
from twisted.internet.ssl import Certificate, CertificateOptions, TLSVersion, trustRootFromCertificates
from twisted.logger import Logger
from twisted.protocols.tls import BufferingTLSTransport, TLSMemoryBIOFactory
from zope.interface import implementer

from .certificates import PeerCredentials, certificate_fingerprint, subject_name

# The last failed handshakes kept for the status.
RECENT_FAILURES = 10

# The few verification errors a cluster CA refusal is likely to show.
_VERIFY_ERRORS = {
    2: "its issuer is not the cluster CA",
    7: "its signature does not check (signed by another CA of the same name?)",
    9: "it is not valid yet",
    10: "it has expired",
    18: "it is self-signed",
    19: "its chain ends in a self-signed certificate that is not the cluster CA",
    20: "it was not signed by the cluster CA",
    21: "it was not signed by the cluster CA",
}


class PeerTLSStatus:
    """
    What became of this node's TLS handshakes with peers, for the status.
    """

    def __init__(self, credentials: PeerCredentials, clock):
        self._clock = clock
        self.fingerprint = credentials.fingerprint
        self.trust = credentials.trust
        self.refused = 0
        self.failed = 0
        self.recent: deque = deque(maxlen=RECENT_FAILURES)

    def note(self, refused: bool, address: str, dialled: bool, reason: str, fingerprint=None) -> None:
        """
        A handshake failed: this node refused the peer's certificate
        (C{refused}), or it failed otherwise (the peer refused this node's).
        """
        if refused:
            self.refused += 1
        else:
            self.failed += 1
        self.recent.append(
            {
                "at": self._clock.seconds(),
                "address": address,
                "dialled": dialled,
                "refused_by": "this node" if refused else "the peer",
                "fingerprint": fingerprint,
                "reason": reason,
            }
        )

    def status(self) -> dict:
        return {
            "fingerprint": self.fingerprint,
            "trust": self.trust,
            "refused_certificates": self.refused,
            "failed_handshakes": self.failed,
            "recent_failures": list(self.recent),
        }


def link_security(link) -> dict:
    """
    Whether a link is TLS and, if so, the certificate its peer presented.
    """
    transport = getattr(link, "transport", None)
    if not isinstance(transport, PeerTLSTransport):
        return {"address": link.address, "dialled": link.dialled, "tls": False}
    peer = transport.getPeerCertificate()
    handle = transport.getHandle()
    return {
        "address": link.address,
        "dialled": link.dialled,
        "tls": True,
        "version": handle.get_protocol_version_name() if handle is not None else None,
        "fingerprint": certificate_fingerprint(peer.to_cryptography()) if peer is not None else None,
        "subject": subject_name(peer.to_cryptography()) if peer is not None else None,
    }


def _who(transport: "PeerTLSTransport") -> str:
    address = _address(transport)
    if transport.factory.dialled:
        return f"the peer at {address} (dialled)"
    return f"a peer connecting from {address}"


def _address(transport) -> str:
    peer = transport.transport.getPeer() if transport.transport is not None else None
    return f"{getattr(peer, 'host', '?')}:{getattr(peer, 'port', '?')}"


@implementer(IOpenSSLServerConnectionCreator, IOpenSSLClientConnectionCreator)
class PeerTLS:
    """
    The TLS of one node's peer links, both ways: it makes each link's
    OpenSSL connection, checks the certificate the peer presents, and
    wraps endpoints in TLS.

    @ivar status: the L{PeerTLSStatus} its handshakes are counted in.
    """

    log = Logger()

    def __init__(self, credentials: PeerCredentials, node_id: str, clock):
        self.credentials = credentials
        self.node_id = node_id
        self.status = PeerTLSStatus(credentials, clock)
        trust = {}
        if credentials.ca:
            trust = {
                "trustRoot": trustRootFromCertificates(
                    [Certificate(crypto.X509.from_cryptography(ca)) for ca in credentials.ca]
                ),
            }
        options = CertificateOptions(
            privateKey=crypto.PKey.from_cryptography_key(credentials.key),
            certificate=crypto.X509.from_cryptography(credentials.certificate),
            extraCertChain=[crypto.X509.from_cryptography(c) for c in credentials.chain],
            raiseMinimumTo=TLSVersion.TLSv1_2,
            **trust,
        )
        # One context for every link: the CA store and this node's
        # certificate are set on it, the verification on each connection.
        self._context = options.getContext()

    def server(self, endpoint: IStreamServerEndpoint) -> IStreamServerEndpoint:
        """
        ``endpoint``, whose connections speak TLS as the accepting side.
        """
        return _ServerEndpoint(endpoint, self)

    def client(self, endpoint: IStreamClientEndpoint) -> IStreamClientEndpoint:
        """
        ``endpoint``, whose connections speak TLS as the dialling side.
        """
        return _ClientEndpoint(endpoint, self)

    def serverConnectionForTLS(self, tls_protocol) -> SSL.Connection:
        return self._connection(tls_protocol)

    def clientConnectionForTLS(self, tls_protocol) -> SSL.Connection:
        connection = self._connection(tls_protocol)
        connection.set_connect_state()
        return connection

    def _connection(self, tls_protocol) -> SSL.Connection:
        connection = SSL.Connection(self._context, None)
        connection.set_app_data(tls_protocol)
        # Mutual: a peer without a certificate is refused either way.
        connection.set_verify(SSL.VERIFY_PEER | SSL.VERIFY_FAIL_IF_NO_PEER_CERT, self._verify)
        return connection

    def _verify(self, connection, x509, error: int, depth: int, ok: int) -> bool:
        """
        OpenSSL's verify callback: called for each certificate of the
        chain the peer presented (the peer's own at depth 0), with OpenSSL's
        verdict in ``ok``.
        """
        if self.credentials.ca:
            if ok:
                return True
            reason = _VERIFY_ERRORS.get(error, f"OpenSSL verify error {error}")
            return self._refuse(
                connection,
                x509,
                "its certificate {certificate} does not check against the cluster CA "
                f"in --peer-ca: {reason}",
                "sign that node's certificate with the cluster CA (docs/tls.md), or give "
                f"--peer-ca on this node ({self.node_id}) the CA that signed it",
            )
        if depth > 0:
            # Only the peer's own certificate is pinned; its issuers do not matter.
            return True
        seen = certificate_fingerprint(x509.to_cryptography())
        if seen in self.credentials.pins:
            return True
        return self._refuse(
            connection,
            x509,
            "its certificate {certificate} is not in --peer-tls-fingerprints",
            f"if that node is yours, add {seen} to --peer-tls-fingerprints on this node ({self.node_id})",
        )

    def _refuse(self, connection, x509, why: str, remedy: str) -> bool:
        transport = connection.get_app_data()
        certificate = x509.to_cryptography()
        seen = certificate_fingerprint(certificate)
        transport.refused = why.format(certificate=f"{seen} ({subject_name(certificate)})")
        self.log.warn(
            "refused the TLS certificate of {who}: {why}; {remedy}",
            who=_who(transport),
            why=transport.refused,
            remedy=remedy,
        )
        self.status.note(True, _address(transport), transport.factory.dialled, transport.refused, seen)
        return False

    def handshake_failed(self, transport: "PeerTLSTransport", failure) -> None:
        """
        A link's TLS ended in an error this node did not cause by refusing
        a certificate.
        """
        message = _openssl_reason(failure.value)
        if "alert" in message:
            reason = f"it ended the TLS handshake ({message})"
            remedy = (
                f"it likely does not accept this node's certificate {self.status.fingerprint}: "
                "add that to --peer-tls-fingerprints on it, or sign this node's certificate "
                "with its --peer-ca (docs/tls.md)"
            )
        else:
            reason = f"TLS failed ({message})"
            remedy = (
                "does it speak TLS? A node with --tls-cert takes only TLS on its peer port, "
                "and is dialled as tls:host:port"
            )
        self.log.warn("link with {who}: {reason}; {remedy}", who=_who(transport), reason=reason, remedy=remedy)
        self.status.note(False, _address(transport), transport.factory.dialled, reason)


def _openssl_reason(error: SSL.Error) -> str:
    """
    OpenSSL's reasons in an error (``tlsv1 alert unknown ca``), without
    its list of tuples.
    """
    queue = error.args[0] if error.args else None
    if isinstance(queue, list) and queue and all(isinstance(e, tuple) and len(e) == 3 for e in queue):
        return "; ".join(str(e[2]) for e in queue)
    return str(error)


class PeerTLSTransport(BufferingTLSTransport):
    """
    The TLS layer of one peer link, which reports a failed handshake.

    @ivar refused: why this node refused the peer's certificate, if it did.
    """

    refused: Optional[str] = None
    _failure = None

    def _tlsShutdownFinished(self, reason) -> None:
        # Twisted's one path for a TLS error ending the connection (a failed
        # handshake, an alert, a bad record); the reason is otherwise seen
        # only by the wrapped protocol's connectionLost.
        if reason is not None and self._failure is None:
            self._failure = reason
        super()._tlsShutdownFinished(reason)

    def connectionLost(self, reason) -> None:
        failure, self._failure = self._failure, None
        super().connectionLost(reason)
        if failure is not None and self.refused is None and isinstance(failure.value, SSL.Error):
            self.factory.tls.handshake_failed(self, failure)


class _PeerTLSFactory(TLSMemoryBIOFactory):
    protocol = PeerTLSTransport

    def __init__(self, tls: PeerTLS, dialled: bool, wrapped):
        super().__init__(tls, dialled, wrapped)
        self.tls = tls
        self.dialled = dialled

    def buildProtocol(self, addr):
        # The peer factory refuses connections (None) until the store is open.
        wrapped = self.wrappedFactory.buildProtocol(addr)
        if wrapped is None:
            return None
        return self.protocol(self, wrapped)


@implementer(IStreamServerEndpoint)
class _ServerEndpoint:
    def __init__(self, endpoint: IStreamServerEndpoint, tls: PeerTLS):
        self._endpoint = endpoint
        self._tls = tls

    def listen(self, factory):
        return self._endpoint.listen(_PeerTLSFactory(self._tls, False, factory))


@implementer(IStreamClientEndpoint)
class _ClientEndpoint:
    def __init__(self, endpoint: IStreamClientEndpoint, tls: PeerTLS):
        self._endpoint = endpoint
        self._tls = tls

    def connect(self, factory):
        d = self._endpoint.connect(_PeerTLSFactory(self._tls, True, factory))
        # The dialler is given the peer protocol, not its TLS layer.
        return d.addCallback(lambda transport: transport.wrappedProtocol)
