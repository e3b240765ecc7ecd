"""
Tests for p2pstore.config: a TOML config file read into the settings
mapping, and p2pstore.example.toml, which must list every setting with its
default.
"""

from __future__ import annotations

import os
import re
import tomllib
from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.config import KINDS, PATHS, ConfigFileError, read_config, settings_of
from p2pstore.settings import DEFAULTS, check_settings

REPO = Path(__file__).resolve().parent.parent
EXAMPLE = REPO / "p2pstore.example.toml"


class ConfigFileTestMixin:
    def write(self, text: str, name: str = "node.toml") -> Path:
        """
        A config file of ``text`` in a new directory.
        """
        directory = Path(self.mktemp()).absolute()
        directory.mkdir()
        path = directory / name
        path.write_text(text)
        return path

    def assertRefused(self, text: str, expected: str) -> ConfigFileError:
        """
        Reading a file of ``text`` fails with one line: the file's path,
        then ``expected``.
        """
        path = self.write(text)
        error = self.assertRaises(ConfigFileError, read_config, path)
        self.assertEqual(str(error), f"{path}: {expected}")
        self.assertNotIn("\n", str(error))
        return error


class ReadTests(ConfigFileTestMixin, SynchronousTestCase):
    """
    Each key takes the TOML types natural to it, given on as the command
    line would give it.
    """

    def test_every_setting_has_a_kind(self):
        """
        Every setting can be given in the file: a setting added to DEFAULTS
        without its kind here fails this test.
        """
        self.assertEqual(set(KINDS), set(DEFAULTS))

    def test_strings_and_integers(self):
        """
        Ports and counts may be integers or strings; both come out as the
        command line's strings.
        """
        path = self.write(
            'sensor-port = 12345\n'
            'peer-port = "tcp:12346:interface=127.0.0.1"\n'
            'max-line = 2048\n'
            'scrub-rate = "0"\n'
            'ack-timeout = "500ms"\n'
            'sync = "normal"\n'
        )
        self.assertEqual(
            read_config(path),
            {
                "sensor-port": "12345",
                "peer-port": "tcp:12346:interface=127.0.0.1",
                "max-line": "2048",
                "scrub-rate": "0",
                "ack-timeout": "500ms",
                "sync": "normal",
            },
        )

    def test_lists(self):
        """
        A list is an array of strings or the command line's comma-separated
        string; export, an option given once per destination, is a list.
        """
        path = self.write(
            'peers = ["a.example:12346", "tls:b.example"]\n'
            'sensor-allow = "10.0.0.0/8,fd00::/8"\n'
            'peer-tls-fingerprints = []\n'
            'export = ["http://a/write?db=x", "http://b/write?db=y"]\n'
        )
        self.assertEqual(
            read_config(path),
            {
                "peers": "a.example:12346,tls:b.example",
                "sensor-allow": "10.0.0.0/8,fd00::/8",
                "peer-tls-fingerprints": "",
                "export": ["http://a/write?db=x", "http://b/write?db=y"],
            },
        )
        self.assertEqual(read_config(self.write('export = "http://a/write?db=x"')),
                         {"export": ["http://a/write?db=x"]})

    def test_yes_no(self):
        """
        unterminated-readings, a yes or no, takes a boolean as well as its
        two words.
        """
        for text, value in [("true", "accept"), ("false", "refuse"), ('"refuse"', "refuse")]:
            self.assertEqual(
                read_config(self.write(f"unterminated-readings = {text}")),
                {"unterminated-readings": value},
            )

    def test_values_checked_as_the_command_line_is(self):
        """
        What the file gives, check_settings takes as it takes the command
        line's.
        """
        path = self.write('sensor-port = 40001\npeers = ["n2", "[::1]:5"]\nmax-line = 4096\n')
        settings = check_settings(read_config(path), MemoryReactorClock())
        self.assertEqual(settings.sensor_port, "tcp:40001")
        self.assertEqual([str(p) for p in settings.peers], ["n2:12346", "[::1]:5"])
        self.assertEqual(settings.max_line, 4096)

    def test_empty_file(self):
        """
        An empty file (or one of comments) sets nothing.
        """
        self.assertEqual(read_config(self.write("# nothing yet\n")), {})


