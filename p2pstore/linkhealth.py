"""
Why a peer's links are in trouble: the recent link drops and refused records
of one peer, by reason, and a one-line summary for its /status entry.
"""

from collections import Counter, deque
from time import gmtime, strftime
from typing import Callable, Optional

import attrs

# A drop or refused record this recent puts a peer in trouble.
RECENT = 300.0
# How many events a peer keeps.
KEEP = 10


@attrs.define
class LinkHealth:
    """
    The recent troubles of one peer's links.

    @ivar now: the clock, in seconds since the epoch (a L{task.Clock}'s
        C{seconds} in tests).
    @ivar counts: how many events of each reason kind ever happened.
    @ivar recent: the last L{KEEP} events, as C{(when, kind, reason)}.
    """

    now: Callable[[], float]
    counts: Counter = attrs.field(factory=Counter)
    recent: deque = attrs.field(factory=lambda: deque(maxlen=KEEP))

    def dropped(self, kind: str, reason: str) -> None:
        """
        A link to the peer was dropped, for C{reason} of kind C{kind}
        (C{"mac"}, C{"malformed"}, C{"timeout"}, C{"tls"}...).
        """
        self._add(kind, reason)

    def refused(self, reason: str) -> None:
        """
        A record from the peer was refused, for C{reason}.
        """
        self._add("refused record", reason)

    def _add(self, kind: str, reason: str) -> None:
        self.counts[kind] += 1
        self.recent.append((self.now(), kind, reason))

    def events(self) -> list:
        """
        @return: the recent events, oldest first, as dicts with the UTC
            C{time}, the C{kind} and the C{reason}.
        """
        return [
            {"time": _utc(when), "kind": kind, "reason": reason}
            for when, kind, reason in self.recent
        ]

    def trouble(self, batch_size: int, max_batch_size: int) -> Optional[str]:
        """
        @return: L{None} if the peer's links are fine, else one line saying
            what went wrong in the last L{RECENT} seconds and since when.
        """
        since = self.now() - RECENT
        fresh = [(when, kind, reason) for when, kind, reason in self.recent if when >= since]
        parts = []
        drops = [e for e in fresh if e[1] != "refused record"]
        refused = [e for e in fresh if e[1] == "refused record"]
        for events, what in ((drops, "link{} dropped"), (refused, "record{} refused")):
            if events:
                parts.append(
                    f"{len(events)} {what.format('' if len(events) == 1 else 's')} in the last {int(RECENT // 60)} min"
                    f" (since {_utc(events[0][0])}): {events[-1][2]}"
                )
        if batch_size < max_batch_size:
            parts.append(f"batches cut to {batch_size} records")
        return "; ".join(parts) or None


def _utc(when: float) -> str:
    return strftime("%Y-%m-%dT%H:%M:%SZ", gmtime(when))
