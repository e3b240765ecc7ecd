"""
Tests for p2pstore.tap: the ``twistd p2pstore`` options and the wiring of a
node from them.
"""

from __future__ import annotations

import gc
import os
import re
import socket
import sqlite3
import stat
import subprocess
import sys
import time
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase, TestCase

import p2pstore
from p2pstore.identity import KEY_FILE, NODE_ID_FILE
from p2pstore.node import RUNNING
from p2pstore.schema import SELF_DB
from p2pstore.service import GIL_SWITCH_INTERVAL, NodeService
from p2pstore.settings import Peer
from p2pstore.tap import Options, makeNode, makeService, parse_settings
from p2pstore.testing import free_port, free_ports

from .nodes import KeepRunning, twistd_command

REPO = Path(p2pstore.__file__).resolve().parent.parent


def options(*args: str) -> Options:
    config = Options()
    config.parseOptions(list(args))
    return config


class TapTestMixin:
    def data_dir(self) -> Path:
        return Path(self.mktemp())

    def make(self, *args: str, reactor=None) -> NodeService:
        return makeNode(options(*args), reactor=reactor or MemoryReactorClock())

    @staticmethod
    def gone(service: NodeService) -> NodeService:
        """
        The process of a node made but never started exits: its data
        directory's lock goes with it.
        """
        service._lock.close()
        return service

    def assertStops(self, option: str, *args: str) -> str:
        """
        makeService with these arguments stops the start with one line
        naming ``option``; return that line.
        """
        if not any(a.startswith("--data-dir") for a in args):
            args = ("--data-dir", str(self.data_dir())) + args
        error = self.assertRaises(SystemExit, self.make, *args)
        message = error.code
        self.assertIsInstance(message, str, f"for {args!r}")
        self.assertNotIn("\n", message, f"for {args!r}")
        self.assertNotIn("Traceback", message)
        self.assertTrue(message.startswith(f"p2pstore: {option}"), f"{message!r} for {args!r}")
        return message


class DefaultsTests(TapTestMixin, SynchronousTestCase):
    """
    The defaults ``--help`` lists are the ones a node starts with.
    """

    def test_help_lists_defaults(self):
        """
        ``--help`` names every option with its default.
        """
        usage = " ".join(Options().getUsage(width=1000).split())
        # One chunk per option, from its name to the next option's name.
        chunks = {
            chunk.split("=")[0]: chunk for chunk in re.split(r" (?=--[a-z-]+=)", usage)
        }
        for option, default in [
            ("--data-dir", "./p2pstore-data"),
            ("--sensor-port", "12345"),
            ("--peer-port", "12346"),
            ("--status-port", "8000"),
            ("--max-line", "1024"),
            ("--sync", "full"),
            ("--secret-file", "<data-dir>/cluster.key"),
        ]:
            self.assertIn(f"[default: {default}", chunks[option])
        self.assertIn("12346 when omitted", usage)

    def test_defaults_parsed(self):
        """
        With no options a node uses ./p2pstore-data, ports 12345, 12346 and
        8000, no peers, the key in the data directory, lines up to 1024
        bytes and synchronous=FULL.
        """
        settings = parse_settings(options(), MemoryReactorClock())
        self.assertEqual(settings.data_dir, Path("p2pstore-data"))
        self.assertEqual(settings.sensor_port, "tcp:12345")
        self.assertEqual(settings.peer_port, "tcp:12346")
        self.assertEqual(settings.status_port, "tcp:8000")
        self.assertEqual(settings.peers, ())
        self.assertIsNone(settings.secret_file)
        self.assertEqual(settings.max_line, 1024)
        self.assertEqual(settings.sync, "full")

    def test_defaults_wired(self):
        """
        Started with no options in a fresh directory, the node makes
        ./p2pstore-data with its node id and a private cluster key, listens
        for sensors on 12345 and for status on 8000, reads lines up to 1024
        bytes and stores with synchronous=FULL.
        """
        cwd = Path(self.mktemp()).absolute()
        cwd.mkdir()
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(cwd)
        reactor = MemoryReactorClock()
        service = self.make(reactor=reactor)
        data_dir = cwd / "p2pstore-data"
        self.assertTrue(data_dir.is_dir())
        # node.id is written once the store is open, not before.
        self.assertFalse((data_dir / NODE_ID_FILE).exists())
        service._opened(None)
        self.assertEqual(
            (data_dir / NODE_ID_FILE).read_text().strip(), service.node.node_id
        )
        key = data_dir / KEY_FILE
        self.assertEqual(len(key.read_bytes()), 32)
        self.assertEqual(stat.S_IMODE(key.stat().st_mode), 0o600)
        self.assertEqual(service.node.store.path.resolve(), (data_dir / SELF_DB).resolve())
        self.assertEqual(service.node.store.synchronous, "FULL")
        self.assertEqual(service.sensors.factory.max_line, 1024)
        service.sensors.privilegedStartService()
        service.status.privilegedStartService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(12345, ""), (8000, "")],
        )


