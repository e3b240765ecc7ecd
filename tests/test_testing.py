"""
Tests for p2pstore.testing: the listening ports tests and benchmarks give
their nodes stay out of the kernel's ephemeral range.
"""

from __future__ import annotations

import os
import socket
import subprocess
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase

from p2pstore import testing
from p2pstore.testing import (
    IANA_EPHEMERAL,
    LOWEST_PORT,
    MIN_LISTENING_PORTS,
    TRIAL_WORKERS,
    ephemeral_range,
    free_ports,
    listening_ports,
)


def unused_ports(n: int) -> list[int]:
    """
    ``n`` ports nothing listens on at the moment.
    """
    sockets = [socket.socket(socket.AF_INET, socket.SOCK_STREAM) for _ in range(n)]
    try:
        for s in sockets:
            s.bind(("127.0.0.1", 0))
        return [s.getsockname()[1] for s in sockets]
    finally:
        for s in sockets:
            s.close()


class ListeningPortsTests(SynchronousTestCase):
    """
    The ports picked from lie outside the ephemeral range while enough do.
    """

    def assertPorts(self, ports: list[int], expected: list[int]) -> None:
        # Not assertEqual: a diff of two lists of 50,000 ports takes minutes.
        self.assertTrue(
            ports == expected,
            f"{len(ports)} ports {ports[:2]}..{ports[-2:]}, expected "
            f"{len(expected)} ports {expected[:2]}..{expected[-2:]}",
        )

    def test_linux_default(self):
        """
        With Linux's 32768-60999, the ports are 10000-32767 and 61000-65535.
        """
        self.assertPorts(
            listening_ports(32768, 60999), [*range(LOWEST_PORT, 32768), *range(61000, 65536)]
        )

    def test_range_starting_low(self):
        """
        A range from 10500 up (as some hosts set it) leaves 10000-10499 and
        the ports above its end.
        """
        self.assertPorts(
            listening_ports(10500, 60999), [*range(LOWEST_PORT, 10500), *range(61000, 65536)]
        )

    def test_freebsd_default(self):
        """
        FreeBSD's 10000-65535 leaves nothing above 10000: the ports below it
        are taken, from 1024 up.
        """
        self.assertPorts(listening_ports(10000, 65535), list(range(1024, 10000)))

    def test_range_below_lowest(self):
        """
        A range wholly below 10000 leaves every port from 10000 up.
        """
        self.assertPorts(listening_ports(2000, 5000), list(range(LOWEST_PORT, 65536)))

    def test_few_outside_from_1024(self):
        """
        The ports from 1024 up count, below the range and above it, when
        fewer than MIN_LISTENING_PORTS lie outside it from 10000 up.
        """
        ports = listening_ports(1500, 65000)
        self.assertPorts(ports, [*range(1024, 1500), *range(65001, 65536)])
        self.assertGreaterEqual(len(ports), MIN_LISTENING_PORTS)

    def test_everything_ephemeral(self):
        """
        When fewer than MIN_LISTENING_PORTS lie outside the range even from
        1024 up, every unprivileged port is used.
        """
        self.assertPorts(listening_ports(1024, 65535), list(range(1024, 65536)))

    def test_trial_workers_disjoint(self):
        """
        Each trial worker takes its own share; together they cover every port.
        """
        shares = [set(listening_ports(32768, 60999, worker)) for worker in range(TRIAL_WORKERS)]
        for i, share in enumerate(shares):
            for other in shares[i + 1 :]:
                self.assertFalse(share & other)
        self.assertTrue(set().union(*shares) == set(listening_ports(32768, 60999)))


