"""
Tests for p2pstore.httpauth: the bearer token of the status site, checked
on DummyRequests, and on the real site: /readings needs the token, /status
stays open and holds no readings.
"""

from __future__ import annotations

import json
from pathlib import Path

from twisted.trial.unittest import SynchronousTestCase
from twisted.web.client import readBody
from twisted.web.http_headers import Headers
from twisted.web.resource import Resource
from twisted.web.test.requesthelper import DummyRequest

from p2pstore.httpauth import TokenRequired, refusal
from p2pstore.tokens import load_http_token

from .test_status import StatusTestCase

TOKEN = "t0ken-for-the-readers-0123456789"


def token_file(test) -> object:
    path = Path(test.mktemp())
    path.write_text(TOKEN + "\n")
    return load_http_token(path)


def request(authorization=None) -> DummyRequest:
    req = DummyRequest([b""])
    if authorization is not None:
        req.requestHeaders.addRawHeader(b"authorization", authorization)
    return req


class Hello(Resource):
    isLeaf = True

    def render(self, request):
        return b"hello"


class RefusalTests(SynchronousTestCase):
    """
    refusal() says why a request may not have what it asks for.
    """

    def setUp(self) -> None:
        self.token = token_file(self)

    def test_no_token_set(self) -> None:
        """
        Without a token every request may.
        """
        self.assertIsNone(refusal(request(), None))

    def test_right_token(self) -> None:
        """
        ``Bearer <token>`` may, the scheme in any case, spaces around.
        """
        for header in (b"Bearer " + TOKEN.encode(), b"bearer  " + TOKEN.encode() + b" "):
            self.assertIsNone(refusal(request(header), self.token), header)

    def test_refused(self) -> None:
        """
        No header, another scheme, an empty or a wrong token are refused,
        each with its reason.
        """
        cases = [
            (None, "this needs a token"),
            (b"Basic " + TOKEN.encode(), "must be Bearer <token>"),
            (b"Bearer", "must be Bearer <token>"),
            (b"Bearer " + TOKEN[:-1].encode(), "wrong token"),
            (b"Bearer " + TOKEN.encode() + b"x", "wrong token"),
            (b"Bearer \xff\xfe", "wrong token"),
        ]
        for header, reason in cases:
            self.assertIn(reason, refusal(request(header), self.token), header)


class TokenRequiredTests(SynchronousTestCase):
    """
    TokenRequired answers 401 for the resource it guards, or lets it answer.
    """

    def setUp(self) -> None:
        self.guarded = TokenRequired(Hello(), token_file(self))

    def test_unauthorized(self) -> None:
        """
        A request without the token gets a 401, a WWW-Authenticate header
        and a one-line JSON reason; a wrong token is an invalid_token.
        """
        req = request()
        body = self.guarded.render(req)
        self.assertEqual(req.responseCode, 401)
        self.assertEqual(
            req.responseHeaders.getRawHeaders(b"www-authenticate"), [b'Bearer realm="p2pstore"']
        )
        self.assertEqual(body.count(b"\n"), 1)
        self.assertIn("needs a token", json.loads(body)["error"])
        req = request(b"Bearer nope-nope-nope-nope")
        self.guarded.render(req)
        self.assertEqual(
            req.responseHeaders.getRawHeaders(b"www-authenticate"),
            [b'Bearer realm="p2pstore", error="invalid_token"'],
        )

    def test_authorized(self) -> None:
        req = request(b"Bearer " + TOKEN.encode())
        self.assertEqual(self.guarded.render(req), b"hello")

    def test_reloaded(self) -> None:
        """
        After the file is changed and reloaded, the new token is the one.
        """
        self.guarded.token.path.write_text("n" * 20 + "\n")
        self.guarded.token.reload()
        self.assertEqual(self.guarded.render(request(b"Bearer " + b"n" * 20)), b"hello")
        req = request(b"Bearer " + TOKEN.encode())
        self.guarded.render(req)
        self.assertEqual(req.responseCode, 401)


class SiteTests(StatusTestCase):
    """
    A status site with a token, over real HTTP on loopback.
    """

    def site_token(self):
        self.token = token_file(self)
        return self.token

    async def get_with(self, path: str, token: str):
        headers = Headers({b"authorization": [b"Bearer " + token.encode()]})
        response = await self.agent.request(b"GET", self.base + path.encode(), headers)
        return response.code, json.loads(await readBody(response))

    async def test_readings_need_the_token(self) -> None:
        """
        /readings without the token is a 401 (and reads nothing), with it a
        200 with the readings; /status answers without it and holds none of
        the readings' values.
        """
        await self.node.start()
        await self.send(b"Temperature,39.5C", b"Humidity,15% RH")
        body = await self.get("/readings", expect=401)
        self.assertIn("needs a token", body["error"])
        code, body = await self.get_with("/readings", "wrong-wrong-wrong-wrong")
        self.assertEqual((code, body), (401, {"error": "wrong token"}))
        code, body = await self.get_with("/readings", TOKEN)
        self.assertEqual(code, 200)
        self.assertEqual([r["sensor_data"] for r in body["readings"]], ["15% RH", "39.5C"])
        status = await self.get("/status")
        self.assertEqual(status["sensors"]["accepted"], 2)
        text = json.dumps(status)
        for value in ("39.5", "15% RH", "Temperature", "Humidity"):
            self.assertNotIn(value, text)
