"""
Sealed lines: after the handshake every peer line carries a sequence number
and a MAC, so a line injected, altered, replayed, reordered or dropped on
the link is detected and the link closed.

A sealed line is ``<message> <seq> <mac>``: ``seq`` counts the lines one
side sent since the handshake (1, 2, ...), in decimal; ``mac`` is the first
16 bytes, in hex, of ``HMAC-SHA256(link key, seq as 8 bytes big-endian |
message)``. Each direction has its own link key, derived from the cluster
key, both ids and both nonces of this connection's handshake
(L{link_key}), so a line cannot be replayed on another connection or
reflected back to its sender. See docs/peer-protocol.md.
"""

from __future__ import annotations

import hashlib
import hmac
from typing import Optional

_TAG = b"p2pstore-link-v2"
MAC_BYTES = 16
_MAC_HEX = 2 * MAC_BYTES


def link_key(key: bytes, sender: str, receiver: str, sender_nonce: bytes, receiver_nonce: bytes) -> bytes:
    """
    The key that seals the lines C{sender} sends C{receiver} on the
    connection whose handshake used these nonces.
    """
    return hmac.new(
        key,
        _TAG + sender.encode("ascii") + receiver.encode("ascii") + sender_nonce + receiver_nonce,
        hashlib.sha256,
    ).digest()


def _mac(key: bytes, seq: int, message: bytes) -> bytes:
    return hmac.new(key, seq.to_bytes(8, "big") + message, hashlib.sha256).hexdigest()[:_MAC_HEX].encode("ascii")


class SealBroken(Exception):
    """
    A line that fails its seal; the message is the logged reason, and what
    precedes its first colon is its kind in status.

    @ivar message: the message the line carries, unchecked, when only its
        MAC failed; else C{None}.
    """

    def __init__(self, reason: str, message: Optional[bytes] = None):
        super().__init__(reason)
        self.message = message


class Sealer:
    """
    Seals the lines one side sends, in order.
    """

    def __init__(self, key: bytes):
        self._key = key
        self.sent = 0

    def seal(self, message: bytes) -> bytes:
        self.sent += 1
        return b"%s %d %s" % (message, self.sent, _mac(self._key, self.sent, message))


class Opener:
    """
    Checks the lines one side receives, in order, and strips their seals.
    """

    def __init__(self, key: bytes):
        self._key = key
        self.received = 0

    def open(self, line: bytes) -> bytes:
        """
        @return: the message the line seals.
        @raise SealBroken: it is not the next line the peer sealed.
        """
        expected = self.received + 1
        parts = line.rsplit(b" ", 2)
        if len(parts) != 3 or len(parts[2]) != _MAC_HEX or not parts[1].isdigit() or len(parts[1]) > 19:
            raise SealBroken(
                f"unsealed message: line {expected} after the handshake has no sequence number and MAC"
                " (injected or cut on the link, or the peer runs an older p2pstore)"
            )
        message, seq_text, mac = parts
        seq = int(seq_text)
        if not hmac.compare_digest(_mac(self._key, seq, message), mac):
            raise SealBroken(
                f"bad MAC: line {expected} after the handshake was altered or injected on the link",
                message,
            )
        if seq != expected:
            raise SealBroken(
                f"out of sequence: line {expected} after the handshake is the peer's line {seq}"
                " (a line was dropped, replayed or reordered on the link)"
            )
        self.received = seq
        return message
