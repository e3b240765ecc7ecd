"""
Tests for the peer TLS settings and the certificate files behind them
(p2pstore.settings, p2pstore.certificates): each wrong file or missing
option is a ConfigError naming the setting.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.certificates import CertificateError, parse_fingerprints
from p2pstore.settings import ConfigError, Peer, check_settings, parse_peer

from .certs import cluster, issue


class FingerprintTests(SynchronousTestCase):
    def test_forms(self) -> None:
        """
        A fingerprint is taken as the node logs it, or as openssl prints it
        (colons, upper case); each is kept in the node's form.
        """
        hex_digits = "ab" * 32
        colons = ":".join(["AB"] * 32)
        self.assertEqual(
            parse_fingerprints(f"sha256:{hex_digits}, SHA256:{colons},"),
            frozenset({"sha256:" + hex_digits}),
        )
        self.assertEqual(parse_fingerprints(""), frozenset())

    def test_bad(self) -> None:
        """
        Anything else is refused, saying where to find a fingerprint.
        """
        for bad in ["ab" * 32, "sha1:" + "ab" * 20, "sha256:" + "ab" * 31, "sha256:" + "zz" * 32]:
            error = self.assertRaises(CertificateError, parse_fingerprints, bad)
            self.assertIn("openssl x509 -noout -fingerprint -sha256", str(error))


class PeerAddressTests(SynchronousTestCase):
    def test_tls_prefix(self) -> None:
        """
        ``tls:`` before an address dials it over TLS, and shows in its name.
        """
        self.assertEqual(parse_peer("tls:10.0.0.2:7000"), Peer("10.0.0.2", 7000, tls=True))
        self.assertEqual(parse_peer("tls:[::1]"), Peer("::1", 12346, tls=True))
        self.assertEqual(str(parse_peer("TLS:node-b")), "tls:node-b:12346")
        self.assertEqual(parse_peer("node-b:7000"), Peer("node-b", 7000))

    def test_host_named_tls(self) -> None:
        """
        ``tls:<port>`` stays the host named tls, as before.
        """
        self.assertEqual(parse_peer("tls:7000"), Peer("tls", 7000))


class PeerTLSSettingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.dir = Path(self.mktemp())
        self.ca, (self.node, self.other) = cluster(self.dir, "node-a", "node-b")

    def check(self, **given):
        return check_settings({k.replace("_", "-"): v for k, v in given.items()}, self.reactor)

    def assertRefused(self, setting: str, *words: str, **given) -> ConfigError:
        error = self.assertRaises(ConfigError, self.check, **given)
        self.assertEqual(error.setting, setting, str(error))
        for word in words:
            self.assertIn(word, str(error))
        return error

    def test_off_by_default(self) -> None:
        """
        Without --tls-cert, links are plain TCP.
        """
        self.assertIsNone(self.check().peer_tls)

    def test_cluster_ca(self) -> None:
        """
        A certificate, its key and a cluster CA: peers are checked by the CA.
        """
        tls = self.check(
            tls_cert=str(self.node.cert), tls_key=str(self.node.key), peer_ca=str(self.ca.cert)
        ).peer_tls
        self.assertEqual(tls.trust, "ca")
        self.assertEqual(tls.fingerprint, self.node.fingerprint)
        self.assertEqual(tls.ca, (self.ca.certificate,))
        self.assertEqual(tls.pins, frozenset())

    def test_pinned(self) -> None:
        """
        Fingerprints instead of a CA: only those certificates are taken.
        """
        tls = self.check(
            tls_cert=str(self.node.cert),
            tls_key=str(self.node.key),
            peer_tls_fingerprints=f"{self.node.fingerprint},{self.other.fingerprint}",
        ).peer_tls
        self.assertEqual(tls.trust, "pinned")
        self.assertEqual(tls.pins, {self.node.fingerprint, self.other.fingerprint})

    def test_tls_peer_needs_certificate(self) -> None:
        """
        A tls: peer without this node's certificate names --peers and what
        to give.
        """
        self.assertRefused("peers", "tls:127.0.0.1:7000", "--tls-cert", peers="127.0.0.1:7000,tls:127.0.0.1:7000")

    def test_half_given(self) -> None:
        """
        A certificate without its key, a key without its certificate, or
        either without a way to check peers, names what is missing.
        """
        self.assertRefused("tls-key", "private key", tls_cert=str(self.node.cert), peer_ca=str(self.ca.cert))
        self.assertRefused("tls-cert", "certificate", tls_key=str(self.node.key), peer_ca=str(self.ca.cert))
        self.assertRefused(
            "peer-ca", "--peer-tls-fingerprints", tls_cert=str(self.node.cert), tls_key=str(self.node.key)
        )
        self.assertRefused("peer-ca", "--tls-cert", peer_ca=str(self.ca.cert))
        self.assertRefused("peer-tls-fingerprints", "--tls-cert", peer_tls_fingerprints=self.node.fingerprint)
        self.assertRefused(
            "peer-tls-fingerprints",
            "not both",
            tls_cert=str(self.node.cert),
            tls_key=str(self.node.key),
            peer_ca=str(self.ca.cert),
            peer_tls_fingerprints=self.node.fingerprint,
        )
        self.assertRefused(
            "peer-tls-fingerprints",
            "no fingerprint",
            tls_cert=str(self.node.cert),
            tls_key=str(self.node.key),
            peer_tls_fingerprints=" , ",
        )

    def test_missing_files(self) -> None:
        """
        A file that is not there is named, under its own setting.
        """
        missing = str(self.dir / "nope.pem")
        good = {"tls_cert": str(self.node.cert), "tls_key": str(self.node.key), "peer_ca": str(self.ca.cert)}
        for setting in ("tls_cert", "tls_key", "peer_ca"):
            error = self.assertRefused(setting.replace("_", "-"), "nope.pem", "does not exist", **{**good, setting: missing})
            self.assertTrue(str(error).startswith(f"--{setting.replace('_', '-')}: "), str(error))

    def test_not_pem(self) -> None:
        """
        A file that holds no PEM certificate or key, or a directory, says so.
        """
        junk = self.dir / "junk.pem"
        junk.write_text("not a certificate\n")
        good = {"tls_cert": str(self.node.cert), "tls_key": str(self.node.key), "peer_ca": str(self.ca.cert)}
        self.assertRefused("tls-cert", "no PEM certificate", **{**good, "tls_cert": str(junk)})
        self.assertRefused("peer-ca", "no PEM certificate", **{**good, "peer_ca": str(junk)})
        self.assertRefused("tls-key", "no PEM private key", **{**good, "tls_key": str(junk)})
        # A certificate given as the key is no key either.
        self.assertRefused("tls-key", "no PEM private key", **{**good, "tls_key": str(self.node.cert)})
        self.assertRefused("tls-cert", "is a directory", **{**good, "tls_cert": str(self.dir)})

    def test_unreadable(self) -> None:
        """
        A file the node cannot read is named, with the system's reason
        (here a path through a file, which even root cannot read).
        """
        self.assertRefused(
            "tls-key",
            "cannot read",
            "Not a directory",
            tls_cert=str(self.node.cert),
            tls_key=str(self.node.cert / "key.pem"),
            peer_ca=str(self.ca.cert),
        )

    def test_wrong_key(self) -> None:
        """
        Another certificate's key is refused, naming the certificate.
        """
        self.assertRefused(
            "tls-key",
            "is not the key of the certificate",
            "CN=node-a",
            tls_cert=str(self.node.cert),
            tls_key=str(self.other.key),
            peer_ca=str(self.ca.cert),
        )

    def test_encrypted_key(self) -> None:
        """
        An encrypted key is refused, saying how to decrypt it.
        """
        from cryptography.hazmat.primitives import serialization

        locked = self.dir / "locked.key"
        locked.write_bytes(
            self.node.private_key.private_bytes(
                serialization.Encoding.PEM,
                serialization.PrivateFormat.PKCS8,
                serialization.BestAvailableEncryption(b"secret"),
            )
        )
        self.assertRefused(
            "tls-key", "encrypted", "openssl pkey",
            tls_cert=str(self.node.cert), tls_key=str(locked), peer_ca=str(self.ca.cert),
        )

    def test_chain_in_certificate_file(self) -> None:
        """
        Certificates after the node's own in its file are its chain.
        """
        bundle = self.dir / "bundle.crt"
        bundle.write_bytes(self.node.cert.read_bytes() + self.ca.cert.read_bytes())
        tls = self.check(tls_cert=str(bundle), tls_key=str(self.node.key), peer_ca=str(self.ca.cert)).peer_tls
        self.assertEqual(tls.certificate, self.node.certificate)
        self.assertEqual(tls.chain, (self.ca.certificate,))

    def test_ssl_peer_port_refused(self) -> None:
        """
        ``ssl:`` on --peer-port could not check peers' certificates: it is
        refused, pointing at --tls-cert.
        """
        issued = issue(self.dir, "server")
        self.assertRefused(
            "peer-port",
            "--tls-cert",
            peer_port=f"ssl:7000:privateKey={issued.key}:certKey={issued.cert}",
        )

    def test_ssl_sensor_port(self) -> None:
        """
        ``ssl:`` on --sensor-port is taken, and its files checked: a missing
        one is a ConfigError naming --sensor-port.
        """
        issued = issue(self.dir, "sensors")
        description = f"ssl:7000:privateKey={issued.key}:certKey={issued.cert}"
        self.assertEqual(self.check(sensor_port=description).sensor_port, description)
        self.assertRefused("sensor-port", "nope.pem", sensor_port=f"ssl:7000:privateKey={self.dir / 'nope.pem'}")