class PathTests(ConfigFileTestMixin, SynchronousTestCase):
    """
    Relative paths are relative to the file's directory, since a service
    runs from /.
    """

    def test_relative_to_the_file(self):
        """
        Every path setting, given relative, is made relative to the
        directory the file is in.
        """
        path = self.write("".join(f'{key} = "sub/{key}"\n' for key in sorted(PATHS)))
        self.assertEqual(
            read_config(path), {key: str(path.parent / "sub" / key) for key in PATHS}
        )
        self.assertEqual(
            PATHS,
            {"data-dir", "secret-file", "sensor-tokens", "http-token-file", "tls-cert",
             "tls-key", "peer-ca", "export-token-file"},
        )

    def test_file_named_relative(self):
        """
        A file named by a relative path still puts the paths in it under
        its own directory, absolutely.
        """
        path = self.write('data-dir = "data"\n')
        self.addCleanup(os.chdir, os.getcwd())
        os.chdir(path.parent.parent)
        relative = Path(path.parent.name) / path.name
        self.assertEqual(read_config(relative), {"data-dir": str(path.parent / "data")})

    def test_absolute_and_empty_kept(self):
        """
        An absolute path is kept; an empty one stays empty (not set), not
        the file's directory.
        """
        path = self.write('data-dir = "/var/lib/p2pstore"\nsecret-file = ""\n')
        self.assertEqual(read_config(path), {"data-dir": "/var/lib/p2pstore", "secret-file": ""})

    def test_other_values_untouched(self):
        """
        A value that is not a path, such as a unix: endpoint or a URL, is
        given on as written.
        """
        path = self.write('status-port = "unix:status.sock"\nretain = "30d"\n')
        self.assertEqual(read_config(path), {"status-port": "unix:status.sock", "retain": "30d"})


class RefusedTests(ConfigFileTestMixin, SynchronousTestCase):
    """
    A file that cannot be used is refused with one line naming the file,
    the key when there is one, and what is wrong.
    """

    def test_unknown_key(self):
        """
        An unknown key is named, with the setting it is closest to.
        """
        error = self.assertRefused(
            "sensor_prot = 1\n", "unknown key 'sensor_prot' (did you mean 'sensor-port'?)"
        )
        self.assertIsNone(error.setting)
        self.assertRefused("peer_port = 1\n", "unknown key 'peer_port' (did you mean 'peer-port'?)")
        self.assertRefused(
            "colour = 1\n", "unknown key 'colour' (see p2pstore.example.toml)"
        )

    def test_table(self):
        """
        A [table] is refused as one, with where the settings go: the keys
        after a table's line are in that table, not settings.
        """
        self.assertRefused(
            '[tls]\ncert = "node.crt"\n',
            "unknown table [tls]: the settings are keys at the top of the file, before any "
            "[table] line (sensor-port = 12345)",
        )

    def test_config_key(self):
        """
        The file cannot name another file.
        """
        self.assertRefused(
            'config = "other.toml"\n',
            "'config' cannot be set in a config file: give --config on the command line",
        )

    def test_wrong_types(self):
        """
        A value of another type is refused, naming the key, the type it
        needs and the type it has.
        """
        port = "a port number (an integer) or an endpoint description (a string)"
        for text, expected in [
            ("sensor-port = [1]", f"sensor-port: expected {port}, not an array"),
            ("sensor-port = 1.5", f"sensor-port: expected {port}, not a float (1.5)"),
            ("max-line = true", "max-line: expected an integer, not a boolean (true)"),
            ("sync = 1", "sync: expected a string, not an integer (1)"),
            (
                "ack-timeout = 10",
                'ack-timeout: expected a duration with its unit, as a string ("10s", "5m"), '
                "not an integer (10)",
            ),
            (
                "max-disk = 500000000",
                'max-disk: expected a size with its unit, as a string ("500MB", "2GiB"), '
                "not an integer (500000000)",
            ),
            ("data-dir = 1", "data-dir: expected a path: a string, not an integer (1)"),
            ("peers = 12346", "peers: expected a string or an array of strings, not an integer (12346)"),
            ("peers = { a = 1 }", "peers: expected a string or an array of strings, not a table"),
            ("peers = [\"a\", 1]", "peers: expected an array of strings, but it holds an integer (1) (1)"),
            (
                "unterminated-readings = 1",
                'unterminated-readings: expected true, false, or a string ("accept" or "refuse"), '
                "not an integer (1)",
            ),
            ("retain = 2024-01-01", "retain: expected a duration with its unit, as a string "
             '("10s", "5m"), not a date or time'),
        ]:
            error = self.assertRefused(text + "\n", expected)
            self.assertEqual(error.setting, text.split(" ")[0])

    def test_not_toml(self):
        """
        A syntax error is named with its line and column.
        """
        self.assertRefused(
            'sync = "full"\nsensor-port =\n',
            "is not valid TOML: Invalid value (at line 2, column 14)",
        )
        self.assertRefused(
            "sync = 'full'\nsync = 'normal'\n",
            "is not valid TOML: Cannot overwrite a value (at line 2, column 16)",
        )

    def test_not_utf8(self):
        """
        A file that is not UTF-8 says so.
        """
        path = self.write("")
        path.write_bytes(b'sync = "\xff"\n')
        error = self.assertRaises(ConfigFileError, read_config, path)
        self.assertEqual(str(error), f"{path}: is not UTF-8 text (byte 8)")

    def test_missing_or_unreadable(self):
        """
        A missing file, a directory, or a file this user may not read:
        the reason is given.
        """
        path = self.write("")
        missing = path.parent / "missing.toml"
        error = self.assertRaises(ConfigFileError, read_config, missing)
        self.assertEqual(str(error), f"{missing}: cannot read it: No such file or directory")
        error = self.assertRaises(ConfigFileError, read_config, path.parent)
        self.assertEqual(str(error), f"{path.parent}: cannot read it: Is a directory")
        path.chmod(0)
        self.addCleanup(path.chmod, 0o600)
        try:
            path.read_bytes()
        except PermissionError:
            error = self.assertRaises(ConfigFileError, read_config, path)
            self.assertEqual(str(error), f"{path}: cannot read it: Permission denied")
        # Root reads any file: then there is nothing more to check.


