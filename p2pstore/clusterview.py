"""
C{p2pstore status}'s summary of nodes' C{/status} documents: a one-line
verdict, a block per node (state, uptime, sensors, readings, links and
their lag, disk, exports), and for a cluster the copies of each origin on
each node and the nodes that did not answer.

Pure: it formats answers already fetched (L{p2pstore.nodeclient}), so it is
tested on canned documents. A figure a node's status lacks (an older node)
is shown as unknown rather than failing.
"""

from __future__ import annotations

import time
from typing import Iterable, Optional, Sequence

from attrs import frozen

from .departed import EXPIRE_AFTER
from .disk import size_text

RUNNING = "Running"
# Records that have waited less than this for a peer are on their way: the
# copy counts as complete, and the link's lag is not worth the verdict.
CATCHING_UP_S = 5.0
# Characters of a node id shown: enough to tell a cluster's nodes apart.
SHORT = 8


@frozen
class NodeAnswer:
    """
    What one node said to C{GET /status}: its document, or why there is
    none.
    """

    url: str
    status: Optional[dict] = None
    error: Optional[str] = None

    @property
    def answered(self) -> bool:
        return self.status is not None


@frozen
class Holding:
    """
    How much of one origin one node holds, against the most any node that
    answered holds.

    @ivar held: records of the origin the node holds (every epoch).
    @ivar behind: records past the node's last of each epoch that another
        node holds; 0 for a complete copy.
    @ivar waited: how long the oldest of those has waited, as the peers
        that hold them say (their C{lag_s}); C{None} when none says.
    """

    held: int
    behind: int
    waited: Optional[float] = None

    @property
    def complete(self) -> bool:
        """
        Whether the node holds all of the origin, or lacks only what came
        in the last L{CATCHING_UP_S} seconds: while readings flow, a copy
        is always a few records behind, and the nodes answer at different
        instants.
        """
        if self.held == 0:
            return False
        return self.behind == 0 or (self.waited is not None and self.waited < CATCHING_UP_S)


def short(node_id: Optional[str]) -> str:
    return "?" if not node_id else node_id[:SHORT]


def healthy(answers: Sequence[NodeAnswer]) -> bool:
    """
    Whether every node answered and is Running: C{p2pstore status} exits 0
    only then.
    """
    return bool(answers) and all(
        a.answered and a.status.get("state") == RUNNING for a in answers
    )


def attention(answers: Sequence[NodeAnswer]) -> bool:
    """
    Whether something puts readings at risk among the nodes that answer:
    an origin not held whole by every one of them, a link down between
    peers, a full disk, an export retrying or misconfigured. C{p2pstore
    status} exits 3 then, when every node is Running.
    """
    up = [a for a in answers if a.answered]
    if len(answers) > 1 and up:
        found = holdings(up)
        if any(sum(h.complete for h in held.values()) < len(up) for held in found.values()):
            return True
    return bool(_unlinked(up)) or any(_node_troubles(a.status) for a in up)


def holdings(answers: Sequence[NodeAnswer]) -> dict[str, dict[str, Holding]]:
    """
    The copies per origin: for each origin any answering node holds records
    of, each answering node's L{Holding} of it, by node id (nodes holding
    nothing of it are left out).

    It compares each log (origin and epoch) by its last index across the
    nodes: a node whose last is the newest holds all of it that exists
    (pruned ranges aside).
    """
    statuses = [a.status for a in answers if a.answered]
    # Logs by epoch where every node tells them, else one log an origin.
    by_epoch = all(isinstance(s.get("logs"), list) for s in statuses)
    logs = {s.get("node_id"): _logs(s, by_epoch) for s in statuses}
    newest: dict[tuple[str, str], int] = {}
    for held in logs.values():
        for log, (_, last) in held.items():
            newest[log] = max(newest.get(log, 0), last)
    found: dict[str, dict[str, Holding]] = {}
    for node_id, held in logs.items():
        for origin in sorted({origin for origin, _ in held}):
            count = sum(n for (o, _), (n, _) in held.items() if o == origin)
            behind = sum(
                last - held.get(log, (0, 0))[1]
                for log, last in newest.items()
                if log[0] == origin
            )
            if count > 0:
                waited = _waited(statuses, node_id, origin) if behind else None
                found.setdefault(origin, {})[node_id] = Holding(count, behind, waited)
    return found