class GoodOptionsTests(TapTestMixin, SynchronousTestCase):
    """
    Good option values reach the node as given.
    """

    def test_endpoints_used(self):
        """
        The sensor and status listeners listen where their options say,
        interface included, with the right factory on each.
        """
        reactor = MemoryReactorClock()
        service = self.make(
            "--data-dir", str(self.data_dir()),
            "--sensor-port", "tcp:23456:interface=127.0.0.1",
            "--status-port", "tcp6:port=8080:interface=\\:\\:1",
            reactor=reactor,
        )
        self.assertIsInstance(service, NodeService)
        self.assertEqual(service.sensors.description, "tcp:23456:interface=127.0.0.1")
        self.assertEqual(service.status.description, "tcp6:port=8080:interface=\\:\\:1")
        service.sensors.privilegedStartService()
        service.status.privilegedStartService()
        (sensor_port, sensor_factory, _, sensor_interface), (status_port, status_factory, _, status_interface) = reactor.tcpServers
        self.assertEqual((sensor_port, sensor_interface), (23456, "127.0.0.1"))
        self.assertEqual((status_port, status_interface), (8080, "::1"))
        self.assertIs(sensor_factory, service.sensors.factory)
        self.assertIs(status_factory, service.status.factory)
        self.assertIsNot(sensor_factory, status_factory)

    def test_plain_port_numbers(self):
        """
        A bare port number means TCP on every interface.
        """
        reactor = MemoryReactorClock()
        service = self.make(
            "--data-dir", str(self.data_dir()),
            "--sensor-port", " 40001 ",
            "--status-port", "1",
            reactor=reactor,
        )
        service.sensors.privilegedStartService()
        service.status.privilegedStartService()
        self.assertEqual(
            [(port, interface) for port, _, _, interface in reactor.tcpServers],
            [(40001, ""), (1, "")],
        )

    def test_unix_endpoint(self):
        """
        Any server endpoint description works, a UNIX socket included.
        """
        reactor = MemoryReactorClock()
        path = os.path.abspath(self.mktemp())
        service = self.make(
            "--data-dir", str(self.data_dir()), "--status-port", f"unix:{path}", reactor=reactor
        )
        service.status.privilegedStartService()
        self.assertEqual(reactor.unixServers[0][0], path)

    def test_files_and_tuning(self):
        """
        --data-dir, --secret-file, --max-line and --sync reach the store and
        the sensor protocol.
        """
        data_dir = self.data_dir()
        secret = Path(self.mktemp())
        secret.write_bytes(b"s" * 32)
        service = self.make(
            "--data-dir", str(data_dir),
            "--secret-file", str(secret),
            "--max-line", "65536",
            "--sync", "normal",
        )
        self.assertEqual(service.node.store.path, data_dir / SELF_DB)
        self.assertEqual(service.node.store.synchronous, "NORMAL")
        self.assertEqual(service.sensors.factory.max_line, 65536)
        self.assertFalse((data_dir / KEY_FILE).exists())
        self.assertEqual(secret.read_bytes(), b"s" * 32)

    def test_same_identity_on_restart(self):
        """
        A second start from the same data directory is the same node with
        the same key.
        """
        data_dir = self.data_dir()
        first = self.make("--data-dir", str(data_dir))
        first._opened(None)
        self.gone(first)
        key = (data_dir / KEY_FILE).read_bytes()
        second = self.make("--data-dir", str(data_dir))
        self.assertEqual(first.node.node_id, second.node.node_id)
        self.assertEqual((data_dir / KEY_FILE).read_bytes(), key)

    def test_failed_first_start_is_forgotten(self):
        """
        A first start that never opened its store (a port in use, say)
        leaves no node.id, so the next start is a new node, not one that
        lost its database and waits to recover it.
        """
        data_dir = self.data_dir()
        first = self.gone(self.make("--data-dir", str(data_dir), "--peers", "127.0.0.1"))
        second = self.make("--data-dir", str(data_dir), "--peers", "127.0.0.1")
        self.assertNotEqual(first.node.node_id, second.node.node_id)
        self.assertFalse(second.node.store.recover_if_empty)

    def test_recovers_only_with_peers(self):
        """
        A kept node.id beside a missing database means a lost database, to
        be fetched back from peers; without --peers there is nothing to wait
        for, and the node is not left Syncing.
        """
        data_dir = self.data_dir()
        first = self.make("--data-dir", str(data_dir))
        first._opened(None)
        self.gone(first)
        second = self.gone(self.make("--data-dir", str(data_dir), "--peers", "127.0.0.1"))
        self.assertTrue(second.node.store.recover_if_empty)
        self.assertFalse(self.make("--data-dir", str(data_dir)).node.store.recover_if_empty)

    def test_second_node_on_data_dir_refused(self):
        """
        While a node holds its data directory, another start on it stops
        with one line naming the directory and the holder's pid; once the
        first is gone the directory can be used again.
        """
        data_dir = self.data_dir()
        first = self.make("--data-dir", str(data_dir))
        line = self.assertStops("--data-dir", "--data-dir", str(data_dir))
        self.assertIn(f"{data_dir} is in use by another p2pstore node (pid {os.getpid()})", line)
        self.assertIn("data directory of its own", line)
        self.gone(first)
        self.make("--data-dir", str(data_dir))

    def test_refused_start_leaves_lock_free(self):
        """
        A start refused for a bad option after the directory was locked
        does not keep it locked.
        """
        data_dir = self.data_dir()
        self.assertStops("--secret-file", "--data-dir", str(data_dir), "--secret-file", str(data_dir / "missing"))
        self.make("--data-dir", str(data_dir))

    def test_limits_accepted(self):
        """
        --max-line from 256 to 1 MiB, --sync in any case, and the port range
        ends are accepted.
        """
        for args, check in [
            (["--max-line", "256"], lambda s: s.max_line == 256),
            (["--max-line", "1048576"], lambda s: s.max_line == 1048576),
            (["--max-line", " 2048 "], lambda s: s.max_line == 2048),
            (["--sync", "NORMAL"], lambda s: s.sync == "normal"),
            (["--sync", "Full"], lambda s: s.sync == "full"),
            (["--peer-port", "65535"], lambda s: s.peer_port == "tcp:65535"),
            (["--peer-port", "tcp:1"], lambda s: s.peer_port == "tcp:1"),
        ]:
            self.assertTrue(check(parse_settings(options(*args), MemoryReactorClock())), args)

    def test_peers(self):
        """
        --peers takes comma-separated host[:port] entries, with port 12346
        by default, IPv6 addresses in brackets, and spaces or empty entries
        ignored.
        """
        settings = parse_settings(
            options(
                "--peers",
                "node-b, node-c.example.org:4000 ,,10.0.0.7,10.0.0.8:1,[::1],[2001:db8::2]:65535,[fe80::1%eth0]:7,",
            ),
            MemoryReactorClock(),
        )
        self.assertEqual(
            settings.peers,
            (
                Peer("node-b", 12346),
                Peer("node-c.example.org", 4000),
                Peer("10.0.0.7", 12346),
                Peer("10.0.0.8", 1),
                Peer("::1", 12346),
                Peer("2001:db8::2", 65535),
                Peer("fe80::1%eth0", 7),
            ),
        )
        self.assertEqual(
            [str(p) for p in settings.peers[3:6]],
            ["10.0.0.8:1", "[::1]:12346", "[2001:db8::2]:65535"],
        )


