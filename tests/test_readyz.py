"""
Tests for ``GET /readyz`` and ``GET /livez`` (p2pstore.status): on
DummyRequests for every state, over real HTTP against a real node opening
its store, and on a real ``twistd -n p2pstore`` node that is Syncing after it
lost its own database.
"""

from __future__ import annotations

import json
import signal

import attrs
from twisted.internet import reactor
from twisted.internet.defer import inlineCallbacks
from twisted.trial.unittest import SynchronousTestCase, TestCase
from twisted.web.client import Agent, readBody
from twisted.web.resource import getChildForRequest
from twisted.web.test.requesthelper import DummyRequest

from p2pstore.node import INITIALIZING, RUNNING, SYNCING
from p2pstore.status import Root

from .nodes import SELF_DB, wait_for
from .test_cluster import CONVERGE, replicated_pair
from .test_httpauth import token_file
from .test_status import StatusTestCase


@attrs.define
class StateOnly:
    """
    A node as far as /readyz and /livez look at one: its state (and the
    snapshot /metrics is built over, never read here).
    """

    state: str

    def status_snapshot(self) -> dict:
        raise AssertionError("/readyz and /livez read only the state")


def render_raw(node, path: bytes, method: bytes = b"GET", token=None) -> tuple[bytes, DummyRequest]:
    """
    Ask the status site of ``node`` for ``path``, as twisted.web would.

    @return: the body and the request.
    """
    request = DummyRequest([path])
    request.method = method
    resource = getChildForRequest(Root(node, token), request)
    return resource.render(request), request


def render(node, path: bytes, token=None) -> tuple[int, dict, DummyRequest]:
    """
    GET ``path`` from the status site of ``node``.

    @return: the code, the parsed JSON body and the request.
    """
    body, request = render_raw(node, path, token=token)
    return request.responseCode, json.loads(body), request


class ReadyTests(SynchronousTestCase):
    """
    C{GET /readyz}: 200 only when Running, else 503 with the state.
    """

    def test_running(self) -> None:
        """
        A Running node answers 200 C{{"state": "Running"}}, as JSON that no
        cache keeps.
        """
        code, body, request = render(StateOnly(RUNNING), b"readyz")
        self.assertEqual((code, body), (200, {"state": "Running"}))
        self.assertEqual(request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"])
        self.assertEqual(request.responseHeaders.getRawHeaders(b"cache-control"), [b"no-store"])
        self.assertIsNone(request.responseHeaders.getRawHeaders(b"retry-after"))

    def test_not_running(self) -> None:
        """
        An Initializing or Syncing node answers 503 with its state and a
        Retry-After in seconds.
        """
        for state in (INITIALIZING, SYNCING):
            code, body, request = render(StateOnly(state), b"readyz")
            self.assertEqual((code, body), (503, {"state": state}))
            self.assertEqual(request.responseHeaders.getRawHeaders(b"retry-after"), [b"5"])
            self.assertEqual(
                request.responseHeaders.getRawHeaders(b"content-type"), [b"application/json"]
            )

    def test_head(self) -> None:
        """
        HEAD answers GET's code and headers with an empty body, itself:
        twisted.web logs a line for each HEAD it fakes through GET
        (UnsupportedMethod) and for each answered with a body, and health
        checks come every few seconds.
        """
        for path in (b"readyz", b"livez"):
            for state in (RUNNING, SYNCING):
                body, get = render_raw(StateOnly(state), path)
                empty, head = render_raw(StateOnly(state), path, method=b"HEAD")
                self.assertEqual(empty, b"")
                self.assertEqual(head.responseCode, get.responseCode)
                self.assertEqual(
                    head.responseHeaders.getRawHeaders(b"content-length"), [b"%d" % len(body)]
                )
                for name in (b"content-type", b"retry-after"):
                    self.assertEqual(
                        head.responseHeaders.getRawHeaders(name),
                        get.responseHeaders.getRawHeaders(name),
                    )

    def test_open_with_token(self) -> None:
        """
        With --http-token-file, /readyz and /livez still answer without the
        token, while /readings needs it.
        """
        token = token_file(self)
        self.assertEqual(render(StateOnly(RUNNING), b"readyz", token=token)[:2], (200, {"state": "Running"}))
        self.assertEqual(render(StateOnly(SYNCING), b"livez", token=token)[:2], (200, {"state": "Syncing"}))
        self.assertEqual(render(StateOnly(RUNNING), b"readings", token=token)[0], 401)


class LiveTests(SynchronousTestCase):
    """
    C{GET /livez}: 200 in every state.
    """

    def test_every_state(self) -> None:
        """
        A node that serves HTTP is live whatever its state, and says which.
        """
        for state in (INITIALIZING, SYNCING, RUNNING):
            code, body, request = render(StateOnly(state), b"livez")
            self.assertEqual((code, body), (200, {"state": state}))
            self.assertIsNone(request.responseHeaders.getRawHeaders(b"retry-after"))


class ReadyHTTPTests(StatusTestCase):
    """
    C{GET /readyz} over HTTP from a real node whose store opens.
    """

    async def test_initializing_then_running(self) -> None:
        """
        Before its store is open the node is not ready (503 Initializing);
        once open it is (200 Running). It is live throughout.
        """
        self.assertEqual(await self.get("/readyz", 503), {"state": "Initializing"})
        self.assertEqual(await self.get("/livez"), {"state": "Initializing"})
        await self.node.start()
        self.assertEqual(await self.get("/readyz"), {"state": "Running"})
        self.assertEqual(await self.get("/livez"), {"state": "Running"})


class ReadyNodeTests(TestCase):
    """
    C{GET /readyz} of a real twistd node.
    """

    timeout = 120

    @inlineCallbacks
    def get(self, node, path: str):
        response = yield Agent(reactor).request(
            b"GET", f"http://127.0.0.1:{node.status_port}{path}".encode("ascii")
        )
        body = yield readBody(response)
        return response.code, json.loads(body), response.headers.getRawHeaders(b"retry-after")

    @inlineCallbacks
    def test_syncing_then_running(self):
        """
        A node restarted without its own database while its peer answers
        nothing is Syncing: /readyz answers 503 Syncing with a Retry-After
        (and /livez 200). Once the peer answers and the node has its
        readings back, /readyz answers 200 Running.
        """
        a, b, _, _ = yield replicated_pair(self, 50, 10)
        self.assertEqual((yield self.get(a, "/readyz")), (200, {"state": "Running"}, None))

        yield a.stop()
        a.delete_db(SELF_DB)
        # Frozen, B still accepts A's connection (the kernel does) but
        # answers nothing, so A stays Syncing until it is thawed.
        b.signal(signal.SIGSTOP)
        self.addCleanup(b.signal, signal.SIGCONT)
        status = yield a.start()
        self.assertEqual(status["state"], "Syncing")
        self.assertEqual((yield self.get(a, "/readyz")), (503, {"state": "Syncing"}, [b"5"]))
        self.assertEqual((yield self.get(a, "/livez")), (200, {"state": "Syncing"}, None))

        b.signal(signal.SIGCONT)

        @inlineCallbacks
        def ready():
            code, body, _ = yield self.get(a, "/readyz")
            return code == 200 and body == {"state": "Running"}

        yield wait_for(ready, CONVERGE, "A's /readyz to answer 200 Running")
        self.assertEqual((yield a.status())["state"], "Running")
