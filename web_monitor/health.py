"""
The answers at the top of the page: is every reading safe, and what is
wrong in the cluster (nodes down, links failing, disks nearly full, exports
behind), each with how long it has been so.

L{remember} runs after each poll and keeps, from one poll to the next, when
each condition was first seen and when each origin's readings were first
seen; L{health} turns a snapshot and that memory into what the page shows.
"""

from __future__ import annotations


from attrs import field, frozen

from .answers import NODE_STATES

# The states of a server that answers (the poller's others say why it does not).
ANSWERING = NODE_STATES
# A reading younger than this without its copies is on its way, not at risk:
# peers copy within a second or two, and the monitor sees them once a poll.
COPY_GRACE_S = 30.0
# Disks with fewer days left than this are reported.
DISK_DAYS_WARNING = 7.0
# An export whose oldest waiting reading is older than this is behind.
EXPORT_BEHIND_S = 300.0
# The origin totals remembered per origin (steps of its count, oldest first).
MAX_STEPS = 500


@frozen
class Memory:
    """
    What the monitor remembers between polls.

    @ivar first_seen: when each condition (by key) was first seen, while it lasts.
    @ivar steps: per origin, (when, count) each time its highest known count
        grew, oldest first: when the reading at a given position first existed.
    """

    first_seen: dict = field(factory=dict)
    steps: dict = field(factory=dict)


def copies_wanted(results) -> int:
    """
    The copies every reading should have: the nodes' own --ack-copies when
    any runs with more than 1 (the largest), else 2 when 2 or more servers are
    monitored (one node's disk can be lost), else 1.
    """
    asked = [r.status.ack_copies for r in results if r.status is not None and r.status.ack_copies]
    if asked and max(asked) > 1:
        return max(asked)
    return 2 if len(results) >= 2 else 1


def origin_copies(results, wanted: int) -> dict:
    """
    Per origin: its highest count any answering server holds, and the
    position up to which C{wanted} servers hold it (the C{wanted}-th highest
    count; a count is a position, since a log holds its readings in order).
    """
    holders = [
        r.status.origins for r in results
        if r.status is not None and r.status.state != "Initializing" and r.status.origins is not None
    ]
    origins = {}
    for origin in dict.fromkeys(o for held in holders for o in held):
        counts = sorted((held.get(origin, 0) for held in holders), reverse=True)
        copied = counts[wanted - 1] if len(counts) >= wanted else 0
        origins[origin] = (counts[0], copied)
    return origins


def remember(memory: Memory, results, now: float) -> Memory:
    """
    The memory after a poll whose results are C{results}, ended at C{now}.
    """
    steps = {}
    wanted = copies_wanted(results)
    for origin, (total, copied) in origin_copies(results, wanted).items():
        known = list(memory.steps.get(origin, ()))
        if not known or total > known[-1][1]:
            known.append((now, total))
        # Steps at or below what is copied everywhere are no longer needed,
        # but the last of them: it says when the next reading appeared.
        while len(known) > 1 and known[1][1] <= copied:
            known.pop(0)
        steps[origin] = tuple(known[-MAX_STEPS:])
    keys = {c["key"] for c in _conditions(results, Memory(steps=steps), now, wanted)}
    first_seen = {key: memory.first_seen.get(key, now) for key in keys}
    return Memory(first_seen=first_seen, steps=steps)


def _waiting_since(steps: tuple, copied: int, now: float) -> float:
    """
    When the first reading past position C{copied} was first seen.
    """
    for when, count in steps:
        if count > copied:
            return when
    return now


def health(results, memory: Memory, now: float, updated: bool = True) -> dict:
    """
    The page's answers: C{level} ("ok", "warn", "bad" or "waiting"), the one
    C{headline} about the readings' copies, and the C{items} wrong elsewhere,
    each with its C{level}, C{text} and C{since} (how long, in words).
    """
    wanted = copies_wanted(results)
    if not updated or all(r.checked_at is None for r in results):
        return {"level": "waiting", "copies": wanted, "copies_level": "waiting",
                "headline": "Waiting for the first answers…", "items": []}
    items = []
    for c in _conditions(results, memory, now, wanted):
        since = memory.first_seen.get(c["key"], now) if c.get("since") is None else c["since"]
        items.append({
            "kind": c["kind"],
            "level": c["level"],
            "text": c["text"],
            "since": _duration(max(0.0, now - since)),
        })
    copies = [i for i in items if i["kind"] == "copies"]
    others = [i for i in items if i["kind"] != "copies"]
    unknown = sum(1 for r in results if r.state not in ANSWERING)
    if copies:
        headline = f"Not every reading has {wanted} copies:"
    else:
        noun = "copy" if wanted == 1 else "copies"
        headline = f"Every reading has at least {wanted} {noun}"
        if unknown:
            headline += f" on the servers answering ({unknown} not)"
        headline += "."
    levels = {i["level"] for i in items}
    level = "bad" if "bad" in levels else ("warn" if levels else "ok")
    # Copies counted on some servers only are no all-clear: orange, not green.
    copies_level = "bad" if copies else ("warn" if unknown else "ok")
    return {"level": level, "copies": wanted, "copies_level": copies_level,
            "headline": headline, "items": copies + others}