def _waited(statuses: Sequence[dict], node_id: str, origin: str) -> Optional[float]:
    # The longest any node says the records of origin that node_id lacks
    # have waited, from the nodes that report lag_s for it.
    said = [
        (peer.get("lag_s") or {}).get(origin, 0)
        for status in statuses
        for peer in status.get("peers") or ()
        if isinstance(peer, dict) and peer.get("node_id") == node_id and "lag_s" in peer
    ]
    return max(said) if said else None


def _logs(status: dict, by_epoch: bool) -> dict[tuple[str, str], tuple[int, int]]:
    # (origin, epoch) -> (records held, last index), from `logs`, or from
    # `origins` (one log an origin, "" for its epoch) when a node has no
    # `logs` (an older node).
    if by_epoch:
        return {
            (log.get("origin"), log.get("epoch")): (log.get("held") or 0, log.get("last") or 0)
            for log in status["logs"]
            if isinstance(log, dict)
        }
    return {
        (origin, ""): (entry.get("count") or 0, entry.get("last_index") or 0)
        for origin, entry in (status.get("origins") or {}).items()
        if isinstance(entry, dict)
    }


def verdict(answers: Sequence[NodeAnswer]) -> str:
    """
    The one line that comes first: which nodes did not answer or are not
    Running, how many copies the least copied origins have (for several
    nodes), links down, peers gone, full disks and failing exports.
    """
    parts = []
    down = [a for a in answers if not a.answered]
    up = [a for a in answers if a.answered]
    for answer in down:
        parts.append(f"node {answer.url} unreachable")
    states: dict[str, list[str]] = {}
    for answer in up:
        state = answer.status.get("state") or "unknown state"
        states.setdefault(state, []).append(short(answer.status.get("node_id")))
    if states:
        running = len(states.get(RUNNING, ()))
        others = [
            f"{len(ids)} {state} ({', '.join(ids)})"
            for state, ids in sorted(states.items())
            if state != RUNNING
        ]
        parts.append(", ".join(([_nodes(running) + " " + RUNNING] if running else []) + others))
    if len(answers) > 1 and up:
        parts.append(_copies_verdict(holdings(up), len(up)))
    elif up:
        parts.append(_links_verdict(up[0].status))
    unlinked = _unlinked(up)
    if unlinked:
        parts.append(unlinked)
    departed = _departed(up)
    if departed:
        parts.append(departed)
    for answer in up:
        parts.extend(_node_troubles(answer.status))
    behind = _most_behind(up)
    if behind:
        parts.append(behind)
    return "; ".join(parts) if parts else "no node given"


def _links_verdict(status: dict) -> str:
    # One node's view: its peers, but the gone ones (no links; the verdict
    # names them apart).
    current = [p for p in _peers(status) if not _gone(p)]
    if not current:
        return "no peers: one copy of each reading"
    return f"{sum(map(_linked, current))} of {len(current)} peers linked"


def _unlinked(up: Sequence[NodeAnswer]) -> Optional[str]:
    # The links down, by the peer at their other end: a node that is down
    # is named once, with the nodes that miss it. A gone peer is no link.
    missed: dict[str, list[str]] = {}
    for answer in up:
        for peer in _peers(answer.status):
            if not _linked(peer) and not _gone(peer):
                missed.setdefault(_peer_name(peer), []).append(short(answer.status.get("node_id")))
    if not missed:
        return None
    return ", ".join(
        f"{name} not linked with {', '.join(by)}" for name, by in sorted(missed.items())
    )


def _departed(up: Sequence[NodeAnswer]) -> Optional[str]:
    # The peers some node says are gone, each named once.
    names = sorted({_peer_name(p) for a in up for p in _peers(a.status) if _gone(p)})
    return f"{', '.join(names)} gone" if names else None


def _most_behind(up: Sequence[NodeAnswer]) -> Optional[str]:
    # The link that lags most, in records; a gone peer's copy is not
    # counted, so what it lacks is no copy missing.
    worst = None
    for answer in up:
        for peer in _peers(answer.status):
            if _gone(peer):
                continue
            records = sum((peer.get("lag") or {}).values())
            waits = (peer.get("lag_s") or {}).values()
            if waits and max(waits) < CATCHING_UP_S:
                continue
            if records and (worst is None or records > worst[0]):
                worst = (records, answer.status.get("node_id"), peer)
    if worst is None:
        return None
    records, node_id, peer = worst
    return f"most behind: {_peer_name(peer)} {lag(peer)} that {short(node_id)} holds"


