"""
Peers that are gone: the rule by which a peer entry of a node that left
(one that lost its whole data directory comes back under a new node id) is
shown as gone, and later forgotten.

A peer is *gone* once it has had no link for L{GONE_AFTER} and no address
this node dials leads to it: the node seen last at each dialled address is
the one that address leads to, so a dialled peer that is down stays a
failing link for as long as it is down, while the old id of a node that
answers at its address under a new id goes. A gone peer's entry is removed
after L{EXPIRE_AFTER} without a link. Pure: the replicator acts on it.
"""

from __future__ import annotations

from typing import Iterable, Optional

# No link for this long, and no dialled address leading to it: gone.
GONE_AFTER = 600.0
# No link for this long, and gone: its entry is removed.
EXPIRE_AFTER = 3600.0
# How often the replicator applies the rule.
SWEEP_INTERVAL = 60.0


def dialled_ids(peers: Iterable, dialled: Iterable[str]) -> set:
    """
    The node ids the dialled addresses lead to: at each, the peer seen
    last there (a peer linked now counts as seen now).
    """
    latest: dict[str, tuple] = {}
    wanted = set(dialled)
    for peer in peers:
        if peer.address not in wanted:
            continue
        seen = (bool(peer.links), peer.last_seen or 0.0)
        if peer.address not in latest or seen > latest[peer.address][0]:
            latest[peer.address] = (seen, peer.node_id)
    return {node_id for _, node_id in latest.values()}


def departures(peers: Iterable, dialled: Iterable[str], now: float) -> tuple[set, set]:
    """
    ``(gone, expired)``: the node ids of the peers that are gone, and of
    those whose entries are to be removed.
    """
    peers = list(peers)
    kept = dialled_ids(peers, dialled)
    gone, expired = set(), set()
    for peer in peers:
        quiet = _quiet_for(peer, now)
        if peer.node_id in kept or quiet is None or quiet < GONE_AFTER:
            continue
        gone.add(peer.node_id)
        if quiet >= EXPIRE_AFTER:
            expired.add(peer.node_id)
    return gone, expired


def _quiet_for(peer, now: float) -> Optional[float]:
    # How long the peer has had no link (None: it has one).
    if peer.links:
        return None
    return now - (peer.last_seen or 0.0)
