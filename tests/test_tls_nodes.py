"""
Peer and sensor TLS between real ``twistd p2pstore`` processes on loopback:
two nodes replicate over tls: peers; a certificate that is not pinned, or
not of the cluster CA, is refused with the reason in the log and the status
of both nodes; the simulator sends over an ssl: sensor port; and a tcpdump
capture of the loopback interface shows no reading of a TLS link (and does
show them on a plain one, so the check can fail).
"""

from __future__ import annotations

import os
import re
import secrets
import subprocess
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from .capture import LoopbackCapture
from .certs import Issued, cluster, issue
from .nodes import NodeProcess, hold_for, send_lines, start_simulator, wait_for

REPO = Path(__file__).resolve().parent.parent
TLS_DOC = REPO / "docs" / "tls.md"


def cluster_key(test_case) -> Path:
    path = Path(test_case.mktemp()).resolve()
    path.write_bytes(os.urandom(32))
    return path


def tls_args(issued: Issued, ca: Issued = None, pins=()) -> list[str]:
    """
    The options of a node presenting ``issued``, checking peers against
    ``ca`` or the pinned fingerprints.
    """
    args = ["--tls-cert", str(issued.cert), "--tls-key", str(issued.key)]
    if ca is not None:
        return args + ["--peer-ca", str(ca.cert)]
    return args + ["--peer-tls-fingerprints", ",".join(pins)]


def readings(marker: str, count: int) -> list[bytes]:
    """
    Sensor lines whose type and reading_id carry ``marker``, so a capture
    can be searched for them.
    """
    return [f"{marker},{20 + i % 10}C,2026-12-05 10:00:{i % 60:02d}.000000,{marker}-{i}".encode() for i in range(count)]


def pair(test_case, a_args: list[str], b_args: list[str], tls: bool = True):
    """
    Two nodes sharing a cluster key, each dialling the other (over TLS
    when ``tls``).
    """
    key = cluster_key(test_case)
    a = NodeProcess(test_case, secret_file=key, extra_args=a_args)
    b = NodeProcess(test_case, secret_file=key, extra_args=b_args)
    scheme = "tls:" if tls else ""
    a.peers = [scheme + b.peer_address]
    b.peers = [scheme + a.peer_address]
    return a, b


@inlineCallbacks
def holds(node: NodeProcess, origin: str, count: int):
    status = yield node.status()
    return status["origins"].get(origin, {}).get("count") == count


@inlineCallbacks
def holds_none(node: NodeProcess, origin: str):
    status = yield node.status()
    return origin not in status["origins"]


@inlineCallbacks
def peer_of(node: NodeProcess, node_id: str):
    status = yield node.status()
    for entry in status["peers"]:
        if entry["node_id"] == node_id and entry["authenticated"]:
            return entry
    return None


class PeerTLSNodeTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.certs = Path(self.mktemp()).resolve()
        self.ca, (self.cert_a, self.cert_b) = cluster(self.certs, "node-a", "node-b")

    @inlineCallbacks
    def assertReplicates(self, a: NodeProcess, b: NodeProcess, count: int = 50):
        """
        Readings sent to A reach B; return B's status entry for A.
        """
        answers = yield send_lines(a.sensor_port, readings("Replicated", count))
        self.assertEqual(len(answers), count)
        self.assertTrue(all(answer.startswith(b"OK ") for answer in answers), answers[:3])
        yield wait_for(lambda: holds(b, a.node_id, count), 30, f"B to hold A's {count} readings")
        entry = yield wait_for(lambda: peer_of(b, a.node_id), 10, "B's link to A")
        return entry

    @inlineCallbacks
    def test_cluster_ca(self):
        """
        Two nodes with certificates of the cluster CA replicate over tls:
        peers; B's status says each link to A is TLS, with A's certificate.
        Each node logged its own fingerprint at start.
        """
        a, b = pair(self, tls_args(self.cert_a, self.ca), tls_args(self.cert_b, self.ca))
        yield a.start()
        yield b.start()
        entry = yield self.assertReplicates(a, b)
        self.assertTrue(entry["links"])
        for link in entry["links"]:
            self.assertEqual(link["tls"], True, entry)
            self.assertEqual(link["fingerprint"], self.cert_a.fingerprint)
            self.assertEqual(link["subject"], "CN=node-a")
        status = yield b.status()
        self.assertEqual(status["tls"]["fingerprint"], self.cert_b.fingerprint)
        self.assertEqual(status["tls"]["trust"], "ca")
        self.assertEqual(status["tls"]["refused_certificates"], 0)
        self.assertIn(f"this node's certificate {self.cert_a.fingerprint}", a.log_text())
        self.assertIn(f"this node's certificate {self.cert_b.fingerprint}", b.log_text())

    @inlineCallbacks
    def test_plain_links_say_so(self):
        """
        On plain TCP links the status says tls false, and has no tls part.
        """
        a, b = pair(self, [], [], tls=False)
        yield a.start()
        yield b.start()
        entry = yield self.assertReplicates(a, b, count=5)
        self.assertTrue(entry["links"])
        self.assertEqual({link["tls"] for link in entry["links"]}, {False})
        status = yield b.status()
        self.assertNotIn("tls", status)

    @inlineCallbacks
    def test_unpinned_refused_then_pinned(self):
        """
        Self-signed nodes that have not pinned each other refuse each
        other's certificate: each, dialling, logs the fingerprint it saw and
        that it should be added to --peer-tls-fingerprints on it, and counts
        it in its status; each, dialled, logs that the other ended the
        handshake (the dialler checks first). Nothing is replicated. Pinned
        as the log says, they link and replicate.
        """
        self_a, self_b = issue(self.certs, "self-a"), issue(self.certs, "self-b")
        a, b = pair(self, tls_args(self_a, pins=[self_a.fingerprint]), tls_args(self_b, pins=[self_b.fingerprint]))
        yield a.start()
        yield b.start()
        for node, other, theirs, mine in ((a, b, self_b, self_a), (b, a, self_a, self_b)):
            refusal = (
                f"refused the TLS certificate of the peer at {other.peer_address} (dialled): "
                f"its certificate {theirs.fingerprint} (CN={theirs.certificate_name}) is not in "
                f"--peer-tls-fingerprints; if that node is yours, add {theirs.fingerprint} to "
                f"--peer-tls-fingerprints on this node ({node.node_id})"
            )
            refused = (
                "it ended the TLS handshake (tlsv1 alert unknown ca); it likely does not accept "
                f"this node's certificate {mine.fingerprint}"
            )
            yield wait_for(
                lambda: refusal in node.log_text() and refused in node.log_text(),
                20,
                lambda: f"the refusal and the refused in {node.node_id}'s log\n{node.log_text()[-3000:]}",
            )
            status = yield node.status()
            self.assertGreaterEqual(status["tls"]["refused_certificates"], 1)
            self.assertGreaterEqual(status["tls"]["failed_handshakes"], 1)
            failures = status["tls"]["recent_failures"]
            by_me = [f for f in failures if f["refused_by"] == "this node"]
            self.assertEqual({f["fingerprint"] for f in by_me}, {theirs.fingerprint})
            self.assertIn("not in --peer-tls-fingerprints", by_me[0]["reason"])
            self.assertTrue(all(f["dialled"] for f in by_me))
            self.assertIn("tlsv1 alert unknown ca", [f for f in failures if f["refused_by"] == "the peer"][0]["reason"])
            self.assertFalse(any(p["authenticated"] for p in status["peers"]))
        answers = yield send_lines(a.sensor_port, readings("Unpinned", 3))
        self.assertEqual(len(answers), 3)
        yield hold_for(lambda: holds_none(b, a.node_id), 2, "B holding none of A's readings")

        yield a.stop()
        yield b.stop()
        pins = [self_a.fingerprint, self_b.fingerprint]
        a._extra_args = tls_args(self_a, pins=pins)
        b._extra_args = tls_args(self_b, pins=pins)
        yield a.start()
        yield b.start()
        yield wait_for(lambda: holds(b, a.node_id, 3), 30, "B to hold A's readings once pinned")
        entry = yield wait_for(lambda: peer_of(b, a.node_id), 10, "B's link to A")
        self.assertEqual({link["fingerprint"] for link in entry["links"]}, {self_a.fingerprint})

    @inlineCallbacks
    def test_foreign_ca_refused(self):
        """
        A node whose certificate another CA signed is refused by the
        cluster's node both ways (as dialler and as listener), which logs
        that the cluster CA did not sign it; the refused node logs that the
        peer ended the handshake and names its own certificate to fix.
        """
        other_ca, (stranger,) = cluster(self.certs / "other", "stranger", ca_name="other-ca")
        a, b = pair(self, tls_args(self.cert_a, self.ca), tls_args(stranger, self.ca))
        yield a.start()
        yield b.start()
        yield wait_for(
            lambda: a.log_text().count(f"its certificate {stranger.fingerprint} (CN=stranger) does not check") >= 2,
            20,
            lambda: f"A's refusals\n{a.log_text()[-3000:]}",
        )
        log = a.log_text()
        self.assertIn("it was not signed by the cluster CA", log)
        self.assertIn("sign that node's certificate with the cluster CA", log)
        yield wait_for(
            lambda: b.log_text().count(f"it likely does not accept this node's certificate {stranger.fingerprint}") >= 2,
            20,
            lambda: f"B's log of being refused\n{b.log_text()[-3000:]}",
        )
        self.assertIn("it ended the TLS handshake (", b.log_text())
        status_a = yield a.status()
        status_b = yield b.status()
        self.assertGreaterEqual(status_a["tls"]["refused_certificates"], 2)
        self.assertEqual(status_a["tls"]["recent_failures"][-1]["fingerprint"], stranger.fingerprint)
        self.assertGreaterEqual(status_b["tls"]["failed_handshakes"], 2)
        self.assertEqual(status_b["tls"]["recent_failures"][-1]["refused_by"], "the peer")
        for status in (status_a, status_b):
            self.assertFalse(any(p["authenticated"] for p in status["peers"]))

    @inlineCallbacks
    def test_openssl_commands_of_the_docs(self):
        """
        The certificates made by the openssl commands in docs/tls.md (a
        cluster CA and its node certificates, their addresses not these)
        link two nodes.
        """
        made = Path(self.mktemp()).resolve()
        made.mkdir()
        script = docs_block("make-cluster-certs")
        subprocess.run(["bash", "-euo", "pipefail", "-c", script], cwd=made, check=True, capture_output=True)
        node_a, node_b = (
            ["--tls-cert", str(made / f"{n}.crt"), "--tls-key", str(made / f"{n}.key"), "--peer-ca", str(made / "ca.crt")]
            for n in ("node-a", "node-b")
        )
        a, b = pair(self, node_a, node_b)
        yield a.start()
        yield b.start()
        entry = yield self.assertReplicates(a, b, count=5)
        self.assertEqual({link["tls"] for link in entry["links"]}, {True})
        self.assertEqual((made / "node-a.key").stat().st_mode & 0o077, 0)