def _nodes(n: int) -> str:
    return f"{n} node" if n == 1 else f"{n} nodes"


def _copies_verdict(found: dict[str, dict[str, Holding]], nodes: int) -> str:
    if not found:
        return "no readings stored yet"
    copies = {
        origin: sum(h.complete for h in held.values()) for origin, held in found.items()
    }
    short_of = sorted((n, origin) for origin, n in copies.items() if n < nodes)
    if not short_of:
        return f"every origin on {_nodes(nodes)}"
    shown = [f"origin {short(origin)} held by {_nodes(n)}" for n, origin in short_of[:3]]
    if len(short_of) > 3:
        shown.append(f"{len(short_of) - 3} more origins on fewer than {nodes}")
    if len(short_of) < len(copies):
        shown.append(f"every other origin on {_nodes(nodes)}")
    return ", ".join(shown)


def _node_troubles(status: dict) -> list[str]:
    # The verdict's mentions of one node's links down, full disk and
    # failing exports.
    name = short(status.get("node_id"))
    found = []
    disk = status.get("disk") or {}
    if disk.get("full"):
        found.append(f"{name} disk full")
    failing = [e for e in status.get("exports") or () if e.get("state") not in ("ok", "starting")]
    if failing:
        found.append(f"{name} export {', '.join(str(e.get('state')) for e in failing)}")
    return found


def _linked(peer: dict) -> bool:
    return bool(peer.get("connected") and peer.get("authenticated"))


def _gone(peer: dict) -> bool:
    # No link for long and no dialled address leads to it (p2pstore.departed):
    # a node that left, not a link down.
    return peer.get("gone") is True


def _peers(status: dict) -> list[dict]:
    return [p for p in status.get("peers") or () if isinstance(p, dict)]


def render(answers: Sequence[NodeAnswer], now: float) -> str:
    """
    The whole summary, as C{p2pstore status} prints it.

    @param now: the time (POSIX seconds) the answers were fetched at, for
        "seen ... ago".
    """
    lines = [verdict(answers), ""]
    for answer in answers:
        if answer.answered:
            lines.extend(node_block(answer, now))
            lines.append("")
    up = [a for a in answers if a.answered]
    if len(answers) > 1 and up:
        lines.extend(copies_table(up))
        lines.append("")
    down = [a for a in answers if not a.answered]
    if down:
        lines.append("not answering:")
        lines.extend(f"  {a.url}: {a.error}" for a in down)
        lines.append("")
    return "\n".join(lines).rstrip("\n") + "\n"


def node_block(answer: NodeAnswer, now: float) -> list[str]:
    """
    One node's lines: a heading, then sensors, peers (one line each, with
    its lag), disk and exports.
    """
    status = answer.status
    # Ages of the node's times by its own clock, when it says it.
    if _when(status.get("time")) is not None:
        now = status["time"]
    node_id = status.get("node_id")
    heading = f"{short(node_id)}  {status.get('state', '?')}"
    uptime = status.get("uptime_s")
    if uptime is not None:
        heading += f", up {duration(uptime)}"
    heading += f"  {answer.url}"
    lines = [heading]
    recovery = status.get("recovery")
    if isinstance(recovery, dict) and recovery:
        lines.append("  recovery  " + _recovery(recovery))
    lines.append("  sensors   " + _sensors(status))
    lines.append("  readings  " + _readings(status, node_id))
    peers = _peers(status)
    current = [p for p in peers if not _gone(p)]
    linked = sum(_linked(p) for p in current)
    text = f"  peers     {linked} of {len(current)} linked" if current else "  peers     none"
    if len(peers) > len(current):
        text += f", {len(peers) - len(current)} gone"
    lines.append(text)
    width = max((len(_peer_name(p)) for p in peers), default=0)
    for peer in peers:
        lines.append(f"    {_peer_name(peer):<{width}}  {_peer(peer, now)}")
    lines.append("  disk      " + _disk(status.get("disk"), status.get("uptime_s")))
    for export in status.get("exports") or ():
        lines.append(f"  export    {export.get('url')}: {_export(export)}")
    return lines