class BadOptionsTests(TapTestMixin, SynchronousTestCase):
    """
    Every bad value stops the start at once with one line naming the
    option: no traceback, and nothing made before the options are checked.
    """

    BAD_PORTS = [
        "0",
        "65536",
        "99999",
        "-1",
        "12 345",
        "",
        "tcp",
        "tcp:",
        "tcp:abc",
        "tcp:0",
        "tcp:99999",
        "tcp:port=70000",
        "tcp:interface=127.0.0.1:70000",
        "tcp:12345:bogus=1",
        "tcp6:99999:interface=\\:\\:1",
        "foo:1",
        "http://localhost:8000",
        "²",
        "١٢٣٤٥x",
        "9" * 5000,
    ]

    def test_bad_ports(self):
        """
        Ports out of range and unparsable endpoint descriptions stop the
        start naming the option, for each of the three ports.
        """
        for option in ["--sensor-port", "--peer-port", "--status-port"]:
            for value in self.BAD_PORTS:
                self.assertStops(option, option, value)

    def test_port_message(self):
        """
        The line says what is wrong: the range, or what a description looks
        like.
        """
        self.assertIn("99999", self.assertStops("--sensor-port", "--sensor-port", "99999"))
        self.assertIn("1-65535", self.assertStops("--sensor-port", "--sensor-port", "99999"))
        self.assertIn("tcp:12345:interface=127.0.0.1", self.assertStops("--status-port", "--status-port", "foo:1"))

    def test_nothing_created_on_bad_option(self):
        """
        A start stopped by a bad option value creates no data directory, no
        key and no node id.
        """
        for args in [
            ("--sensor-port", "99999"),
            ("--peer-port", "tcp:abc"),
            ("--status-port", "0"),
            ("--peers", "host:0"),
            ("--max-line", "10"),
            ("--sync", "off"),
        ]:
            data_dir = self.data_dir()
            secret = Path(self.mktemp())
            self.assertStops(args[0], "--data-dir", str(data_dir), "--secret-file", str(secret), *args)
            self.assertFalse(data_dir.exists(), args)
            self.assertFalse(secret.exists(), args)
            existing = self.data_dir()
            existing.mkdir()
            self.assertStops(args[0], "--data-dir", str(existing), *args)
            self.assertEqual(list(existing.iterdir()), [], args)

    def test_bad_peers(self):
        """
        A malformed peer address, in any position of the list, stops the
        start naming --peers and the bad entry.
        """
        for value in [
            "host:",
            "host:0",
            "host:65536",
            "host:abc",
            "host:-1",
            "host:1:2",
            "host:²",
            "host:" + "9" * 5000,
            "ho st",
            "-host",
            "host-",
            "a..b",
            ".host",
            "x" * 64,
            "::1",
            "::1:12346",
            "[::1",
            "[::1]x",
            "[::1]:",
            "[::1]:0",
            "[zz]",
            "[10.0.0.1]",
            "[]",
            "1.2.3.999",
            "256.0.0.1",
            "10.0.0",
            "12346",
            "http://host",
            "ok-host,bad host",
            "ok-host:1,other:70000",
        ]:
            message = self.assertStops("--peers", "--peers", value)
            self.assertIn(value.split(",")[-1][:100], message)

    def test_bad_max_line(self):
        """
        --max-line outside 256 bytes to 1 MiB (a shorter limit would refuse
        lines the protocol allows), or not a number, stops the start naming it.
        """
        for value in ["0", "63", "255", "1048577", "-5", "abc", "", "1e3", "1024.0", "1 024", "²", "9" * 5000]:
            self.assertStops("--max-line", "--max-line", value)

    def test_bad_sync(self):
        """
        --sync takes only full or normal.
        """
        for value in ["off", "extra", "", "0", "fully"]:
            message = self.assertStops("--sync", "--sync", value)
            self.assertIn("full", message)
            self.assertIn("normal", message)

    def test_data_dir_is_a_file(self):
        """
        A data directory that is a file stops the start naming --data-dir,
        and the file is untouched.
        """
        path = Path(self.mktemp())
        path.write_bytes(b"x")
        message = self.assertStops("--data-dir", "--data-dir", str(path))
        self.assertIn(str(path), message)
        self.assertEqual(path.read_bytes(), b"x")

    def test_data_dir_cannot_be_made(self):
        """
        A data directory that cannot be created stops the start naming
        --data-dir.
        """
        blocker = Path(self.mktemp())
        blocker.write_bytes(b"")
        self.assertStops("--data-dir", "--data-dir", str(blocker / "data"))

    def test_short_key(self):
        """
        A key file too short to be a key stops the start naming
        --secret-file, without showing the key.
        """
        secret = Path(self.mktemp())
        secret.write_bytes(b"tiny-secret")
        message = self.assertStops("--secret-file", "--secret-file", str(secret))
        self.assertNotIn("tiny-secret", message)

    def test_named_key_missing(self):
        """
        A --secret-file that does not exist stops the start rather than
        making a new key there: a typo must not cut the node off from its
        cluster. Nothing is created.
        """
        secret = Path(self.mktemp())
        message = self.assertStops("--secret-file", "--secret-file", str(secret))
        self.assertIn("does not exist", message)
        self.assertFalse(secret.exists())

    def test_unreadable_key(self):
        """
        A key file that cannot be read (here a directory, which root cannot
        read either) or created stops the start naming --secret-file.
        """
        directory = Path(self.mktemp())
        directory.mkdir()
        self.assertStops("--secret-file", "--secret-file", str(directory))
        blocker = Path(self.mktemp())
        blocker.write_bytes(b"")
        self.assertStops("--secret-file", "--secret-file", str(blocker / "cluster.key"))

    def test_node_id_disagrees(self):
        """
        A data directory whose node.id and database disagree stops the
        start with one line.
        """
        data_dir = self.data_dir()
        self.make("--data-dir", str(data_dir))
        (data_dir / NODE_ID_FILE).write_text("0123456789abcdef0123456789abcdef\n")
        conn = sqlite3.connect(data_dir / SELF_DB)
        conn.execute("CREATE TABLE server_id_fedcba9876543210fedcba9876543210 (x)")
        conn.commit()
        conn.close()
        self.assertStops("--data-dir", "--data-dir", str(data_dir))


