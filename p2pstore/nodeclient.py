"""
The HTTP side of the C{p2pstore} command: a node's C{/status} (several
nodes at once, in threads) and the pages of its C{/readings}.

Blocking stdlib C{urllib}: the command is a short script, not a reactor
program. Every failure becomes one line saying what went wrong
(L{NodeError}, or a L{NodeAnswer}'s C{error}).
"""

from __future__ import annotations

import csv
import io
import json
import socket
import urllib.error
import urllib.parse
import urllib.request
from concurrent.futures import ThreadPoolExecutor
from typing import Iterator, Optional, Sequence

from attrs import frozen

from .clusterview import NodeAnswer

DEFAULT_URL = "http://127.0.0.1:8000"
TIMEOUT = 5.0
# /readings answers at most this many readings a page (status.MAX_LIMIT).
MAX_PAGE = 10_000
# The start of "every reading": /readings reads a range oldest first and
# pages it, where without one it gives only the newest.
EVERYTHING_SINCE = "0001-01-01"


class NodeError(Exception):
    """
    A node did not answer, or answered with an error.

    @ivar url: what was asked for.
    @ivar problem: what went wrong, in one line.
    """

    def __init__(self, url: str, problem: str):
        super().__init__(f"{url}: {problem}")
        self.url = url
        self.problem = problem


def base_url(text: str) -> str:
    """
    A node's status address as users write it (``host:port``,
    ``http://host:port/``, or with ``/status``), as ``http://host:port``.
    """
    text = text.strip()
    if "://" not in text:
        text = "http://" + text
    text = text.rstrip("/")
    if text.endswith("/status"):
        text = text[: -len("/status")]
    return text


def _get(url: str, timeout: float, token: Optional[bytes] = None):
    # GET url: (body, headers), or NodeError saying why not.
    request = urllib.request.Request(url, headers={"Accept": "application/json, text/csv"})
    if token is not None:
        request.add_header("Authorization", "Bearer " + token.decode("ascii"))
    try:
        with urllib.request.urlopen(request, timeout=timeout) as response:
            return response.read(), response.headers
    except urllib.error.HTTPError as e:
        raise NodeError(url, f"answered {e.code}: {_error_text(e)}") from None
    except urllib.error.URLError as e:
        raise NodeError(url, _reason(e.reason, timeout)) from None
    except (socket.timeout, TimeoutError):
        raise NodeError(url, f"no answer within {timeout:g} s") from None
    except (OSError, ValueError) as e:
        raise NodeError(url, f"cannot read it: {e}") from None


def _reason(reason, timeout: float) -> str:
    if isinstance(reason, (socket.timeout, TimeoutError)):
        return f"no answer within {timeout:g} s"
    if isinstance(reason, OSError) and reason.strerror:
        return reason.strerror.lower()
    return str(reason)


def _error_text(e: urllib.error.HTTPError) -> str:
    # The node's JSON error, else the reason phrase.
    try:
        body = json.loads(e.read())
    except (ValueError, OSError):
        return e.reason
    if isinstance(body, dict) and isinstance(body.get("error"), str):
        return body["error"]
    return e.reason


def fetch_status(url: str, timeout: float = TIMEOUT) -> NodeAnswer:
    """
    One node's C{GET /status}, or the reason there is none.
    """
    try:
        body, _ = _get(url + "/status", timeout)
        status = json.loads(body)
    except NodeError as e:
        return NodeAnswer(url, error=e.problem)
    except ValueError:
        return NodeAnswer(url, error="its /status is not JSON: is it a p2pstore node's status port?")
    if not isinstance(status, dict) or "node_id" not in status or "state" not in status:
        return NodeAnswer(url, error="its /status is not a p2pstore node's")
    return NodeAnswer(url, status=status)


def fetch_statuses(urls: Sequence[str], timeout: float = TIMEOUT) -> list[NodeAnswer]:
    """
    Every node's C{/status} at once (a thread each), in the order given: a
    node that does not answer costs ``timeout`` once, not once per node.
    """
    if len(urls) == 1:
        return [fetch_status(urls[0], timeout)]
    with ThreadPoolExecutor(max_workers=min(len(urls), 16)) as pool:
        return list(pool.map(lambda url: fetch_status(url, timeout), urls))


@frozen
class Page:
    """
    One answer of C{/readings}: its body as the node sent it, the readings
    in it, and the token of the next page (C{None} at the range's end).
    """

    body: bytes
    readings: list
    next: Optional[str]

    @property
    def csv_header(self) -> str:
        """
        A CSV page's header row, with its line end.
        """
        return _csv_page(self.body)[0] + "\r\n"

    @property
    def csv_rows(self) -> str:
        """
        A CSV page's rows without its header row.
        """
        return _csv_page(self.body)[1]


def _csv_page(body: bytes) -> tuple[str, str]:
    # The header row and the rest; the node's csv writer ends rows with
    # CRLF, and no column name holds one.
    text = body.decode("utf-8")
    header, _, rows = text.partition("\r\n")
    return header, rows


def readings_pages(
    url: str,
    params: dict,
    fmt: str = "json",
    limit: Optional[int] = None,
    page_size: int = MAX_PAGE,
    token: Optional[bytes] = None,
    timeout: float = 30.0,
) -> Iterator[Page]:
    """
    The pages of a time range of C{/readings}, following each page's
    C{next} (JSON) or C{Next-After} (CSV) until the range ends or ``limit``
    readings came.

    @param params: C{since}, C{until}, C{type}, C{origin} (C{None} values
        left out); without C{since} or C{until}, every reading.
    @param fmt: C{json} (a page's readings are the parsed objects) or C{csv}
        (its readings are the parsed rows; L{Page.csv_rows} the text).
    @raise NodeError: a page could not be had; the pages before it were
        given.
    """
    query = {k: v for k, v in params.items() if v is not None}
    if "since" not in query and "until" not in query:
        query["since"] = EVERYTHING_SINCE
    query["format"] = fmt
    got = 0
    after = None
    while limit is None or got < limit:
        size = page_size if limit is None else min(page_size, limit - got)
        page_query = dict(query, limit=str(size))
        if after is not None:
            page_query["after"] = after
        try:
            body, headers = _get(f"{url}/readings?{urllib.parse.urlencode(page_query)}", timeout, token)
        except NodeError as e:
            # The query string is what the user gave, in other words.
            raise NodeError(f"{url}/readings", e.problem) from None
        if fmt == "csv":
            _, rows = _csv_page(body)
            readings = list(csv.reader(io.StringIO(rows)))
            after = headers.get("Next-After")
        else:
            try:
                answer = json.loads(body)
                readings = answer["readings"]
                after = answer.get("next")
            except (ValueError, KeyError, TypeError):
                raise NodeError(f"{url}/readings", "not a page of readings: is it a p2pstore node?") from None
        got += len(readings)
        yield Page(body, readings, after)
        if after is None:
            return
