"""
Tests for ``twistd p2pstore --config FILE``: the file's settings under the
command line's, and the one line that stops a start.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.identity import KEY_FILE
from p2pstore.tap import Options, makeNode, parse_settings

EXAMPLE = Path(__file__).resolve().parent.parent / "p2pstore.example.toml"
TOKEN = "0123456789abcdef0123456789abcdef"


def options(*args: str) -> Options:
    config = Options()
    config.parseOptions(list(args))
    return config


class ConfigTapMixin:
    def write(self, text: str) -> Path:
        """
        A config file of ``text``, alone in a new directory.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        path = directory / "node.toml"
        path.write_text(text)
        return path

    def settings(self, *args: str):
        return parse_settings(options(*args), MemoryReactorClock())

    def assertStops(self, *args: str) -> str:
        """
        makeNode with these arguments stops the start with one line; return
        it without its ``p2pstore: `` prefix.
        """
        error = self.assertRaises(SystemExit, makeNode, options(*args), MemoryReactorClock())
        self.assertIsInstance(error.code, str)
        self.assertNotIn("\n", error.code)
        self.assertTrue(error.code.startswith("p2pstore: "), error.code)
        return error.code[len("p2pstore: "):]


class PrecedenceTests(ConfigTapMixin, SynchronousTestCase):
    """
    The command line wins over the file, which wins over the defaults.
    """

    def test_file_over_defaults(self):
        """
        The file's settings replace the defaults; those it does not give
        keep theirs.
        """
        path = self.write('sensor-port = 40001\nsync = "normal"\npeers = ["n2", "n3:5"]\n')
        settings = self.settings("--config", str(path))
        self.assertEqual(settings.sensor_port, "tcp:40001")
        self.assertEqual(settings.sync, "normal")
        self.assertEqual([str(p) for p in settings.peers], ["n2:12346", "n3:5"])
        self.assertEqual(settings.status_port, "tcp:8000")
        self.assertEqual(settings.max_line, 1024)

    def test_command_line_over_file(self):
        """
        An option on the command line wins over the file's, before or
        after --config.
        """
        path = self.write("sensor-port = 40001\nstatus-port = 40002\n")
        settings = self.settings("--sensor-port", "40003", "--config", str(path), "--status-port", "40004")
        self.assertEqual((settings.sensor_port, settings.status_port), ("tcp:40003", "tcp:40004"))

    def test_default_given_on_the_command_line_wins(self):
        """
        An option given on the command line with its default value still
        wins over the file: what was given counts, not what differs from
        the default.
        """
        path = self.write('sensor-port = 40001\nsync = "normal"\nmax-line = 2048\n')
        settings = self.settings(
            "--config", str(path), "--sensor-port", "12345", "--sync=full", "--max-line", "1024"
        )
        self.assertEqual(settings.sensor_port, "tcp:12345")
        self.assertEqual(settings.sync, "full")
        self.assertEqual(settings.max_line, 1024)

    def test_export_list_replaced(self):
        """
        --export on the command line replaces the file's whole list; without
        it, the file's list is used.
        """
        path = self.write('export = ["http://a.example/write?db=x", "http://b.example/write?db=x"]\n')
        self.assertEqual(
            [d.name for d in self.settings("--config", str(path)).exports],
            ["http://a.example/write?db=x", "http://b.example/write?db=x"],
        )
        settings = self.settings("--config", str(path), "--export", "http://c.example/write?db=x")
        self.assertEqual([d.name for d in settings.exports], ["http://c.example/write?db=x"])

    def test_without_config(self):
        """
        Without --config, the options are the settings as before.
        """
        settings = self.settings("--sensor-port", "40001")
        self.assertEqual(settings.sensor_port, "tcp:40001")
        self.assertEqual(settings, self.settings("--sensor-port", "40001", "--config", ""))

    def test_example_changes_nothing(self):
        """
        The example file, as it is, starts a node with every default.
        """
        self.assertEqual(self.settings("--config", str(EXAMPLE)), self.settings())