def docs_block(name: str) -> str:
    """
    The shell block of docs/tls.md that follows ``<!-- name -->``.
    """
    text = TLS_DOC.read_text()
    match = re.search(rf"<!-- {re.escape(name)} -->\s*```sh\n(.*?)```", text, re.S)
    if match is None:
        raise AssertionError(f"docs/tls.md has no ```sh block after <!-- {name} -->")
    return match.group(1)


class SensorTLSNodeTests(TestCase):
    timeout = 120

    def setUp(self) -> None:
        self.certs = Path(self.mktemp()).resolve()
        self.ca, (self.cert,) = cluster(self.certs, "node-a")

    def node(self) -> NodeProcess:
        node = NodeProcess(self)
        node._extra_args = [
            "--sensor-port",
            f"ssl:{node.sensor_port}:interface=127.0.0.1:privateKey={self.cert.key}:certKey={self.cert.cert}",
        ]
        return node

    @inlineCallbacks
    def test_simulator_over_ssl(self):
        """
        ``sensor_simulator.py --tls --ca`` sends to an ssl: sensor port;
        the readings are stored.
        """
        node = self.node()
        yield node.start()
        simulator = start_simulator(self, node.sensor_port, 5, extra_args=["--tls", "--ca", str(self.ca.cert)])
        code = yield simulator.wait_exit(30)
        self.assertEqual(code, 0, simulator.output)
        status = yield node.status()
        self.assertEqual(status["sensors"]["accepted"], 5)
        self.assertEqual(len(re.findall(r"^Sending ", simulator.output, re.M)), 5)

    @inlineCallbacks
    def test_simulator_refuses_unknown_ca(self):
        """
        Given another CA, the simulator refuses the node's certificate and
        says so once, and the node stores nothing.
        """
        node = self.node()
        yield node.start()
        other_ca, _ = cluster(self.certs / "other", "x", ca_name="other-ca")
        simulator = start_simulator(self, node.sensor_port, 5, extra_args=["--tls", "--ca", str(other_ca.cert)])
        yield wait_for(lambda: "Cannot connect" in simulator.output, 20, "the simulator's refusal")
        self.assertIn("(TLS: ", simulator.output)
        self.assertIn("certificate verify failed", simulator.output)
        self.assertEqual(simulator.output.count("Cannot connect"), 1)
        status = yield node.status()
        self.assertEqual(status["sensors"]["accepted"], 0)
        self.assertNotIn("Connected to", simulator.output)