class EphemeralRangeTests(SynchronousTestCase):
    """
    The range is read from /proc, else from sysctl, else IANA's is assumed.
    """

    def setUp(self):
        ephemeral_range.cache_clear()
        self.addCleanup(ephemeral_range.cache_clear)
        self.sysctl_calls = []

    def sysctl(self, answer):
        def run(command, **kwargs):
            self.sysctl_calls.append(command)
            if isinstance(answer, Exception):
                raise answer
            return subprocess.CompletedProcess(command, 0, stdout=answer)

        self.patch(subprocess, "run", run)

    def test_proc(self):
        """
        Linux's file gives the range; sysctl is not asked.
        """
        path = Path(self.mktemp())
        path.write_text("32768\t60999\n")
        self.patch(testing, "EPHEMERAL_RANGE_FILE", path)
        self.sysctl(AssertionError("sysctl asked"))
        self.assertEqual(ephemeral_range(), (32768, 60999))
        self.assertEqual(self.sysctl_calls, [])

    def test_sysctl(self):
        """
        Without the file, sysctl's two values (FreeBSD, macOS) give it.
        """
        self.patch(testing, "EPHEMERAL_RANGE_FILE", Path(self.mktemp()))
        self.sysctl("10000\n65535\n")
        self.assertEqual(ephemeral_range(), (10000, 65535))
        self.assertEqual(
            self.sysctl_calls,
            [["sysctl", "-n", "net.inet.ip.portrange.first", "net.inet.ip.portrange.last"]],
        )

    def test_neither(self):
        """
        Without the file or sysctl, IANA's dynamic range is assumed.
        """
        self.patch(testing, "EPHEMERAL_RANGE_FILE", Path(self.mktemp()))
        self.sysctl(FileNotFoundError("sysctl"))
        self.assertEqual(ephemeral_range(), IANA_EPHEMERAL)

    def test_sysctl_unknown_names(self):
        """
        A sysctl that does not know the names (exit status 1) means IANA's.
        """
        self.patch(testing, "EPHEMERAL_RANGE_FILE", Path(self.mktemp()))
        self.sysctl(subprocess.CalledProcessError(1, "sysctl"))
        self.assertEqual(ephemeral_range(), IANA_EPHEMERAL)


class TrialWorkerTests(SynchronousTestCase):
    """
    A `trial -j` worker is known by its working directory, _trial_temp/<k>.
    """

    def in_directory(self, path: Path) -> None:
        path.mkdir(parents=True)
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(path)

    def test_worker(self):
        self.in_directory(Path(self.mktemp()).resolve() / "_trial_temp" / "3")
        self.assertEqual(testing._trial_worker(), 3)

    def test_trial_temp_itself(self):
        self.in_directory(Path(self.mktemp()).resolve() / "_trial_temp")
        self.assertIsNone(testing._trial_worker())

    def test_other_numbered_directory(self):
        self.in_directory(Path(self.mktemp()).resolve() / "build" / "3")
        self.assertIsNone(testing._trial_worker())


class FreePortsTests(SynchronousTestCase):
    """
    free_ports() hands out bindable ports outside the ephemeral range, each once.
    """

    def setUp(self):
        self.patch(testing, "_handed_out", set())

    def offer(self, ports: list[int]) -> None:
        self.patch(testing, "listening_ports", lambda low, high, worker=None: list(ports))

    def test_outside_ephemeral_and_bindable(self):
        """
        The ports differ, lie outside this machine's ephemeral range, and can
        be listened on.
        """
        low, high = ephemeral_range()
        ports = free_ports(3)
        self.assertEqual(len(set(ports)), 3)
        for port in ports:
            self.assertFalse(low <= port <= high, f"{port} in {low}-{high}")
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
                s.listen()

    def test_port_in_use_skipped(self):
        """
        A port something listens on is not handed out; a free one is.
        """
        [free] = unused_ports(1)
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            self.offer([busy.getsockname()[1], free])
            self.assertEqual(free_ports(1), [free])

    def test_never_twice(self):
        """
        A port handed out is not handed out again by the same process, so a
        node restarted on its old port finds it free; when every port has
        been handed out, free_ports says so.
        """
        ports = unused_ports(4)
        self.offer(ports)
        first = free_ports(2)
        second = free_ports(2)
        self.assertEqual(sorted(first + second), sorted(ports))
        error = self.assertRaises(RuntimeError, free_ports, 1)
        self.assertIn("fewer than 1 free TCP ports", str(error))