class FileNodeTests(ConfigTapMixin, SynchronousTestCase):
    """
    A node wired from a file finds its files beside it.
    """

    def test_relative_paths_beside_the_file(self):
        """
        The data directory, the key and the token files named relative in
        the file are found in the file's directory, whatever the working
        directory.
        """
        path = self.write(
            'data-dir = "data"\nsecret-file = "keys/cluster.key"\n'
            'sensor-tokens = "sensors.tokens"\nhttp-token-file = "http.token"\n'
        )
        here = path.parent
        (here / "keys").mkdir()
        (here / "keys" / "cluster.key").write_bytes(b"k" * 32)
        (here / "sensors.tokens").write_text(f"kitchen {TOKEN}\n")
        (here / "http.token").write_text(TOKEN + "\n")
        for name in ("keys/cluster.key", "sensors.tokens", "http.token"):
            (here / name).chmod(0o600)
        service = makeNode(options("--config", str(path)), MemoryReactorClock())
        self.addCleanup(service._lock.close)
        self.assertTrue((here / "data").is_dir())
        self.assertFalse((here / "data" / KEY_FILE).exists())
        self.assertEqual(service.node.store.path.parent, here / "data")
        self.assertEqual(service.node.access.tokens.path, here / "sensors.tokens")

    def test_command_line_paths_from_working_directory(self):
        """
        A path given on the command line stays relative to the working
        directory, as without a file.
        """
        path = self.write('data-dir = "data"\n')
        settings = self.settings("--config", str(path), "--data-dir", "elsewhere")
        self.assertEqual(settings.data_dir, Path("elsewhere"))


class StopTests(ConfigTapMixin, SynchronousTestCase):
    """
    A file that cannot be used stops the start with one line naming it.
    """

    def test_bad_value_from_the_file(self):
        """
        A bad value the file gives is named with the file and its key, and
        nothing is created.
        """
        path = self.write('data-dir = "data"\nsensor-port = 99999\n')
        line = self.assertStops("--config", str(path))
        self.assertEqual(line, f"{path}: sensor-port: port 99999 is out of range (1-65535)")
        self.assertFalse((path.parent / "data").exists())

    def test_bad_value_from_the_command_line(self):
        """
        A bad value on the command line keeps the command line's message,
        even with a file.
        """
        path = self.write('data-dir = "data"\nsensor-port = 40001\n')
        line = self.assertStops("--config", str(path), "--sensor-port", "99999")
        self.assertEqual(line, "--sensor-port: port 99999 is out of range (1-65535)")

    def test_bad_file_value_overridden(self):
        """
        A bad value in the file that the command line overrides does not
        stop the start: the file's value is not used.
        """
        path = self.write("sensor-port = 99999\n")
        self.assertEqual(
            self.settings("--config", str(path), "--sensor-port", "40001").sensor_port, "tcp:40001"
        )

    def test_file_problems(self):
        """
        An unknown key, a wrong type, bad TOML and a missing file each stop
        the start with one line naming the file.
        """
        for text, expected in [
            ("sensor_prot = 1\n", "unknown key 'sensor_prot' (did you mean 'sensor-port'?)"),
            ("max-line = [1]\n", "max-line: expected an integer, not an array"),
            ("sync = \n", "is not valid TOML: Invalid value (at line 1, column 8)"),
            ('sync = "sometimes"\n', "sync: 'sometimes' is not one of full, normal"),
            ('retain = "forever"\n', "retain: 'forever' is not a duration: give a number and a "
             "unit, ms, s, m, h or d (10s, 500ms, 5m)"),
        ]:
            path = self.write(text)
            self.assertEqual(self.assertStops("--config", str(path)), f"{path}: {expected}")
        missing = Path(self.mktemp()).absolute() / "node.toml"
        self.assertEqual(
            self.assertStops("--config", str(missing)),
            f"{missing}: cannot read it: No such file or directory",
        )

    def test_missing_token_file_named_in_the_file(self):
        """
        A file named in the config file that is missing is named with its
        resolved path, under the config file's key.
        """
        path = self.write('http-token-file = "http.token"\n')
        line = self.assertStops("--config", str(path))
        self.assertTrue(line.startswith(f"{path}: http-token-file: "), line)
        self.assertIn(str(path.parent / "http.token"), line)
