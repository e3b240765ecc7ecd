"""
What the logic objects may call on the protocols they serve: a sensor
connection (L{ISensor}, for the ingestor) and a peer link (L{ILink}, for
replication and the service). The protocols implement them; tests pass
small fakes that do too.
"""

from __future__ import annotations

from zope.interface import Attribute, Interface


class ISensor(Interface):
    """
    One sensor connection, as the ingestor sees it.
    """

    sensor_index = Attribute(
        "The number the ingestor gave this connection (never reused), set by the ingestor."
    )
    sensor_name = Attribute(
        "The name the sensor authenticated with (--sensor-tokens), stored with its readings; "
        "None without a token."
    )
    unterminated = Attribute(
        "Whether the sensor sends readings without line ends (and so reads no answers)."
    )

    def pause(reason: str) -> None:
        """
        Stop reading the connection until every reason to pause is gone.
        """

    def resume(reason: str) -> None:
        """
        The reason to pause is gone.
        """

    def answers_ready() -> None:
        """
        Some of the connection's pending lines were answered: send what can
        be sent in order.
        """


class ILink(Interface):
    """
    One authenticated connection to a peer node, as replication sees it.
    """

    peer_id = Attribute("The peer's node id, once the handshake has named it.")
    authenticated = Attribute("Whether the peer has proved the cluster key.")
    address = Attribute("host:port of the other end, for logs and status.")
    dial_address = Attribute("The --peers address this node dialled, or None if it accepted the link.")

    def send(message) -> None:
        """
        Send one peer message (p2pstore.wire).
        """

    def drop(reason: str) -> None:
        """
        Close the link, logging and counting why.
        """

    def close() -> None:
        """
        Close the link for a stop, without counting it as a failure.
        """
