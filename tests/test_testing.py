"""
Tests for p2pstore.testing: the listening ports tests and benchmarks give
their nodes stay out of the kernel's ephemeral range.
"""

from __future__ import annotations

import socket

from twisted.trial.unittest import SynchronousTestCase

from p2pstore import testing
from p2pstore.testing import (
    LOWEST_PORT,
    MIN_LISTENING_PORTS,
    TRIAL_WORKERS,
    ephemeral_range,
    free_ports,
    listening_ports,
)


class ListeningPortsTests(SynchronousTestCase):
    """
    The ports picked from lie outside the ephemeral range while enough do.
    """

    def test_linux_default(self):
        """
        With Linux's 32768-60999, the ports are 10000-32767 and 61000-65535.
        """
        ports = listening_ports(32768, 60999)
        self.assertEqual(ports, [*range(LOWEST_PORT, 32768), *range(61000, 65536)])

    def test_range_starting_low(self):
        """
        A range from 10500 up (as some hosts set it) leaves 10000-10499 and
        the ports above its end.
        """
        ports = listening_ports(10500, 60999)
        self.assertEqual(ports, [*range(LOWEST_PORT, 10500), *range(61000, 65536)])

    def test_freebsd_default(self):
        """
        FreeBSD's 10000-65535 leaves nothing above 10000: the ports below it
        are taken, from 1024 up.
        """
        ports = listening_ports(10000, 65535)
        self.assertEqual(ports, list(range(1024, 10000)))

    def test_range_below_lowest(self):
        """
        A range wholly below 10000 leaves every port from 10000 up.
        """
        ports = listening_ports(2000, 5000)
        self.assertEqual(ports, list(range(LOWEST_PORT, 65536)))

    def test_everything_ephemeral(self):
        """
        When fewer than MIN_LISTENING_PORTS lie outside the range even from
        1024 up, every unprivileged port is used.
        """
        ports = listening_ports(1024, 65535)
        self.assertEqual(ports, list(range(1024, 65536)))
        self.assertGreater(len(listening_ports(1500, 65000)), MIN_LISTENING_PORTS)

    def test_trial_workers_disjoint(self):
        """
        Each trial worker takes its own share; together they cover every port.
        """
        shares = [set(listening_ports(32768, 60999, worker)) for worker in range(TRIAL_WORKERS)]
        for i, share in enumerate(shares):
            for other in shares[i + 1 :]:
                self.assertFalse(share & other)
        self.assertEqual(set().union(*shares), set(listening_ports(32768, 60999)))


class FreePortsTests(SynchronousTestCase):
    """
    free_ports() hands out bindable ports outside the ephemeral range, each once.
    """

    def test_outside_ephemeral_and_bindable(self):
        """
        The ports differ, lie outside this machine's ephemeral range, and can
        be listened on.
        """
        low, high = ephemeral_range()
        ports = free_ports(3)
        self.assertEqual(len(set(ports)), 3)
        allowed = set(listening_ports(low, high))
        for port in ports:
            self.assertIn(port, allowed)
            with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
                s.bind(("127.0.0.1", port))
                s.listen()

    def test_port_in_use_skipped(self):
        """
        A port something listens on is not handed out.
        """
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as busy:
            busy.bind(("127.0.0.1", 0))
            busy.listen()
            taken = busy.getsockname()[1]
            self.patch(testing, "listening_ports", lambda low, high, worker=None: [taken])
            self.assertRaises(RuntimeError, free_ports, 1)

    def test_never_twice(self):
        """
        A port handed out is not handed out again by the same process, so a
        node restarted on its old port finds it free.
        """
        first = free_ports(5)
        second = free_ports(5)
        self.assertFalse(set(first) & set(second))
