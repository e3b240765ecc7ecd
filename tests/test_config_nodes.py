"""
Real ``twistd -n p2pstore --config FILE`` processes: a node started from a
config file alone, and one that a bad file stops.
"""

from __future__ import annotations

from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import TestCase

from .nodes import NodeExited, NodeProcess, send_lines


class ConfigFileNodeTests(TestCase):
    timeout = 120

    @inlineCallbacks
    def test_starts_from_the_file(self):
        """
        A node given only --config listens on the file's ports, keeps its
        files in the file's data directory (relative to the file) and
        takes the file's settings.
        """
        node = NodeProcess(self, config={"max-line": 512, "peers": []})
        # The command line names nothing but the file.
        self.assertEqual(node._args[node._args.index("p2pstore"):],
                         ["p2pstore", "--config", str(node.config_file)])
        self.assertIn('data-dir = "data"', node.config_file.read_text())
        status = yield node.start()
        self.assertEqual(status["state"], "Running")
        self.assertTrue((node.data_dir / "cluster.key").exists())
        answers = yield send_lines(node.sensor_port, [b"Temperature,39C", b"T," + b"1" * 600])
        self.assertEqual(answers[0], b"OK 1")
        self.assertTrue(answers[1].startswith(b"ERR line too long"), answers[1])
        code = yield node.stop()
        self.assertIn(f"{node.config_file.parent / 'data'}", node.log_text())
        self.assertLess(code, 0)

    @inlineCallbacks
    def test_bad_key_stops_the_start(self):
        """
        A file with an unknown key stops ``twistd -n p2pstore --config`` at
        once: it exits non-zero printing one line, the file, the key and
        the setting it is closest to, and creates nothing.
        """
        node = NodeProcess(self, config={"sensor_prot": 12345})
        error = yield self.assertFailure(node.start(), NodeExited)
        self.assertNotEqual(error.code, 0, error.log)
        # Before logging starts, so on the console only.
        console = error.log.split("--- console of run 1 ---\n", 1)[1]
        self.assertEqual(
            console.splitlines(),
            [f"p2pstore: {node.config_file}: unknown key 'sensor_prot' (did you mean 'sensor-port'?)"],
        )
        self.assertNotIn("Traceback", error.log)
        self.assertFalse(node.data_dir.exists())