class PortInUseTests(TapTestMixin, SynchronousTestCase):
    """
    A port another program holds stops the start with one line naming the
    option.
    """

    def busy_port(self) -> int:
        busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        return busy.getsockname()[1]

    def test_sensor_port_in_use(self):
        """
        When the sensor port is taken the start stops naming --sensor-port.
        """
        from twisted.internet import reactor

        port = self.busy_port()
        service = self.make(
            "--data-dir", str(self.data_dir()),
            "--sensor-port", f"tcp:{port}:interface=127.0.0.1",
            reactor=reactor,
        )
        error = self.assertRaises(SystemExit, service.sensors.privilegedStartService)
        self.assertNotIn("\n", error.code)
        self.assertTrue(error.code.startswith("p2pstore: --sensor-port"), error.code)
        self.assertIn(str(port), error.code)

    def test_status_port_in_use(self):
        """
        When the status port is taken the start stops naming --status-port.
        """
        from twisted.internet import reactor

        port = self.busy_port()
        service = self.make(
            "--data-dir", str(self.data_dir()),
            "--status-port", f"tcp:{port}:interface=127.0.0.1",
            reactor=reactor,
        )
        error = self.assertRaises(SystemExit, service.status.privilegedStartService)
        self.assertNotIn("\n", error.code)
        self.assertTrue(error.code.startswith("p2pstore: --status-port"), error.code)