# A setting's line in the example: commented out, at the start of a line.
_SETTING_LINE = re.compile(r"^# ([a-z][a-z-]*) = (.*)$", re.MULTILINE)


def uncommented(text: str) -> str:
    """
    The example with its settings' lines uncommented.
    """
    return _SETTING_LINE.sub(
        lambda m: f"{m.group(1)} = {m.group(2)}" if m.group(1) in DEFAULTS else m.group(0), text
    )


class ExampleTests(SynchronousTestCase):
    """
    p2pstore.example.toml lists every setting with its default, commented
    out, so that it stays right as settings are added.
    """

    def setUp(self) -> None:
        self.text = EXAMPLE.read_text()

    def test_parses_as_nothing(self):
        """
        The example as it is sets nothing: a copy of it starts a node with
        the defaults.
        """
        self.assertEqual(read_config(EXAMPLE), {})

    def test_every_setting_once(self):
        """
        Every setting has exactly one line of its own, and every such line
        is a setting's.
        """
        keys = [m.group(1) for m in _SETTING_LINE.finditer(self.text)]
        self.assertEqual(sorted(keys), sorted(DEFAULTS))

    def test_defaults_stated(self):
        """
        Uncommented, the example gives each setting its default; a setting
        with no default shows an example value, and its comment says
        "Default: none" (or what none means).
        """
        table = tomllib.loads(uncommented(self.text))
        given = settings_of(table, EXAMPLE)
        for key, default in DEFAULTS.items():
            if default is None:
                block = self.text[: self.text.index(f"# {key} = ")].rsplit("\n\n", 1)[-1]
                self.assertIn("Default: none", block, key)
            elif key in PATHS:
                self.assertEqual(Path(given[key]), EXAMPLE.parent / default, key)
            elif key == "export":
                self.assertEqual(given[key], list(default), key)
            else:
                self.assertEqual(given[key], default, key)

    def test_examples_are_good_values(self):
        """
        Uncommented, every value of the example is of the right type, and
        the settings with defaults give the default settings.
        """
        table = tomllib.loads(uncommented(self.text))
        given = settings_of(table, EXAMPLE)
        with_defaults = {
            key: value for key, value in given.items()
            if DEFAULTS[key] is not None and key not in PATHS
        }
        reactor = MemoryReactorClock()
        self.assertEqual(check_settings(with_defaults, reactor), check_settings({}, reactor))

    def test_in_the_readme(self):
        """
        The README holds the example as it is.
        """
        readme = (REPO / "README.md").read_text()
        self.assertIn(f"```toml\n{self.text}```\n", readme)
