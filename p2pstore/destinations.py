"""
The --export destinations: a write URL checked, and shown without its
secrets. Pure: no Twisted (L{p2pstore.settings} checks URLs with it).
"""

from __future__ import annotations

import base64
import re
from typing import Optional
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

from attrs import field, frozen

# Query parameters whose values are secrets (InfluxDB 1.x's u and p).
_SECRET_PARAMETERS = {"p", "password", "token", "u", "username", "authorization"}


def _masked(text: str) -> str:
    """
    A URL that does not parse, its user and password and its secret
    parameters replaced by ``***`` as far as they can be told.
    """
    text = re.sub(r"//[^/?#]*@", "//***@", text)
    names = "|".join(sorted(_SECRET_PARAMETERS))
    return re.sub(rf"([?&](?:{names})=)[^&#]*", r"\1***", text, flags=re.IGNORECASE)


class BadDestination(ValueError):
    """
    An --export URL that cannot be a destination; the message says why.
    """


@frozen
class Destination:
    """
    Where readings are exported to.

    @ivar name: the URL as shown and logged: its secrets replaced by
        ``***``. It also keys the cursors, so new credentials keep them.
    @ivar url: the URL posted to, credentials in the query included.
    @ivar authorization: the Authorization header, if any: ``Basic`` from
        the URL's user and password, or ``Token`` from --export-token-file.
    """

    name: str
    url: str = field(repr=False)
    authorization: Optional[bytes] = field(default=None, repr=False)


def parse_destination(text: str, token: Optional[bytes] = None) -> Destination:
    """
    An --export URL: http or https, a host, a write path.

    @param token: the contents of --export-token-file, sent as
        ``Authorization: Token <token>`` (InfluxDB 2.x, 3.x).
    @raise BadDestination: the URL cannot be one; the message shows it
        without its secrets.
    """
    text = text.strip()
    try:
        parts = urlsplit(text)
        port = parts.port
    except ValueError as e:
        raise BadDestination(f"{_masked(text)!r} is not a URL ({e})") from None
    host = parts.hostname
    query = parse_qsl(parts.query, keep_blank_values=True)
    shown_query = urlencode(
        [(k, "***" if k.lower() in _SECRET_PARAMETERS else v) for k, v in query], safe="*"
    )
    shown_netloc = (f"[{host}]" if host and ":" in host else host or "") + (
        f":{port}" if port else ""
    )
    if parts.username is not None:
        shown_netloc = "***@" + shown_netloc
    name = urlunsplit((parts.scheme, shown_netloc, parts.path, shown_query, ""))
    if parts.scheme not in ("http", "https"):
        raise BadDestination(f"{name or text!r}: only http:// and https:// URLs can take readings")
    if not host:
        raise BadDestination(f"{name!r} names no host")
    if parts.fragment:
        raise BadDestination(f"{name!r}: a write URL has no #fragment")
    if parts.path in ("", "/"):
        raise BadDestination(
            f"{name!r} has no write path: give the database's write URL, e.g. "
            "http://host:8086/write?db=sensors (InfluxDB 1.x, VictoriaMetrics, QuestDB) or "
            "https://host/api/v2/write?org=ORG&bucket=BUCKET (InfluxDB 2.x)"
        )
    authorization = None
    if token is not None:
        authorization = b"Token " + token
    elif parts.username is not None:
        user_password = f"{parts.username}:{parts.password or ''}".encode("utf-8")
        authorization = b"Basic " + base64.b64encode(user_password)
    netloc = (f"[{host}]" if ":" in host else quote(host, safe=".-")) + (f":{port}" if port else "")
    url = urlunsplit((parts.scheme, netloc, parts.path, parts.query, ""))
    return Destination(name=name, url=url, authorization=authorization)