def _conditions(results, memory: Memory, now: float, wanted: int) -> list:
    """
    What is wrong, each as C{key}, C{kind}, C{level}, C{text} and, when the
    condition itself says since when, C{since} (a time).
    """
    found = []
    names = {r.status.node_id: r.address.text for r in results if r.status is not None}
    for origin, (total, copied) in origin_copies(results, wanted).items():
        if total <= copied:
            continue
        since = _waiting_since(memory.steps.get(origin, ()), copied, now)
        if now - since < COPY_GRACE_S:
            continue
        name = names.get(origin, origin[:8])
        lacking = total - copied
        found.append({
            "key": ("copies", origin), "kind": "copies", "level": "bad", "since": since,
            "text": f"{name}: {_count(lacking)} {_readings(lacking)} on fewer than {wanted} servers "
                    f"(positions {copied + 1} to {total})",
        })
    for r in results:
        name = r.address.text
        if r.checked_at is None:
            continue
        if r.state not in ANSWERING:
            found.append({
                "key": ("down", name), "kind": "down", "level": "bad", "since": r.last_answer_at,
                "text": f"{name} does not answer ({r.state.lower()}{': ' + r.message if r.message else ''})",
            })
            continue
        status = r.status
        troubled = status.peers_in_trouble
        down = status.links_down or 0
        if troubled or down:
            parts = ([f"{down} {'link' if down == 1 else 'links'} down ({_peer_names(status)})"] if down else []) + (
                [f"{len(troubled)} in trouble: {troubled[0].trouble}"] if troubled else []
            )
            found.append({
                "key": ("links", name), "kind": "links", "level": "warn", "text": f"{name}: " + ", ".join(parts),
            })
        for peer in status.peers_gone:
            who = peer.address or (peer.node_id or "?")[:8]
            found.append({
                "key": ("gone", name, peer.node_id or who), "kind": "gone", "level": "warn",
                # Its last_seen is on the node's clock: taken as an age from it.
                "since": peer.last_seen if status.time is None or peer.last_seen is None
                else now - max(0.0, status.time - peer.last_seen),
                "text": f"{name}: peer {who} is gone (no link for long); its entry goes an hour after it left",
            })
        if status.disk_full:
            found.append({
                "key": ("disk", name), "kind": "disk", "level": "bad", "text": f"{name}: disk full: {status.disk_full}",
            })
        elif status.disk_days_left is not None and status.disk_days_left < DISK_DAYS_WARNING:
            found.append({
                "key": ("disk", name), "kind": "disk", "level": "warn",
                "text": f"{name}: disk full in {status.disk_days_left:.1f} days",
            })
        for export in status.exports or ():
            failing = export.state in ("retrying", "misconfigured")
            old = export.oldest_age_s is not None and export.oldest_age_s > EXPORT_BEHIND_S
            if not (failing or old):
                continue
            text = f"{name}: export {export.state}, {_count(export.pending)} behind"
            found.append({
                "key": ("export", name, export.url), "kind": "export", "level": "bad" if failing else "warn",
                "text": text,
                "since": None if export.oldest_age_s is None else now - export.oldest_age_s,
            })
    return found


# Peers named in a "links down" item; the rest are counted.
NAMES_SHOWN = 3


def _peer_names(status) -> str:
    # The peers whose links are down, by address and node id: after a node
    # lost its data directory its address has two ids, one up, one down.
    down = [p for p in status.peers or () if not p.connected and not p.gone]
    names = [
        " ".join(filter(None, (p.address, p.node_id[:8] if p.node_id else None))) or "?"
        for p in down[:NAMES_SHOWN]
    ]
    more = f" and {len(down) - NAMES_SHOWN} more" if len(down) > NAMES_SHOWN else ""
    return "to " + ", ".join(names) + more


def _count(n: int) -> str:
    return f"{n:,}"


def _readings(n: int) -> str:
    return "reading" if n == 1 else "readings"


def _duration(seconds: float) -> str:
    if seconds < 60:
        return f"{seconds:.0f} s"
    if seconds < 3600:
        return f"{seconds // 60:.0f} min"
    if seconds < 86400:
        return f"{seconds // 3600:.0f} h {seconds % 3600 // 60:.0f} min"
    return f"{seconds // 86400:.0f} d {seconds % 86400 // 3600:.0f} h"
