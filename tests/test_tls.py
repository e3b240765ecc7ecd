"""
Tests for p2pstore.tls: two L{PeerTLS} ends over real 127.0.0.1 sockets in
this process, each checking the other's certificate by cluster CA or by
pinned fingerprint, and what each logs and counts when it refuses one or
is refused.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet import reactor
from twisted.internet.defer import Deferred, inlineCallbacks
from twisted.internet.endpoints import TCP4ClientEndpoint, TCP4ServerEndpoint
from twisted.internet.protocol import Factory, Protocol
from twisted.logger import Logger
from twisted.trial.unittest import TestCase

from p2pstore.certificates import PeerCredentials
from p2pstore.tls import PeerTLS, link_security

from .certs import Issued, cluster, issue
from .nodes import wait_for


class _Link(Protocol):
    """
    Stands for a peer link: says hello, collects what comes, and is a
    link for L{link_security} (C{address}, C{dialled}).
    """

    def __init__(self, dialled: bool):
        self.dialled = dialled
        self.received = b""
        self.lost = Deferred()
        self.is_lost = False

    @property
    def address(self) -> str:
        peer = self.transport.getPeer()
        return f"{peer.host}:{peer.port}"

    def connectionMade(self) -> None:
        self.transport.write(b"HELLO\n")

    def dataReceived(self, data: bytes) -> None:
        self.received += data

    def connectionLost(self, reason) -> None:
        self.is_lost = True
        self.reason = reason
        self.lost.callback(None)


class _Links(Factory):
    def __init__(self, dialled: bool, ready: bool = True):
        self.dialled = dialled
        self.ready = ready
        self.built: list[_Link] = []

    def buildProtocol(self, addr):
        if not self.ready:
            return None
        link = _Link(self.dialled)
        self.built.append(link)
        return link


def credentials(issued: Issued, ca: Issued = None, pins=()) -> PeerCredentials:
    return PeerCredentials(
        certificate=issued.certificate,
        chain=(),
        key=issued.private_key,
        ca=(ca.certificate,) if ca else (),
        pins=frozenset(pins),
    )


class PeerTLSTests(TestCase):
    def setUp(self) -> None:
        self.dir = Path(self.mktemp())
        self.ca, (self.a, self.b) = cluster(self.dir, "node-a", "node-b")
        self.events: dict[str, list] = {"server": [], "client": []}

    def tls(self, side: str, creds: PeerCredentials) -> PeerTLS:
        tls = PeerTLS(creds, f"{side}-node", reactor)
        tls.log = Logger(observer=self.events[side].append)
        return tls

    def messages(self, side: str) -> list[str]:
        from twisted.logger import formatEvent

        return [formatEvent(e) for e in self.events[side]]

    @inlineCallbacks
    def link(self, server: PeerTLS, client: PeerTLS, ready: bool = True):
        """
        Listen with ``server``, dial with ``client``; fire with both
        factories once the dialled link has ended or both sides heard HELLO.
        """
        accepted = _Links(dialled=False, ready=ready)
        port = yield server.server(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")).listen(accepted)
        self.addCleanup(port.stopListening)
        dialled = _Links(dialled=True)
        endpoint = client.client(TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port))
        link = yield endpoint.connect(dialled)
        # The dialler is given the link itself, not its TLS layer.
        self.assertIsInstance(link, _Link)

        def settled():
            if link.is_lost:
                return True
            return accepted.built and all(b"HELLO" in p.received for p in [link, *accepted.built])

        yield wait_for(settled, 10, "the link to carry HELLO both ways or end")
        self.addCleanup(lambda: None if link.is_lost else (link.transport.loseConnection(), link.lost)[1])
        return accepted, link

    @inlineCallbacks
    def test_cluster_ca(self):
        """
        Two certificates of the cluster CA link, and each side's status
        of the link names the other's certificate.
        """
        server = self.tls("server", credentials(self.a, ca=self.ca))
        client = self.tls("client", credentials(self.b, ca=self.ca))
        accepted, link = yield self.link(server, client)
        self.assertFalse(link.is_lost)
        seen_by_client = link_security(link)
        seen_by_server = link_security(accepted.built[0])
        self.assertEqual(seen_by_client["tls"], True)
        self.assertEqual(seen_by_client["fingerprint"], self.a.fingerprint)
        self.assertEqual(seen_by_client["subject"], "CN=node-a")
        self.assertTrue(seen_by_client["dialled"])
        self.assertEqual(seen_by_server["fingerprint"], self.b.fingerprint)
        self.assertIn(seen_by_server["version"], ("TLSv1.2", "TLSv1.3"))
        self.assertEqual(self.events, {"server": [], "client": []})
        self.assertEqual(server.status.status()["failed_handshakes"], 0)

    @inlineCallbacks
    def test_pinned(self):
        """
        Self-signed certificates link when each side pins the other's.
        """
        a, b = issue(self.dir, "self-a"), issue(self.dir, "self-b")
        server = self.tls("server", credentials(a, pins=[b.fingerprint]))
        client = self.tls("client", credentials(b, pins=[a.fingerprint]))
        accepted, link = yield self.link(server, client)
        self.assertFalse(link.is_lost)
        self.assertEqual(link_security(accepted.built[0])["fingerprint"], b.fingerprint)

    @inlineCallbacks
    def test_server_refuses_unpinned(self):
        """
        The accepting side refuses a certificate it has not pinned: it logs
        the fingerprint and what to add where, and counts it; the dialler
        logs that the peer ended the handshake, naming its own certificate.
        """
        a, b = issue(self.dir, "self-a"), issue(self.dir, "self-b")
        server = self.tls("server", credentials(a, pins=[a.fingerprint]))
        client = self.tls("client", credentials(b, pins=[a.fingerprint]))
        accepted, link = yield self.link(server, client)
        yield wait_for(lambda: link.is_lost, 10, "the refused link to close")
        self.assertNotIn(b"HELLO", link.received)
        yield wait_for(lambda: self.events["client"], 10, "the refused side's log line")
        [refusal] = self.messages("server")
        self.assertIn("refused the TLS certificate of a peer connecting from 127.0.0.1:", refusal)
        self.assertIn(f"its certificate {b.fingerprint} (CN=self-b) is not in --peer-tls-fingerprints", refusal)
        self.assertIn(f"add {b.fingerprint} to --peer-tls-fingerprints on this node (server-node)", refusal)
        status = server.status.status()
        self.assertEqual(status["refused_certificates"], 1)
        self.assertEqual(status["recent_failures"][0]["fingerprint"], b.fingerprint)
        self.assertEqual(status["recent_failures"][0]["refused_by"], "this node")
        self.assertFalse(status["recent_failures"][0]["dialled"])
        [refused] = self.messages("client")
        self.assertIn("link with the peer at 127.0.0.1:", refused)
        self.assertIn("it ended the TLS handshake (", refused)
        self.assertIn(f"this node's certificate {b.fingerprint}", refused)
        self.assertEqual(client.status.status()["failed_handshakes"], 1)
        self.assertEqual(client.status.status()["recent_failures"][0]["refused_by"], "the peer")

    @inlineCallbacks
    def test_client_refuses_foreign_ca(self):
        """
        The dialling side refuses a server certificate of another CA, and
        says the CA did not sign it.
        """
        other_ca, (stranger,) = cluster(self.dir / "other", "stranger", ca_name="other-ca")
        server = self.tls("server", credentials(stranger, ca=self.ca))
        client = self.tls("client", credentials(self.b, ca=self.ca))
        accepted, link = yield self.link(server, client)
        yield wait_for(lambda: link.is_lost, 10, "the refused link to close")
        [refusal] = self.messages("client")
        self.assertIn("refused the TLS certificate of the peer at 127.0.0.1:", refusal)
        self.assertIn("(dialled)", refusal)
        self.assertIn(f"{stranger.fingerprint} (CN=stranger) does not check against the cluster CA", refusal)
        self.assertIn("it was not signed by the cluster CA", refusal)
        self.assertIn("sign that node's certificate with the cluster CA", refusal)
        self.assertEqual(client.status.status()["refused_certificates"], 1)
        yield wait_for(lambda: self.events["server"], 10, "the refused server's log line")
        self.assertIn("it ended the TLS handshake", self.messages("server")[0])

    @inlineCallbacks
    def test_same_name_other_ca(self):
        """
        A certificate of another CA that has the cluster CA's name is
        refused too (its signature does not check).
        """
        _, (impostor,) = cluster(self.dir / "impostor", "node-x")
        server = self.tls("server", credentials(self.a, ca=self.ca))
        client = self.tls("client", credentials(impostor, ca=self.ca))
        accepted, link = yield self.link(server, client)
        yield wait_for(lambda: link.is_lost, 10, "the refused link to close")
        yield wait_for(lambda: self.events["server"], 10, "the refusal")
        [refusal] = self.messages("server")
        self.assertIn(f"{impostor.fingerprint} (CN=node-x) does not check", refusal)
        self.assertIn("its signature does not check", refusal)

    @inlineCallbacks
    def test_plain_client(self):
        """
        A peer that dials the TLS port without TLS is closed, and the log
        asks whether it speaks TLS.
        """
        server = self.tls("server", credentials(self.a, ca=self.ca))
        port = yield server.server(TCP4ServerEndpoint(reactor, 0, interface="127.0.0.1")).listen(
            _Links(dialled=False)
        )
        self.addCleanup(port.stopListening)
        plain = yield TCP4ClientEndpoint(reactor, "127.0.0.1", port.getHost().port).connect(
            _Links(dialled=True)
        )
        yield plain.lost
        [failure] = self.messages("server")
        self.assertIn("a peer connecting from 127.0.0.1:", failure)
        self.assertIn("does it speak TLS?", failure)
        self.assertEqual(server.status.status()["failed_handshakes"], 1)

    @inlineCallbacks
    def test_not_ready(self):
        """
        While the peer factory takes no connections (the store is opening),
        a TLS connection is closed at once rather than wrapped around nothing.
        """
        server = self.tls("server", credentials(self.a, ca=self.ca))
        client = self.tls("client", credentials(self.b, ca=self.ca))
        accepted, link = yield self.link(server, client, ready=False)
        yield wait_for(lambda: link.is_lost, 10, "the link to close")
        self.assertEqual(accepted.built, [])
