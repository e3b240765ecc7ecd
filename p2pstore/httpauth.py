"""
The bearer token of the status site (``--http-token-file``): one check any
twisted.web resource can be put behind, answering 401 to a request without
``Authorization: Bearer <token>``.
"""

from __future__ import annotations

import hmac
import json
from typing import Optional

from twisted.web.resource import Resource

from .tokens import ReloadableFile

REALM = b'Bearer realm="p2pstore"'


def refusal(request, token: Optional[ReloadableFile]) -> Optional[str]:
    """
    Why ``request`` may not have what it asks for, or None if it may: with
    a token, it must carry ``Authorization: Bearer <token>``, compared in
    constant time.
    """
    if token is None:
        return None
    header = request.getHeader(b"authorization")
    if header is None:
        return "this needs a token: send Authorization: Bearer <token> (see --http-token-file)"
    scheme, _, given = header.strip().partition(b" ")
    if scheme.lower() != b"bearer" or not given.strip():
        return "the Authorization header must be Bearer <token>"
    if not hmac.compare_digest(token.value, given.strip()):
        return "wrong token"
    return None


def unauthorized(request, reason: str) -> bytes:
    """
    Answer 401 with a WWW-Authenticate header and the reason, as JSON.
    """
    request.setResponseCode(401)
    challenge = REALM
    if reason == "wrong token":
        challenge += b', error="invalid_token"'
    request.setHeader(b"WWW-Authenticate", challenge)
    request.setHeader(b"Content-Type", b"application/json")
    request.setHeader(b"Cache-Control", b"no-store")
    return json.dumps({"error": reason}).encode("utf-8") + b"\n"


class TokenRequired(Resource):
    """
    A leaf resource served only to requests that carry the token: any other
    gets a 401, and the resource is not asked.

    @ivar token: the token file, or None to serve everyone.
    """

    isLeaf = True

    def __init__(self, wrapped: Resource, token: Optional[ReloadableFile]):
        super().__init__()
        self.wrapped = wrapped
        self.token = token

    def render(self, request):
        reason = refusal(request, self.token)
        if reason is not None:
            return unauthorized(request, reason)
        return self.wrapped.render(request)
