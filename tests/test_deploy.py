"""
Tests for deploy/: the systemd unit passes ``systemd-analyze verify`` and
runs a command line twistd takes, and the sysusers file makes the user the
unit runs as.
"""

from __future__ import annotations

import shlex
import shutil
import subprocess
import sys
from pathlib import Path

from twisted.scripts.twistd import ServerOptions
from twisted.trial.unittest import SynchronousTestCase

REPO = Path(__file__).resolve().parent.parent
UNIT = REPO / "deploy" / "p2pstore.service"
SYSUSERS = REPO / "deploy" / "p2pstore.sysusers"
# Where the README's deployment installs twistd (a virtualenv).
INSTALLED_TWISTD = "/opt/p2pstore/bin/twistd"


def systemd_tool(name: str) -> str:
    """
    The path of a systemd tool; fail (never skip) when it is missing.
    """
    path = shutil.which(name)
    if path is None:
        raise AssertionError(
            f"{name} is not installed: run scripts/install-systemd-analyze "
            "(Debian's systemd package), as scripts/test does"
        )
    return path


def unit_settings(text: str) -> dict[str, list[str]]:
    """
    Every ``Key=value`` of a unit file, by key (in the order given), with
    continued lines joined as systemd joins them.
    """
    settings: dict[str, list[str]] = {}
    logical = ""
    for line in text.splitlines():
        if not logical and (not line.strip() or line.lstrip().startswith(("#", ";", "["))):
            continue
        if line.endswith("\\"):
            logical += line[:-1] + " "
            continue
        key, _, value = (logical + line).partition("=")
        settings.setdefault(key.strip(), []).append(value.strip())
        logical = ""
    return settings


def twistd_here() -> str:
    """
    The twistd script of the Python running the tests.
    """
    beside = Path(sys.executable).parent / "twistd"
    found = str(beside) if beside.exists() else shutil.which("twistd")
    if found is None:
        raise AssertionError(f"no twistd next to {sys.executable} or on PATH: pip install twisted")
    return found


class UnitTests(SynchronousTestCase):
    """
    deploy/p2pstore.service.
    """

    def setUp(self) -> None:
        self.text = UNIT.read_text()
        self.settings = unit_settings(self.text)

    def test_verify(self) -> None:
        """
        C{systemd-analyze verify} finds nothing wrong: no error, and no
        warning either (it exits 0 for an unknown key or a bad value, which
        systemd ignores). It checks that ExecStart's binary exists, so the
        unit verified is a copy whose twistd is this Python's, the one
        change made to it.
        """
        analyze = systemd_tool("systemd-analyze")
        self.assertEqual(self.text.count(INSTALLED_TWISTD), 1, "ExecStart names the installed twistd")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        copy = directory / UNIT.name
        copy.write_text(self.text.replace(INSTALLED_TWISTD, twistd_here()))
        done = subprocess.run(
            [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
        )
        self.assertEqual(
            (done.returncode, done.stdout + done.stderr), (0, ""), f"systemd-analyze verify {copy}"
        )

    def test_verify_catches_a_missing_twistd(self) -> None:
        """
        The check is real: where the unit's twistd is not installed (as on a
        machine without the README's virtualenv), verify fails naming it.
        """
        analyze = systemd_tool("systemd-analyze")
        directory = Path(self.mktemp()).resolve()
        directory.mkdir()
        copy = directory / UNIT.name
        copy.write_text(self.text.replace(INSTALLED_TWISTD, str(directory / "no-twistd")))
        done = subprocess.run(
            [analyze, "verify", str(copy)], capture_output=True, text=True, timeout=60
        )
        self.assertNotEqual(done.returncode, 0)
        self.assertIn("no-twistd is not executable", done.stdout + done.stderr)

    def test_service(self) -> None:
        """
        The node runs as the p2pstore user from /var/lib/p2pstore, is
        restarted on failure, and is stopped by SIGTERM with time for the
        clean stop (the node waits up to 5 s for each slow sensor).
        """
        expected = {
            "User": ["p2pstore"],
            "Group": ["p2pstore"],
            "StateDirectory": ["p2pstore"],
            "WorkingDirectory": ["/var/lib/p2pstore"],
            "Restart": ["on-failure"],
            "KillSignal": ["SIGTERM"],
            "Type": ["simple"],
            "ProtectSystem": ["strict"],
            "ReadWritePaths": ["/var/lib/p2pstore"],
            "NoNewPrivileges": ["yes"],
            "After": ["network-online.target"],
            "WantedBy": ["multi-user.target"],
        }
        self.assertEqual({key: self.settings.get(key) for key in expected}, expected)
        (timeout,) = self.settings["TimeoutStopSec"]
        self.assertTrue(timeout.endswith("s"), timeout)
        self.assertGreaterEqual(int(timeout[:-1]), 30)

    def test_command_line(self) -> None:
        """
        ExecStart is a command line twistd and the p2pstore plugin take: in
        the foreground, logging to stdout (the journal), no pid file, the
        config file from /etc/p2pstore and the data directory the sandbox
        lets it write.
        """
        (exec_start,) = self.settings["ExecStart"]
        argv = shlex.split(exec_start)
        self.assertEqual(argv[0], INSTALLED_TWISTD)
        options = ServerOptions()
        options.parseOptions(argv[1:])
        self.assertEqual(
            (options["nodaemon"], options["pidfile"], options["logfile"], options.subCommand),
            (True, "", "-", "p2pstore"),
        )
        node = options.subOptions
        self.assertEqual(node["data-dir"], "/var/lib/p2pstore")
        self.assertEqual(node["config"], "/etc/p2pstore/node.toml")
        self.assertIn("data-dir", node.given, "the command line's data-dir wins over the file's")


class SysusersTests(SynchronousTestCase):
    """
    deploy/p2pstore.sysusers.
    """

    def test_creates_the_user(self) -> None:
        """
        C{systemd-sysusers}, tried on an empty root, would make the p2pstore
        group and user, and finds nothing wrong.
        """
        sysusers = systemd_tool("systemd-sysusers")
        root = Path(self.mktemp()).resolve()
        root.mkdir()
        done = subprocess.run(
            [sysusers, "--dry-run", f"--root={root}", str(SYSUSERS)],
            capture_output=True, text=True, timeout=60,
        )
        output = done.stdout + done.stderr
        self.assertEqual(done.returncode, 0, output)
        self.assertIn("Creating group 'p2pstore'", output)
        self.assertIn("Creating user 'p2pstore' (p2pstore node)", output)
        self.assertNotIn(str(SYSUSERS), output, "no complaint about a line of the file")
