"""
Tests for p2pstore.settings: check_settings over a plain mapping of setting
names to values, as a config file would give it.
"""

from __future__ import annotations

from pathlib import Path

from twisted.internet.testing import MemoryReactorClock
from twisted.trial.unittest import SynchronousTestCase

from p2pstore.settings import DEFAULTS, ConfigError, Peer, Settings, check_settings, parse_duration


class CheckSettingsTests(SynchronousTestCase):
    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def check(self, given: dict) -> Settings:
        return check_settings(given, self.reactor)

    def test_defaults(self) -> None:
        """
        Settings not given take their defaults.
        """
        self.assertEqual(
            self.check({}),
            Settings(
                data_dir=Path("./p2pstore-data"),
                sensor_port="tcp:12345",
                peer_port="tcp:12346",
                status_port="tcp:8000",
                peers=(),
                secret_file=None,
                max_line=1024,
                sync="full",
            ),
        )

    def test_some_given(self) -> None:
        """
        What is given replaces only its own default.
        """
        settings = self.check({"sensor-port": "tcp:4000:interface=127.0.0.1", "peers": "a.example, b:7"})
        self.assertEqual(settings.sensor_port, "tcp:4000:interface=127.0.0.1")
        self.assertEqual(settings.peers, (Peer("a.example", 12346), Peer("b", 7)))
        self.assertEqual(settings.status_port, "tcp:8000")
        self.assertEqual(settings.max_line, 1024)

    def test_unknown_setting(self) -> None:
        """
        A key that is not a setting is a ConfigError naming that key.
        """
        error = self.assertRaises(ConfigError, self.check, {"sensor_port": "1", "sync": "full"})
        self.assertEqual(error.setting, "sensor_port")
        self.assertTrue(str(error).startswith("--sensor_port: is not a setting"), str(error))
        for name in DEFAULTS:
            self.assertIn(name, str(error))

    def test_typed_values(self) -> None:
        """
        An int port or max-line, and a Path, are accepted as their string
        forms are.
        """
        typed = {"sensor-port": 4000, "peer-port": 4001, "status-port": 4002, "max-line": 2048,
                 "data-dir": Path("/tmp/node"), "secret-file": Path("/tmp/key")}
        text = {name: str(value) for name, value in typed.items()}
        self.assertEqual(self.check(typed), self.check(text))
        self.assertEqual(self.check(typed).max_line, 2048)
        self.assertEqual(self.check(typed).sensor_port, "tcp:4000")
        self.assertEqual(self.check(typed).secret_file, Path("/tmp/key"))

    def test_normalised(self) -> None:
        """
        Spaces around values and the case of sync do not matter.
        """
        settings = self.check({"sync": " NORMAL ", "max-line": " 4096 ", "sensor-port": " 4000 "})
        self.assertEqual((settings.sync, settings.max_line, settings.sensor_port), ("normal", 4096, "tcp:4000"))

    def test_bad_values(self) -> None:
        """
        Each bad value is a ConfigError whose ``setting`` is the setting's
        name and whose str() is ``--<setting>: <problem>``.
        """
        bad = [
            ("sensor-port", "0"),
            ("sensor-port", 70000),
            ("sensor-port", "nonsense:x"),
            ("peer-port", "tcp:99999"),
            ("status-port", "eighty"),
            ("peers", "host:99999"),
            ("peers", "[::1"),
            ("peers", "[not-v6]:12"),
            ("peers", "300.1.1.1"),
            ("peers", "bad_host"),
            ("peers", "host:port"),
            ("max-line", "100"),
            ("max-line", 10**7),
            ("max-line", "ten"),
            ("max-line", "²⁵⁶"),
            ("sync", "sometimes"),
            ("scrub-rate", "-1"),
            ("scrub-rate", "fast"),
            ("scrub-rate", "1000001"),
        ]
        for setting, value in bad:
            error = self.assertRaises(ConfigError, self.check, {setting: value})
            self.assertEqual(error.setting, setting, f"{setting}={value!r}")
            self.assertTrue(error.problem, f"{setting}={value!r}")
            self.assertEqual(str(error), f"--{setting}: {error.problem}")
            self.assertNotIn("\n", str(error))