def _sensors(status: dict) -> str:
    sensors = status.get("sensors") or {}
    text = f"{sensors.get('connected', '?')} connected"
    names = sensors.get("names") or {}
    if names:
        text += " (" + ", ".join(
            name if n == 1 else f"{name} x{n}" for name, n in sorted(names.items())
        ) + ")"
    text += f", {_count(sensors.get('accepted'))} readings taken since start"
    if sensors.get("rejected"):
        text += f", {_count(sensors['rejected'])} lines refused"
    return text


def _readings(status: dict, node_id: Optional[str]) -> str:
    origins = status.get("origins") or {}
    own = sum(e.get("count") or 0 for o, e in origins.items() if e.get("self") or o == node_id)
    others = {o: e for o, e in origins.items() if not (e.get("self") or o == node_id)}
    theirs = sum(e.get("count") or 0 for e in others.values())
    text = f"{_count(own + theirs)} stored: {_count(own)} its own"
    text += f", {_count(theirs)} of {len(others)} other origin{'' if len(others) == 1 else 's'}"
    copies = status.get("copies") or {}
    under = copies.get("under_copied") or []
    if under:
        short_records = sum((r.get("last", 0) - r.get("first", 1) + 1) for r in under)
        text += (
            f"; {_count(short_records)} on fewer than {status.get('ack_copies', '?')} nodes"
        )
    return text


def _peer_name(peer: dict) -> str:
    return short(peer.get("node_id")) if peer.get("node_id") else str(peer.get("address"))


def _peer(peer: dict, now: float) -> str:
    if _gone(peer):
        return _gone_peer(peer, now)
    if _linked(peer):
        text = "linked"
    else:
        text = "NOT LINKED"
        seen = _when(peer.get("last_seen"))
        text += f" (last message {duration(now - seen)} ago)" if seen else " (never linked)"
    text += ", " + lag(peer)
    if peer.get("full"):
        text += f", its disk is full ({peer['full']})"
    if peer.get("trouble"):
        text += f"; {peer['trouble']}"
    return text


def _gone_peer(peer: dict, now: float) -> str:
    # Its lag and troubles are left out: its copy no longer counts.
    seen = _when(peer.get("last_seen"))
    if not seen:
        return "gone (never linked), its copies not counted"
    quiet = now - seen
    text = (
        f"gone: no link since {clock_time(seen)} ({duration(quiet)} ago), its copies not counted; "
        "its entry is removed after an hour without a link"
    )
    if quiet < EXPIRE_AFTER:
        text += f" (in {duration(EXPIRE_AFTER - quiet)})"
    return text


def clock_time(when: float) -> str:
    """
    A POSIX time as the local time of day, ``HH:MM``.
    """
    return time.strftime("%H:%M", time.localtime(when))


def lag(peer: dict) -> str:
    """
    How far a peer is behind this node: the records it lacks (every origin)
    and how long the oldest of them has waited.
    """
    records = sum((peer.get("lag") or {}).values())
    if not records:
        return "in step"
    waits = (peer.get("lag_s") or {}).values()
    if waits and max(waits) < CATCHING_UP_S:
        # Records on their way, as while readings flow: no lag to speak of.
        return f"in step ({_count(records)} on the way)"
    text = f"lacks {_count(records)} record{'' if records == 1 else 's'}"
    if waits:
        text += f" (the oldest for {duration(max(waits))})"
    return text


# The node estimates the days left from a minute's samples at least
# (p2pstore.disk.MIN_SPAN); before that it says null, as for no growth.
DAYS_LEFT_AFTER_S = 60.0


def _disk(disk: Optional[dict], uptime_s: Optional[float] = None) -> str:
    if not disk:
        return "unknown"
    text = f"{size(disk.get('used_bytes'))} used"
    budget = disk.get("budget_bytes")
    if budget:
        text += f" of {size(budget)} budget ({100 * (disk.get('used_bytes') or 0) / budget:.0f}%)"
    days = disk.get("days_left")
    if days is not None:
        text += f", days left: {days:,.1f}"
    elif uptime_s is not None and uptime_s < DAYS_LEFT_AFTER_S:
        text += ", days left: not known yet (after a minute's growth)"
    else:
        text += ", days left: not growing"
    if disk.get("free_bytes") is not None:
        text += f", {size(disk['free_bytes'])} free on the filesystem"
    if disk.get("full"):
        text += ", FULL"
    return text