class TwistdProcessTests(SynchronousTestCase):
    """
    What a user sees from the real ``twistd -n p2pstore``.
    """

    def test_bad_port_one_line(self):
        """
        ``twistd -n p2pstore --sensor-port 99999`` exits non-zero printing
        one line naming the option, no traceback, and creates nothing.
        """
        cwd, result = self.twistd("-n", "p2pstore", "--sensor-port", "99999")
        output = result.stdout.decode("utf-8", "replace")
        self.assertNotEqual(result.returncode, 0, output)
        self.assertNotIn("Traceback", output)
        self.assertEqual(len(output.strip().splitlines()), 1, output)
        self.assertIn("--sensor-port", output)
        self.assertIn("99999", output)
        self.assertFalse((cwd / "p2pstore-data").exists())

    def twistd(self, *args: str) -> tuple[Path, subprocess.CompletedProcess]:
        """
        Run twistd with these arguments in a new directory, output and
        errors together, no input.
        """
        cwd = Path(self.mktemp())
        cwd.mkdir()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(REPO), env.get("PYTHONPATH")]))
        result = subprocess.run(
            twistd_command() + list(args),
            cwd=cwd,
            env=env,
            stdin=subprocess.DEVNULL,
            stdout=subprocess.PIPE,
            stderr=subprocess.STDOUT,
            timeout=120,
        )
        return cwd, result

    def run_with_busy_port(self, *twistd_options: str) -> tuple[Path, subprocess.CompletedProcess, int]:
        busy = socket.socket(socket.AF_INET, socket.SOCK_STREAM)
        self.addCleanup(busy.close)
        busy.bind(("127.0.0.1", 0))
        busy.listen(1)
        port = busy.getsockname()[1]
        others = [f"tcp:{p}:interface=127.0.0.1" for p in free_ports(2)]
        cwd, result = self.twistd(
            *twistd_options,
            "p2pstore",
            "--sensor-port", f"tcp:{port}:interface=127.0.0.1",
            "--peer-port", others[0],
            "--status-port", others[1],
        )
        return cwd, result, port

    def test_port_in_use_foreground(self):
        """
        ``twistd -n p2pstore`` with its sensor port taken exits non-zero with
        one line naming the option and what to do, no traceback.
        """
        cwd, result, port = self.run_with_busy_port("-n", "--pidfile=")
        output = result.stdout.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 1, output)
        self.assertNotIn("Traceback", output)
        [line] = [line for line in output.splitlines() if "cannot listen" in line]
        self.assertIn(f"--sensor-port tcp:{port}", line)
        self.assertIn("choose a free port with --sensor-port", line)

    def test_port_in_use_daemon(self):
        """
        ``twistd p2pstore`` (a daemon) with its sensor port taken does not
        leave the command waiting: it exits 1 saying why, twistd.log has the
        whole line, and no pid file is left behind.
        """
        cwd, result, port = self.run_with_busy_port()
        output = result.stdout.decode("utf-8", "replace")
        self.assertEqual(result.returncode, 1, output)
        self.assertIn(f"--sensor-port tcp:{port}", output)
        self.assertIn("Address already in use", output)
        # The daemon reports, then removes its pid file and exits: the
        # command may return first.
        deadline = time.monotonic() + 30
        while (cwd / "twistd.pid").exists() and time.monotonic() < deadline:
            time.sleep(0.05)
        self.assertFalse((cwd / "twistd.pid").exists())
        log = (cwd / "twistd.log").read_text()
        self.assertIn("choose a free port with --sensor-port", log)