class AckSettingsTests(SynchronousTestCase):
    """
    --ack-copies, the nodes that must hold a reading before its OK, and
    --ack-timeout, how long its answer waits for them.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()

    def check(self, given: dict) -> Settings:
        return check_settings(given, self.reactor)

    def assertRefused(self, setting: str, value) -> ConfigError:
        error = self.assertRaises(ConfigError, self.check, {setting: value})
        self.assertEqual(error.setting, setting, f"{setting}={value!r}")
        self.assertTrue(str(error).startswith(f"--{setting}: "), str(error))
        self.assertNotIn("\n", str(error))
        return error

    def test_defaults(self) -> None:
        """
        By default an OK waits for this node's disk alone, and an answer
        waiting for copies waits 10 seconds.
        """
        settings = self.check({})
        self.assertEqual((settings.ack_copies, settings.ack_timeout), (1, 10.0))

    def test_ack_copies(self) -> None:
        """
        A number of nodes from 1 to 100, as text or a number, spaces around
        it allowed.
        """
        for value, copies in [("2", 2), (" 3 ", 3), (1, 1), ("100", 100)]:
            self.assertEqual(self.check({"ack-copies": value}).ack_copies, copies, repr(value))

    def test_ack_copies_refused(self) -> None:
        """
        Zero, more than 100, a negative number, text or a non-ASCII digit
        is refused, naming --ack-copies.
        """
        for value in ["0", "101", 0, "-1", "two", "²", "", "1.5"]:
            self.assertRefused("ack-copies", value)

    def test_ack_timeout(self) -> None:
        """
        A duration with its unit: 10s, 500ms, 1m, and fractions; case and
        spaces around do not matter.
        """
        for value, seconds in [("10s", 10), ("500ms", 0.5), ("1m", 60), ("1.5s", 1.5),
                               (" 2S ", 2), ("1h", 3600)]:
            self.assertEqual(self.check({"ack-timeout": value}).ack_timeout, seconds, value)

    def test_ack_timeout_refused(self) -> None:
        """
        A number without its unit, text, a duration beyond an hour, or one
        too short to wait for any peer is refused, naming --ack-timeout.
        """
        for value in ["10", "ten", "2h", "1d", "0s", "5ms", "-1s", "", "1 s", "1e3s", 10]:
            self.assertRefused("ack-timeout", value)

    def test_commit_interval(self) -> None:
        """
        --commit-interval is 40 ms by default, may be 0 (commit as soon as
        the commit before has) and at most a second.
        """
        self.assertEqual(self.check({}).commit_interval, 0.04)
        for value, seconds in [("0ms", 0), ("20ms", 0.02), ("1s", 1), ("0.5s", 0.5)]:
            self.assertEqual(self.check({"commit-interval": value}).commit_interval, seconds, value)

    def test_commit_interval_refused(self) -> None:
        """
        A number without its unit, text, or more than a second (every
        answer would wait that long) is refused, naming --commit-interval.
        """
        for value in ["40", "fast", "2s", "1m", "-1ms", ""]:
            self.assertRefused("commit-interval", value)

    def test_parse_duration(self) -> None:
        """
        parse_duration gives seconds for each unit, within its bounds, and
        names the setting it checks when refusing.
        """
        self.assertEqual(parse_duration("x", "12h", 0, 86400), 43200)
        self.assertEqual(parse_duration("x", "1d", 0, 86400), 86400)
        self.assertEqual(parse_duration("x", "250ms", 0, 1), 0.25)
        error = self.assertRaises(ConfigError, parse_duration, "scrub-every", "2d", 0, 86400)
        self.assertEqual(error.setting, "scrub-every")
        self.assertIn("'2d'", str(error))


class AccessSettingsTests(SynchronousTestCase):
    """
    --sensor-tokens, --sensor-allow and --http-token-file are checked with
    the other settings; a bad token file names the setting, the file and
    the line.
    """

    def setUp(self) -> None:
        self.reactor = MemoryReactorClock()
        self.directory = Path(self.mktemp())
        self.directory.mkdir()

    def write(self, name: str, text: str) -> Path:
        path = self.directory / name
        path.write_text(text)
        return path

    def test_defaults(self) -> None:
        """
        By default no tokens are asked for and sensors may come from anywhere.
        """
        settings = check_settings({}, self.reactor)
        self.assertEqual(
            (settings.sensor_tokens, settings.sensor_allow, settings.http_token_file), (None, (), None)
        )

    def test_good(self) -> None:
        """
        Good files give their paths, and the networks are parsed.
        """
        tokens = self.write("sensors", "boiler " + "b" * 32 + "\n")
        http = self.write("http", "h" * 32 + "\n")
        settings = check_settings(
            {"sensor-tokens": str(tokens), "http-token-file": str(http), "sensor-allow": "127.0.0.0/8,::1"},
            self.reactor,
        )
        self.assertEqual(settings.sensor_tokens, tokens)
        self.assertEqual(settings.http_token_file, http)
        self.assertEqual([str(n) for n in settings.sensor_allow], ["127.0.0.0/8", "::1/128"])

    def test_bad(self) -> None:
        """
        A bad line, a missing file or a bad network is a ConfigError naming
        the setting and what is wrong.
        """
        bad_tokens = self.write("sensors", "# sensors\nboiler " + "b" * 32 + "\nattic\n")
        cases = [
            ("sensor-tokens", str(bad_tokens), f"{bad_tokens} line 3: expected 'name token'"),
            ("sensor-tokens", str(self.directory / "missing"), "no such file"),
            ("http-token-file", str(self.write("http", "short\n")), "at least 16 characters"),
            ("sensor-allow", "10.0.0.0/8,10.0.0.300", "'10.0.0.300' is not an IPv4 or IPv6 network"),
        ]
        for setting, value, problem in cases:
            error = self.assertRaises(ConfigError, check_settings, {setting: value}, self.reactor)
            self.assertEqual(error.setting, setting)
            self.assertIn(problem, str(error))
            self.assertTrue(str(error).startswith(f"--{setting}: "), str(error))