class CaptureTests(TestCase):
    """
    What a capture of the loopback interface sees of a peer link.
    """

    timeout = 120

    @inlineCallbacks
    def captured(self, tls: bool, count: int = 200):
        """
        Two nodes replicating ``count`` readings whose type and id carry a
        marker, captured on their peer ports; fire with (marker, capture).
        """
        certs = Path(self.mktemp()).resolve()
        ca, (cert_a, cert_b) = cluster(certs, "node-a", "node-b")
        a_args, b_args = (tls_args(cert_a, ca), tls_args(cert_b, ca)) if tls else ([], [])
        a, b = pair(self, a_args, b_args, tls=tls)
        yield a.start()
        yield b.start()
        yield wait_for(lambda: peer_of(b, a.node_id), 20, "B's link to A")
        capture = LoopbackCapture(self, [a.peer_port, b.peer_port])
        yield capture.start()
        marker = "Canary" + secrets.token_hex(6)
        answers = yield send_lines(a.sensor_port, readings(marker, count))
        self.assertEqual(len(answers), count)
        yield wait_for(lambda: holds(b, a.node_id, count), 30, "B to hold A's readings")
        data = yield capture.stop()
        # The capture holds the records that went over the link.
        self.assertGreater(len(data), count * len(marker), f"{capture.packets()} packets")
        return marker, data

    @inlineCallbacks
    def test_tls_link_shows_no_plaintext(self):
        """
        On a TLS link the capture holds no reading's type or id.
        """
        marker, data = yield self.captured(tls=True)
        self.assertNotIn(marker.encode(), data)
        self.assertNotIn(b"RECORDS", data)

    @inlineCallbacks
    def test_plain_link_shows_plaintext(self):
        """
        On a plain link the same capture shows them: the check above can fail.
        """
        marker, data = yield self.captured(tls=False)
        self.assertIn(marker.encode(), data)
        self.assertIn(b"RECORDS", data)