class ProcessSettingsTests(TapTestMixin, TestCase):
    """
    A running node tunes its process for latency (the GIL switch interval,
    the startup objects out of the garbage collector's reach) and puts both
    back when it stops.
    """

    @inlineCallbacks
    def test_restored_on_stop(self):
        from twisted.internet import reactor

        interval = sys.getswitchinterval()
        frozen = gc.get_freeze_count()
        ports = [f"tcp:{free_port()}:interface=127.0.0.1" for _ in range(3)]
        top = makeService(
            options(
                "--data-dir", str(self.data_dir()),
                "--sensor-port", ports[0], "--peer-port", ports[1], "--status-port", ports[2],
            ),
            reactor=reactor,
        )
        service = top.getServiceNamed("node")
        service.reactor = keeper = KeepRunning(reactor)
        top.startService()
        try:
            self.assertAlmostEqual(sys.getswitchinterval(), GIL_SWITCH_INTERVAL)
            self.assertGreater(gc.get_freeze_count(), frozen)
            yield service._opening
            self.assertFalse(keeper.stopped, "the node's store could not open: see the log")
            self.assertEqual(service.node.state, RUNNING)
        finally:
            yield top.stopService()
        self.assertEqual(sys.getswitchinterval(), interval)
        self.assertEqual(gc.get_freeze_count(), 0)
