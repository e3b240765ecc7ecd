"""
The answers at the top of the monitor's page, from canned node statuses and
no network: are all readings copied, and what else is wrong, and since when.
"""

from __future__ import annotations

from twisted.trial.unittest import SynchronousTestCase

from web_monitor import create_app
from web_monitor.addresses import parse_server
from web_monitor.answers import parse_status
from web_monitor.health import COPY_GRACE_S, Memory, copies_wanted, health, remember
from web_monitor.poller import DOWN, ServerResult

from .test_monitor import ID_A, ID_B, ID_C, export_status, node_status

ALL_UP = [
    {"address": "127.0.0.1:22346", "node_id": ID_B, "connected": True},
]


def answered(port: int, **status) -> ServerResult:
    status.setdefault("peers", ALL_UP)
    parsed = parse_status(node_status(**status))
    return ServerResult(parse_server(f"127.0.0.1:{port}"), parsed.state, status=parsed, checked_at=0.0,
                        last_answer_at=0.0, last_node_id=parsed.node_id)


def down(port: int, last_answer_at=None) -> ServerResult:
    return ServerResult(parse_server(f"127.0.0.1:{port}"), DOWN, "connection refused", checked_at=0.0,
                        last_answer_at=last_answer_at)


class Polls:
    """
    The monitor's memory through a series of polls at given times.
    """

    def __init__(self):
        self.memory = Memory()

    def at(self, now: float, *results) -> dict:
        self.memory = remember(self.memory, results, now)
        return health(results, self.memory, now)


class CopiesTests(SynchronousTestCase):
    def test_copies_wanted(self):
        """
        The nodes' --ack-copies when any asks more than 1; else 2 with two
        or more servers, 1 with one.
        """
        a, b = answered(8000), answered(8001, node_id=ID_B)
        self.assertEqual(copies_wanted([a]), 1)
        self.assertEqual(copies_wanted([a, b]), 2)
        self.assertEqual(copies_wanted([a, answered(8001, node_id=ID_B, ack_copies=3)]), 3)
        self.assertEqual(copies_wanted([a, down(8001)]), 2)

    def test_all_copied(self):
        """
        Every origin held in full by two servers: one green line saying so.
        """
        origins = {ID_A: 10, ID_B: 4}
        answer = Polls().at(100.0, answered(8000, origins=origins), answered(8001, node_id=ID_B, origins=origins))
        self.assertEqual(answer["level"], "ok")
        self.assertEqual(answer["headline"], "Every reading has at least 2 copies.")
        self.assertEqual(answer["copies_level"], "ok")
        self.assertEqual(answer["items"], [])

    def test_fresh_readings_are_on_their_way(self):
        """
        Readings younger than the grace without their second copy are not
        reported: peers are copying them.
        """
        polls = Polls()
        polls.at(100.0, answered(8000, origins={ID_A: 10}), answered(8001, node_id=ID_B, origins={ID_A: 10, ID_B: 0}))
        answer = polls.at(105.0, answered(8000, origins={ID_A: 15}),
                          answered(8001, node_id=ID_B, origins={ID_A: 10, ID_B: 0}))
        self.assertEqual(answer["level"], "ok")

    def test_under_copied_since(self):
        """
        An origin whose readings past a position stay on one server is
        named in red, with how many and since the first of them appeared.
        """
        polls = Polls()
        polls.at(100.0, answered(8000, origins={ID_A: 10}), answered(8001, node_id=ID_B, origins={ID_A: 10, ID_B: 0}))
        for now, count in ((110.0, 12), (120.0, 20), (200.0, 25)):
            answer = polls.at(now, answered(8000, origins={ID_A: count}),
                              answered(8001, node_id=ID_B, origins={ID_A: 10, ID_B: 0}))
        self.assertEqual(answer["level"], "bad")
        self.assertEqual(answer["headline"], "Not every reading has 2 copies:")
        [item] = answer["items"]
        self.assertEqual(item["kind"], "copies")
        self.assertEqual(item["text"], "127.0.0.1:8000: 15 readings on fewer than 2 servers (positions 11 to 25)")
        # Position 11 first existed at the poll of 110.
        self.assertEqual(item["since"], "1 min")
        # Once copied, green again.
        answer = polls.at(210.0, answered(8000, origins={ID_A: 25}),
                          answered(8001, node_id=ID_B, origins={ID_A: 25, ID_B: 0}))
        self.assertEqual(answer["level"], "ok")
        self.assertEqual(polls.memory.steps[ID_A], ((200.0, 25),))

    def test_grace(self):
        """
        The same origin is reported only once its oldest uncopied reading
        is older than the grace.
        """
        polls = Polls()
        lone = lambda n: answered(8000, origins={ID_A: n})
        other = answered(8001, node_id=ID_B, origins={ID_A: 5, ID_B: 0})
        polls.at(0.0, lone(5), other)
        self.assertEqual(polls.at(10.0, lone(6), other)["items"], [])
        self.assertEqual(polls.at(10.0 + COPY_GRACE_S - 1, lone(7), other)["items"], [])
        self.assertEqual(len(polls.at(10.0 + COPY_GRACE_S, lone(8), other)["items"]), 1)


