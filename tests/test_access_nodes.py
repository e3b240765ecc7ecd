"""
Access control on real twistd nodes: sensor tokens (with the simulator's
--token-file and a SIGHUP reload), and the HTTP bearer token of /readings.
"""

from __future__ import annotations

import re
import signal
from pathlib import Path

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from p2pstore.schema import SELF_DB, table_name

from .nodes import IncompleteAnswers, NodeProcess, send_lines, start_simulator, wait_for

KITCHEN = "kitchen-0123456789abcdef"
GARAGE = "garage-0123456789abcdef0"
HTTP_TOKEN = "http-0123456789abcdef0123"
LINE = b"Temperature,20C,2026-12-05 10:00:00.000001"


class SensorTokenNodeTests(TestCase):
    """
    A node started with --sensor-tokens and --http-token-file.
    """

    timeout = 120

    def setUp(self) -> None:
        self.files = Path(self.mktemp()).resolve()
        self.files.mkdir(parents=True)
        self.tokens = self.files / "sensors.tokens"
        self.tokens.write_text(f"# name token\nkitchen {KITCHEN}\n")
        http = self.files / "http.token"
        http.write_text(HTTP_TOKEN + "\n")
        for path in (self.tokens, http):
            path.chmod(0o600)
        self.node = NodeProcess(
            self, extra_args=["--sensor-tokens", str(self.tokens), "--http-token-file", str(http)]
        )

    def token_file(self, token: str) -> str:
        path = self.files / f"{token[:6]}.token"
        path.write_text(token + "\n")
        return str(path)

    def names(self) -> list:
        return self.node.query(
            SELF_DB, f"SELECT sensor_name, count(*) FROM {table_name(self.node.node_id)} GROUP BY 1"
        )

    @inlineCallbacks
    def test_without_token_refused(self):
        """
        Plain lines get ERR not authenticated, the connection is closed,
        nothing is stored, and the refusal is counted and logged.
        """
        yield self.node.start()
        try:
            answers = yield send_lines(self.node.sensor_port, [LINE, LINE])
        except IncompleteAnswers as e:
            answers = e.answers
        self.assertEqual(answers, [b"ERR not authenticated"])
        status = yield self.node.status()
        self.assertEqual(status["sensors"]["accepted"], 0)
        self.assertEqual(status["sensors"]["auth_failures"], 1)
        self.assertEqual(self.names(), [])
        self.assertIn("not authenticated", self.node.log_text())
        self.assertNotIn(KITCHEN, self.node.log_text())

    @inlineCallbacks
    def test_simulator_with_token(self):
        """
        sensor_simulator.py --token-file authenticates first; its readings
        are stored with the sensor's name. A wrong token is refused, said
        once, and stores nothing.
        """
        yield self.node.start()
        simulator = start_simulator(
            self, self.node.sensor_port, 5, extra_args=["--token-file", self.token_file(KITCHEN)]
        )
        code = yield simulator.wait_exit(30)
        self.assertEqual(code, 0, simulator.output)
        self.assertEqual(self.names(), [("kitchen", 5)])
        wrong = start_simulator(
            self, self.node.sensor_port, 5, extra_args=["--token-file", self.token_file("x" * 24)]
        )
        yield wait_for(lambda: "refused the token" in wrong.output, 20, "the simulator's refusal")
        self.assertEqual(wrong.output.count("refused the token"), 1)
        self.assertIn("ERR not authenticated", wrong.output)
        self.assertEqual(self.names(), [("kitchen", 5)])

    @inlineCallbacks
    def test_sighup_reload(self):
        """
        A sensor added to the tokens file gets in after SIGHUP, not before.
        """
        yield self.node.start()
        self.tokens.write_text(f"kitchen {KITCHEN}\ngarage {GARAGE}\n")
        try:
            before = yield send_lines(self.node.sensor_port, [b"AUTH " + GARAGE.encode(), LINE])
        except IncompleteAnswers as e:
            before = e.answers
        self.assertEqual(before, [b"ERR not authenticated"])
        self.node.signal(signal.SIGHUP)
        yield wait_for(
            lambda: len(re.findall(r"2 sensors", self.node.log_text())) >= 1, 20, "the reload's log line"
        )
        after = yield send_lines(self.node.sensor_port, [b"AUTH " + GARAGE.encode(), LINE])
        self.assertEqual(after, [b"OK auth garage", b"OK 1"])
        self.assertEqual(self.names(), [("garage", 1)])

    @inlineCallbacks
    def test_readings_need_bearer_token(self):
        """
        /readings answers 401 without the bearer token and 200 with it;
        /status stays open.
        """
        yield self.node.start()
        yield send_lines(self.node.sensor_port, [b"AUTH " + KITCHEN.encode(), LINE])
        code, body = yield self.node.get_json("/readings")
        self.assertEqual(code, 401)
        self.assertIn("Bearer", body["error"])
        self.assertNotIn("readings", body)
        status = yield self.node.status()
        self.assertEqual(status["origins"][self.node.node_id]["count"], 1)
