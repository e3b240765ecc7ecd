"""
Tests for p2pstore.access: the networks of --sensor-allow, the AUTH line,
counting and rate-limited logging of the connections kept out, status, and
the reload on SIGHUP.
"""

from __future__ import annotations

import ipaddress
import os
import signal
from pathlib import Path

from twisted.internet.address import IPv4Address, IPv6Address, UNIXAddress
from twisted.internet.task import Clock
from twisted.logger import capturedLogs, formatEvent
from twisted.trial.unittest import SynchronousTestCase, TestCase

from p2pstore.access import (
    LOG_INTERVAL,
    FirstLine,
    RateLimitedLog,
    ReloadOnHangup,
    SensorAccess,
    parse_networks,
)
from p2pstore.tokens import load_sensor_tokens

from .test_tokens import ATTIC, BOILER


def v4(host: str, port: int = 4000) -> IPv4Address:
    return IPv4Address("TCP", host, port)


class NetworksTests(SynchronousTestCase):
    """
    parse_networks() reads --sensor-allow.
    """

    def test_parse(self) -> None:
        """
        IPv4 and IPv6 networks and bare addresses, with spaces; host bits
        are allowed; nothing means any.
        """
        self.assertEqual(
            parse_networks(" 10.0.0.0/8, fd00::/8 ,192.168.1.7,10.1.2.3/16"),
            (
                ipaddress.ip_network("10.0.0.0/8"),
                ipaddress.ip_network("fd00::/8"),
                ipaddress.ip_network("192.168.1.7/32"),
                ipaddress.ip_network("10.1.0.0/16"),
            ),
        )
        self.assertEqual(parse_networks(""), ())
        self.assertEqual(parse_networks(" , "), ())

    def test_bad(self) -> None:
        """
        Anything else is an error naming it.
        """
        for bad in ("10.0.0.0/33", "localhost", "10.0.0.0/8,nope", "::1/129"):
            error = self.assertRaises(ValueError, parse_networks, bad)
            self.assertIn("is not an IPv4 or IPv6 network", str(error))


class AllowTests(SynchronousTestCase):
    """
    SensorAccess.allows() lets in the allowed networks only, and counts and
    logs the others, each address at most once a minute.
    """

    def setUp(self) -> None:
        self.clock = Clock()
        self.access = SensorAccess(self.clock, networks=parse_networks("127.0.0.0/8,fd00::/8"))

    def test_any(self) -> None:
        """
        Without networks every address is allowed and nothing is counted.
        """
        access = SensorAccess(self.clock)
        self.assertTrue(access.allows(v4("203.0.113.9")))
        self.assertEqual(access.refused, 0)

    def test_allowed(self) -> None:
        """
        Addresses in a network are allowed: IPv4, IPv6, and IPv4 mapped into
        IPv6 (a dual-stack listener); a UNIX socket has no address to check.
        """
        for address in (
            v4("127.0.0.1"), v4("127.200.0.1"), IPv6Address("TCP", "fd00::1", 4000),
            IPv6Address("TCP", "::ffff:127.0.0.1", 4000), UNIXAddress(b"/tmp/sock"),
        ):
            self.assertTrue(self.access.allows(address), address)
        self.assertEqual(self.access.refused, 0)

    def test_refused_counted_and_logged(self) -> None:
        """
        Others are refused and counted; the first refusal of an address is
        logged with it, the next within a minute are not, and the one after
        tells how many were not.
        """
        with capturedLogs() as events:
            for _ in range(3):
                self.assertFalse(self.access.allows(v4("10.0.0.5")))
            self.assertFalse(self.access.allows(IPv6Address("TCP", "2001:db8::1", 4000)))
            self.clock.advance(LOG_INTERVAL)
            self.assertFalse(self.access.allows(v4("10.0.0.5", 4001)))
        self.assertEqual(self.access.refused, 5)
        messages = [formatEvent(event) for event in events]
        self.assertEqual(len(messages), 3, messages)
        self.assertIn("from 10.0.0.5:4000: not in --sensor-allow (127.0.0.0/8,fd00::/8)", messages[0])
        self.assertIn("from [2001:db8::1]:4000", messages[1])
        self.assertIn("from 10.0.0.5:4001", messages[2])
        self.assertIn("2 more from 10.0.0.5 not logged", messages[2])
        self.assertIn("Add its network to --sensor-allow", messages[0])