class ConditionTests(SynchronousTestCase):
    def test_down_since_last_answer(self):
        """
        A server that does not answer is in red, for as long as since its
        last answer; the copies line says it counts only those answering,
        in orange rather than the green of an all-clear.
        """
        answer = Polls().at(400.0, answered(8000, origins={ID_A: 0}), down(8001, last_answer_at=100.0))
        self.assertEqual(answer["level"], "bad")
        self.assertEqual(answer["headline"], "Every reading has at least 2 copies on the servers answering (1 not).")
        self.assertEqual(answer["copies_level"], "warn")
        [item] = answer["items"]
        self.assertEqual(
            (item["kind"], item["text"], item["since"]),
            ("down", "127.0.0.1:8001 does not answer (down: connection refused)", "5 min"),
        )

    def test_first_seen(self):
        """
        A condition with no time of its own lasts since the poll that first
        saw it; gone and back, it starts again.
        """
        polls = Polls()
        troubled = [{"address": "127.0.0.1:22346", "node_id": ID_B, "connected": True, "trouble": "bad MAC"}]
        polls.at(0.0, answered(8000, origins={ID_A: 0}, peers=troubled))
        answer = polls.at(90.0, answered(8000, origins={ID_A: 0}, peers=troubled))
        [item] = answer["items"]
        self.assertEqual((item["level"], item["text"], item["since"]),
                         ("warn", "127.0.0.1:8000: 1 in trouble: bad MAC", "1 min"))
        self.assertEqual(answer["level"], "warn")
        polls.at(100.0, answered(8000, origins={ID_A: 0}))
        [item] = polls.at(110.0, answered(8000, origins={ID_A: 0}, peers=troubled))["items"]
        self.assertEqual(item["since"], "0 s")

    def test_links_disks_exports(self):
        """
        Links down, a disk full or with days left, an export retrying or
        long behind: each a line, red for what loses or stops data.
        """
        peers = [{"address": "127.0.0.1:22346", "node_id": ID_B, "connected": False}]
        results = [
            answered(8000, origins={ID_A: 0}, peers=peers,
                     disk={"used_bytes": 10, "budget_bytes": 20, "days_left": 2.5, "full": False}),
            answered(8001, node_id=ID_B, origins={ID_B: 0},
                     disk={"used_bytes": 20, "budget_bytes": 20, "days_left": 0, "full": "over --max-disk"},
                     exports=[export_status(state="retrying", pending=1234, oldest_unexported_age_s=30.0)]),
            answered(8002, node_id=ID_C, origins={ID_C: 0},
                     exports=[export_status(pending=5, oldest_unexported_age_s=3600.0)]),
        ]
        answer = Polls().at(1000.0, *results)
        self.assertEqual(answer["level"], "bad")
        self.assertEqual(
            [(i["level"], i["text"], i["since"]) for i in answer["items"]],
            [
                # Named by address and id: after a node lost its data
                # directory its address has two ids, one up and one down.
                ("warn", "127.0.0.1:8000: 1 link down (to 127.0.0.1:22346 bbbbbbbb)", "0 s"),
                ("warn", "127.0.0.1:8000: disk full in 2.5 days", "0 s"),
                ("bad", "127.0.0.1:8001: disk full: over --max-disk", "0 s"),
                ("bad", "127.0.0.1:8001: export retrying, 1,234 behind", "30 s"),
                ("warn", "127.0.0.1:8002: export ok, 5 behind", "1 h 0 min"),
            ],
        )

    def test_waiting(self):
        """
        Before the first poll the line says it waits, neither green nor red.
        """
        result = ServerResult(parse_server("127.0.0.1:8000"), "Waiting")
        self.assertEqual(health([result], Memory(), 0.0, updated=False)["level"], "waiting")


class PageTests(SynchronousTestCase):
    def test_page_and_api(self):
        """
        The page shows the answers above everything else, and
        /api/servers gives them to the page's script.
        """
        app = create_app({"SERVERS": ["127.0.0.1:1"], "START_POLLER": False, "CONSOLE": lambda line: None,
                          "INTERVAL": 2.0, "TIMEOUT": 0.5})
        poller = app.extensions["monitor"]
        self.addCleanup(poller.stop)
        poller.poll_once()
        client = app.test_client()
        data = client.get("/api/servers").get_json()["health"]
        self.assertEqual(data["level"], "bad")
        self.assertEqual(data["items"][0]["kind"], "down")
        html = client.get("/").get_data(as_text=True)
        # Red for the server down, orange ground: copies counted on no server answering.
        self.assertIn('<section id="health" class="health bad copies-warn"', html)
        self.assertLess(html.index('id="health"'), html.index('class="servers"'))
        self.assertIn("127.0.0.1:1 does not answer (down", html)