def _export(export: dict) -> str:
    text = f"{export.get('state')}, {_count(export.get('pending'))} pending"
    age = export.get("oldest_unexported_age_s")
    if export.get("pending") and age is not None:
        text += f" (oldest {duration(age)})"
    if export.get("state") not in ("ok", "starting") and export.get("last_error"):
        text += f"; last error: {export['last_error']}"
    if export.get("dead_lettered"):
        text += f"; {_count(export['dead_lettered'])} dead-lettered"
    if export.get("taken_over"):
        text += "; exporting for " + ", ".join(map(short, export["taken_over"]))
    return text


def copies_table(answers: Sequence[NodeAnswer]) -> list[str]:
    """
    The copies per origin: a row per origin, a column per answering node
    (the records it holds, ``-N`` for the newest N it lacks, ``*`` on the
    origin's own node), and how many nodes hold all of it
    (L{Holding.complete}).
    """
    found = holdings(answers)
    if not found:
        return ["copies per origin: no readings stored yet"]
    nodes = [a.status.get("node_id") for a in answers]
    header = ["origin", *map(short, nodes), "copies"]
    rows = []
    # The answering nodes' own origins in their columns' order, so that the
    # '*' cells run down the diagonal; then the other origins.
    order = [n for n in nodes if n in found] + sorted(set(found) - set(nodes))
    for origin in order:
        held = found[origin]
        cells = [short(origin)]
        for node_id in nodes:
            holding = held.get(node_id)
            if holding is None:
                cell = "-"
            else:
                cell = _count(holding.held)
                if holding.behind:
                    cell += f" (-{holding.behind:,})"
            cells.append(("*" if node_id == origin else "") + cell)
        cells.append(_nodes(sum(h.complete for h in held.values())))
        rows.append(cells)
    widths = [max(len(row[i]) for row in [header, *rows]) for i in range(len(header))]
    table = ["copies per origin (records held; * its own node, -N the newest N it lacks):"]
    for row in [header, *rows]:
        table.append("  " + "  ".join(cell.ljust(w) for cell, w in zip(row, widths)).rstrip())
    return table


# Times past this (the year 5138) are no times a node keeps.
_LATEST = 1e11


def _when(value) -> Optional[float]:
    """
    A time a node sent (POSIX seconds), or C{None} when it is none: a
    document may hold anything, and an odd figure is shown as unknown.
    """
    if isinstance(value, bool) or not isinstance(value, (int, float)):
        return None
    return float(value) if 0 < value < _LATEST else None


def duration(seconds: float) -> str:
    """
    A duration as people read it: ``4 s``, ``2 min 05 s``, ``3 h 12 min``,
    ``2 d 04 h``.
    """
    seconds = max(0, int(seconds))
    if seconds < 60:
        return f"{seconds} s"
    minutes, s = divmod(seconds, 60)
    if minutes < 60:
        return f"{minutes} min {s:02d} s"
    hours, m = divmod(minutes, 60)
    if hours < 24:
        return f"{hours} h {m:02d} min"
    days, h = divmod(hours, 24)
    return f"{days} d {h:02d} h"


def size(n: Optional[float]) -> str:
    """
    A byte count as the node and the monitor write it (L{size_text}), or
    C{?} for none or for one that is no count.
    """
    if n is None or isinstance(n, bool) or not isinstance(n, (int, float)) or not 0 <= n < 1e30:
        return "?"
    return size_text(int(n))


def _count(n) -> str:
    return "?" if n is None else f"{n:,}"


def _recovery(recovery: dict) -> str:
    # How far a node that lost its database has got its own logs back.
    have = sum(e.get("have") or 0 for e in recovery.values() if isinstance(e, dict))
    target = sum(e.get("target") or 0 for e in recovery.values() if isinstance(e, dict))
    return f"got {_count(have)} of {_count(target)} of its earlier readings back from peers"


def combined(answers: Iterable[NodeAnswer]) -> dict:
    """
    The raw answers as one JSON document (C{p2pstore status --json}): the
    verdict, then per node its URL and its C{/status} or its error.
    """
    answers = list(answers)
    return {
        "verdict": verdict(answers),
        "healthy": healthy(answers),
        "attention": attention(answers),
        "nodes": [
            {"url": a.url, "status": a.status} if a.answered else {"url": a.url, "error": a.error}
            for a in answers
        ],
    }
