"""
Outgoing links: one L{Dialer} per address in ``--peers``, redialling with
exponential backoff and jitter whenever the link is down.

Not ClientService: ClientService resets its backoff as soon as TCP connects,
so a peer that always fails authentication would be redialled every second
for ever. Here only a link that authenticated shortens the backoff: one that
stayed up a while resets it; one that carried sealed lines before it broke
is redialled at once (QUICK_DELAY), since the path works between damaged
lines; and for RECENT seconds after any link authenticated, every redial
comes within about a second, since the address was proven right and the key
shared. A path that damages a line now and then (each closes the link, and
some damage the handshake) so loses a few milliseconds per damaged line, not
a delay that doubles to 30 s.
"""

from __future__ import annotations

import random
from typing import Callable, Optional

from twisted.logger import Logger

MIN_DELAY = 0.5
MAX_DELAY = 30.0
# A link must stay authenticated this long before a drop counts as new.
STABLE_AFTER = 10.0
# After a link that authenticated but did not stay up, the redial is dial
# number AUTHENTICATED_ATTEMPT at most: about 2 * MIN_DELAY.
AUTHENTICATED_ATTEMPT = 1
# ... and this long after a link authenticated, whatever ends the dials.
RECENT = 60.0
# The redial after a short link that carried sealed lines, and after each
# of up to QUICK_FAILURES dials in a row that fail within RECENT of one.
QUICK_DELAY = 0.05
QUICK_FAILURES = 3


def backoff(attempt: int, jitter: Callable[[], float] = random.random) -> float:
    """
    The delay before dial number ``attempt`` (0 for the first redial):
    doubling from MIN_DELAY, capped at about MAX_DELAY, with ±25% jitter so
    nodes that lost each other at once do not redial in step.
    """
    delay = min(MAX_DELAY, MIN_DELAY * 2 ** min(attempt, 16))
    return delay * (0.75 + 0.5 * jitter())


class Dialer:
    """
    Keeps one link to one peer address.
    """

    log = Logger()

    def __init__(self, address: str, endpoint, factory, clock, jitter=random.random):
        self.address = address
        self._endpoint = endpoint
        self._factory = factory
        self._clock = clock
        self._jitter = jitter
        self._attempt = 0
        self._pending = None
        self._call = None
        self._running = False
        self._complained = False
        self._quick = False
        self._quick_failures = QUICK_FAILURES
        self._authenticated_at: Optional[float] = None
        self.protocol = None
        self.gave_up: Optional[str] = None

    def start(self) -> None:
        self._running = True
        self._dial()

    def stop(self) -> None:
        self._running = False
        if self._call is not None and self._call.active():
            self._call.cancel()
        self._call = None
        if self._pending is not None:
            self._pending.cancel()
        if self.protocol is not None:
            self.protocol.transport.loseConnection()

    def _dial(self) -> None:
        self._call = None
        if not self._running:
            return
        self._pending = self._endpoint.connect(self._factory)
        self._pending.addCallbacks(self._connected, self._failed)

    def _connected(self, protocol) -> None:
        self._pending = None
        self.protocol = protocol
        protocol.dial_address = self.address
        protocol.on_close = self._closed

    def _failed(self, failure) -> None:
        self._pending = None
        if not self._running:
            return
        if not self._complained:
            self._complained = True
            self.log.warn(
                "cannot reach peer {address} ({reason}); retrying with backoff up to {cap:.0f} s",
                address=self.address,
                reason=failure.getErrorMessage(),
                cap=MAX_DELAY,
            )
        self._retry()

    def _closed(self, protocol) -> None:
        self.protocol = None
        if protocol.authenticated:
            self._complained = False
            self._authenticated_at = protocol.authenticated_at
            # Failed dials are retried at once only after a short link
            # that carried lines: the path works between damaged lines.
            self._quick_failures = QUICK_FAILURES
            if self._clock.seconds() - protocol.authenticated_at >= STABLE_AFTER:
                self._attempt = 0
            else:
                self._attempt = min(self._attempt, AUTHENTICATED_ATTEMPT)
                if protocol.carried > 0:
                    self._quick = True
                    self._quick_failures = 0
        if not self._running:
            return
        if protocol.itself:
            self.gave_up = protocol.close_reason
            self.log.error(
                "peer {address} is this node itself: not dialling it again", address=self.address
            )
            return
        self._retry()

    def _retry(self) -> None:
        since = self._authenticated_at
        recent = since is not None and self._clock.seconds() - since < RECENT
        if not self._quick and recent and self._quick_failures < QUICK_FAILURES:
            # A handshake the path damaged, likely: it worked a moment ago.
            self._quick_failures += 1
            self._quick = True
        if self._quick:
            self._quick = False
            delay = QUICK_DELAY * (0.75 + 0.5 * self._jitter())
        else:
            attempt = self._attempt
            if recent:
                attempt = min(attempt, AUTHENTICATED_ATTEMPT)
            delay = backoff(attempt, self._jitter)
            self._attempt += 1
        self._call = self._clock.callLater(delay, self._dial)