class RateLimitedLogTests(SynchronousTestCase):
    """
    RateLimitedLog remembers a bounded number of addresses.
    """

    def test_bounded(self) -> None:
        """
        Past its bound the oldest addresses are forgotten (and so logged
        again at once), the newest kept.
        """
        limited = RateLimitedLog(Clock())
        for n in range(2000):
            self.assertEqual(limited.due(f"h{n}"), 0)
        self.assertEqual(len(limited._last), 1024)
        self.assertIsNone(limited.due("h1999"))
        self.assertEqual(limited.due("h0"), 0)


class FirstLineTests(SynchronousTestCase):
    """
    FirstLine reads the AUTH line as it arrives, in pieces.
    """

    def setUp(self) -> None:
        path = Path(self.mktemp())
        path.write_text(f"boiler {BOILER}\nattic {ATTIC}\n")
        self.tokens = load_sensor_tokens(path)

    def test_known(self) -> None:
        """
        A known token gives its name and what followed the line, however
        the line was cut; a CR before the LF is fine.
        """
        stream = b"AUTH " + BOILER.encode() + b"\r\nTemperature,39C\n"
        for cut in range(1, len(stream)):
            first = FirstLine(self.tokens, 256)
            got = first.feed(stream[:cut])
            if got is None:
                got = first.feed(stream[cut:])
                rest = got[2]
            else:
                rest = got[2] + stream[cut:]
            self.assertEqual(got[:2], ("boiler", "unknown token"), cut)
            self.assertEqual(rest, b"Temperature,39C\n", cut)

    def test_refused(self) -> None:
        """
        A wrong token, another first line or a first line past max_line are
        refused, each with its reason.
        """
        cases = [
            (b"AUTH " + ATTIC[:-1].encode() + b"\n", "unknown token"),
            (b"AUTH\n", "its first line is not AUTH <token>"),
            (b"Temperature,39C\n", "its first line is not AUTH <token>"),
            (b"auth " + BOILER.encode() + b"\n", "its first line is not AUTH <token>"),
            (b"A" * 257, "its first line is too long"),
        ]
        for data, reason in cases:
            name, why, _ = FirstLine(self.tokens, 256).feed(data)
            self.assertEqual((name, why), (None, reason), data)


class StatusTests(SynchronousTestCase):
    """
    SensorAccess.status() counts the connected sensors by name.
    """

    def test_status(self) -> None:
        class Sensor:
            def __init__(self, name):
                self.sensor_name = name

        access = SensorAccess(Clock())
        access.auth_failures = 2
        sensors = [Sensor("boiler"), Sensor("attic"), Sensor("boiler"), Sensor(None)]
        self.assertEqual(
            access.status(sensors),
            {"names": {"boiler": 2, "attic": 1}, "auth_failures": 2, "refused": 0},
        )


class ReloadOnHangupTests(TestCase):
    """
    ReloadOnHangup reads the files again on SIGHUP, in the reactor thread,
    while it runs.
    """

    async def test_sighup(self) -> None:
        """
        A SIGHUP to the process calls every action once, and an action that
        fails does not keep the next from running; after stop the handler
        before is back.
        """
        from twisted.internet import reactor
        from twisted.internet.task import deferLater

        calls = []
        before = signal.getsignal(signal.SIGHUP)
        service = ReloadOnHangup(reactor, [lambda: 1 / 0, lambda: calls.append("reloaded")])
        service.startService()
        self.addCleanup(lambda: service.running and service.stopService())
        with capturedLogs() as events:
            os.kill(os.getpid(), signal.SIGHUP)
            for _ in range(40):
                if calls:
                    break
                await deferLater(reactor, 0.05, lambda: None)
        self.assertEqual(calls, ["reloaded"])
        self.assertTrue(any("reload on SIGHUP failed" in formatEvent(e) for e in events))
        self.flushLoggedErrors(ZeroDivisionError)
        service.stopService()
        self.assertEqual(signal.getsignal(signal.SIGHUP), before)
