"""
``GET /metrics``: a node's status snapshot in Prometheus's text format.

L{SnapshotCollector} is a prometheus_client custom collector that reads
L{p2pstore.node.Node.status_snapshot} once per scrape and turns it into
metric families, so ``/metrics`` and ``/status`` always say the same. Each
L{MetricsResource} has a registry of its own (never prometheus_client's
global one: a test process holds several nodes), and renders it in the
reactor thread, where the snapshot may be read.
"""

from __future__ import annotations

from typing import Callable, Iterator

from prometheus_client.core import (
    CounterMetricFamily,
    GaugeMetricFamily,
    HistogramMetricFamily,
    InfoMetricFamily,
)
from prometheus_client.exposition import CONTENT_TYPE_LATEST, generate_latest
from prometheus_client.registry import CollectorRegistry
from twisted.web.resource import Resource

from .node import INITIALIZING, RUNNING, SYNCING

STATES = (INITIALIZING, SYNCING, RUNNING)

# The figures of /status's disk section, as gauges: (key, name, help).
DISK_GAUGES = (
    ("used_bytes", "p2pstore_disk_used_bytes", "Bytes of both databases (with their WAL files)."),
    ("own_bytes", "p2pstore_disk_own_bytes", "Bytes of this node's own readings' database."),
    ("peer_bytes", "p2pstore_disk_peer_bytes", "Bytes of the database of peers' copies."),
    ("free_bytes", "p2pstore_disk_free_bytes", "Free bytes on the file system of the databases."),
    ("budget_bytes", "p2pstore_disk_budget_bytes", "The --max-disk budget (absent without one)."),
    ("peer_share_bytes", "p2pstore_disk_peer_share_bytes",
     "The part of the budget peers' copies may take (absent without a budget)."),
    ("days_left", "p2pstore_disk_days_left",
     "Days until the budget or the disk is full at the recent rate (absent when not growing)."),
)


def _label(value) -> str:
    return "" if value is None else str(value)


def _histogram(name: str, documentation: str, status: dict) -> HistogramMetricFamily:
    """
    A histogram from a L{p2pstore.histogram.Histogram}'s status.
    """
    buckets = [(repr(float(bound)), count) for bound, count in status["buckets"]]
    buckets.append(("+Inf", status["count"]))
    return HistogramMetricFamily(name, documentation, buckets=buckets, sum_value=status["sum"])


def _peer_name(entry: dict) -> str:
    # A dialled address never reached has no node id yet.
    return entry["node_id"] or entry["address"] or ""


class SnapshotCollector:
    """
    The metric families of one status snapshot, read at each collect().

    @param snapshot: returns the snapshot (L{Node.status_snapshot}); called
        in the thread that collects, which must be the reactor's.
    """

    def __init__(self, snapshot: Callable[[], dict]):
        self._snapshot = snapshot

    def collect(self) -> Iterator:
        status = self._snapshot()
        yield from self._node(status)
        yield from self._sensors(status)
        yield from self._logs(status)
        yield from self._peers(status)
        if "disk" in status:
            yield from self._disk(status["disk"])
        yield from self._exports(status.get("exports", []))

    def _node(self, status: dict) -> Iterator:
        yield InfoMetricFamily(
            "p2pstore", "This node's id and version.",
            value={"node_id": status["node_id"], "version": status["version"]},
        )
        state = GaugeMetricFamily(
            "p2pstore_state", "1 for the node's state, 0 for the others.", labels=["state"]
        )
        for name in STATES:
            state.add_metric([name], 1 if status["state"] == name else 0)
        yield state
        yield GaugeMetricFamily(
            "p2pstore_uptime_seconds", "Seconds since the node started.", value=status["uptime_s"]
        )

    def _sensors(self, status: dict) -> Iterator:
        sensors = status["sensors"]
        yield CounterMetricFamily(
            "p2pstore_readings_accepted",
            "Sensor lines taken as readings since the node started (each then answered OK, "
            "or ERR when not stored: see p2pstore_readings_not_stored_total).",
            value=sensors["accepted"],
        )
        rejected = CounterMetricFamily(
            "p2pstore_readings_rejected",
            "Sensor lines refused since the node started, by the reason answered (ERR <reason>).",
            labels=["reason"],
        )
        for reason, count in sorted(sensors.get("rejected_reasons", {}).items()):
            rejected.add_metric([reason], count)
        yield rejected
        not_stored = CounterMetricFamily(
            "p2pstore_readings_not_stored",
            "Readings answered ERR because they were not stored: 'storage' (ERR retry: a "
            "commit failed) or 'full' (ERR full).",
            labels=["reason"],
        )
        not_stored.add_metric(["storage"], sensors.get("not_stored", 0))
        not_stored.add_metric(["full"], sensors.get("not_full", 0))
        yield not_stored
        yield GaugeMetricFamily(
            "p2pstore_readings_queued", "Readings waiting for their commit.", value=sensors["queued"]
        )
        yield GaugeMetricFamily(
            "p2pstore_sensors_connected", "Sensor connections open.", value=sensors["connected"]
        )
        commits = status.get("commits")
        if commits is not None:
            yield _histogram(
                "p2pstore_commit_seconds",
                "Seconds from the start of a commit of readings to its outcome.",
                commits["seconds"],
            )
            yield _histogram(
                "p2pstore_commit_readings", "Readings in each commit.", commits["readings"]
            )

    def _logs(self, status: dict) -> Iterator:
        last = GaugeMetricFamily(
            "p2pstore_log_last_index",
            "How far this node holds each origin's log (this node's own: its current epoch).",
            labels=["origin"],
        )
        count = GaugeMetricFamily(
            "p2pstore_origin_records", "Records of each origin this node holds.", labels=["origin"]
        )
        for origin, entry in sorted(status["origins"].items()):
            last.add_metric([origin], entry["last_index"])
            count.add_metric([origin], entry["count"])
        yield last
        yield count
        first = GaugeMetricFamily(
            "p2pstore_log_first_index",
            "The first record of each log (origin and epoch) this node holds; past 1 once pruned.",
            labels=["origin", "epoch"],
        )
        held = GaugeMetricFamily(
            "p2pstore_log_records", "Records of each log this node holds.", labels=["origin", "epoch"]
        )
        for log in status["logs"]:
            first.add_metric([log["origin"], log["epoch"]], log["first"])
            held.add_metric([log["origin"], log["epoch"]], log["held"])
        yield first
        yield held

    def _peers(self, status: dict) -> Iterator:
        connected = GaugeMetricFamily(
            "p2pstore_peer_connected",
            "1 while an authenticated link to the peer carries replication.",
            labels=["peer"],
        )
        counters = {
            key: CounterMetricFamily(name, documentation, labels=["peer"])
            for key, name, documentation in (
                ("sent", "p2pstore_peer_sent_records", "Records sent to the peer."),
                ("received", "p2pstore_peer_received_records", "Records received from the peer."),
                ("rejected", "p2pstore_peer_rejected_records",
                 "Records from the peer refused (a bad HMAC or field)."),
                ("conflicts", "p2pstore_peer_conflict_records",
                 "Records from the peer at a held position with other contents."),
            )
        }
        lag = GaugeMetricFamily(
            "p2pstore_replication_lag_records",
            "Records of each origin the peer is known to lack.",
            labels=["peer", "origin"],
        )
        lag_s = GaugeMetricFamily(
            "p2pstore_replication_lag_seconds",
            "How long the oldest record of each origin the peer lacks has been held here "
            "(to within a second; 0 when it lacks none).",
            labels=["peer", "origin"],
        )
        origins = sorted(status["origins"])
        for entry in status["peers"]:
            peer = _peer_name(entry)
            connected.add_metric([peer], 1 if entry["authenticated"] else 0)
            for key, family in counters.items():
                family.add_metric([peer], entry[key])
            if not entry["node_id"]:
                continue
            for origin in origins:
                if origin == entry["node_id"]:
                    continue
                lag.add_metric([peer, origin], entry["lag"].get(origin, 0))
                lag_s.add_metric([peer, origin], entry.get("lag_s", {}).get(origin, 0))
        yield connected
        yield from counters.values()
        yield lag
        yield lag_s
        yield CounterMetricFamily(
            "p2pstore_peer_refused_links",
            "Peer connections refused (handshake, key or certificate) since the node started.",
            value=status["replication"]["refused_links"],
        )

    def _disk(self, disk: dict) -> Iterator:
        for key, name, documentation in DISK_GAUGES:
            if disk.get(key) is not None:
                yield GaugeMetricFamily(name, documentation, value=disk[key])
        yield GaugeMetricFamily(
            "p2pstore_disk_full",
            "1 while the disk or the budget is full (own readings answered ERR full).",
            value=1 if disk["full"] else 0,
        )
        yield CounterMetricFamily(
            "p2pstore_disk_full_failures",
            "Writes that failed for lack of space since the node started.",
            value=disk["full_failures"],
        )
        pruned = disk.get("pruned")
        if pruned is not None:
            family = GaugeMetricFamily(
                "p2pstore_disk_pruned_records",
                "Records in the ranges this node no longer holds, by why: retention, evicted, "
                "or a range a peer no longer held.",
                labels=["reason"],
            )
            for reason, count in sorted(pruned["records"].items()):
                family.add_metric([reason], count)
            yield family

    def _exports(self, exports: list) -> Iterator:
        labels = ["destination"]
        pending = GaugeMetricFamily(
            "p2pstore_export_pending_records", "Records not yet exported.", labels=labels
        )
        age = GaugeMetricFamily(
            "p2pstore_export_oldest_unexported_age_seconds",
            "Age of the oldest record not yet exported (absent when unknown).",
            labels=labels,
        )
        success = GaugeMetricFamily(
            "p2pstore_export_last_success_timestamp_seconds",
            "Unix time of the last batch the destination took (absent before the first).",
            labels=labels,
        )
        sent = CounterMetricFamily(
            "p2pstore_export_sent_records", "Records the destination took.", labels=labels
        )
        dead = CounterMetricFamily(
            "p2pstore_export_dead_lettered_records",
            "Records the destination refused for their content, kept as dead letters.",
            labels=labels,
        )
        errors = CounterMetricFamily(
            "p2pstore_export_errors",
            "Failed export attempts, by HTTP status code or 'connection'.",
            labels=["destination", "code"],
        )
        for export in exports:
            destination = [_label(export["url"])]
            pending.add_metric(destination, export["pending"])
            if export.get("oldest_unexported_age_s") is not None:
                age.add_metric(destination, export["oldest_unexported_age_s"])
            if export.get("last_success") is not None:
                success.add_metric(destination, export["last_success"])
            sent.add_metric(destination, export["sent"])
            dead.add_metric(destination, export["dead_lettered"])
            for code, count in sorted(export.get("errors", {}).items()):
                errors.add_metric(destination + [str(code)], count)
        yield from (pending, age, success, sent, dead, errors)


def metrics_registry(snapshot: Callable[[], dict]) -> CollectorRegistry:
    """
    A registry of its own holding only the collector of ``snapshot``.
    """
    registry = CollectorRegistry(auto_describe=False)
    registry.register(SnapshotCollector(snapshot))
    return registry


class MetricsResource(Resource):
    """
    ``GET /metrics``: the node's metrics in Prometheus's text format.

    Rendered at once in render_GET rather than by prometheus_client's own
    Twisted resource, which renders in a thread: the snapshot must be read
    in the reactor thread, and building it is cheap.
    """

    isLeaf = True

    def __init__(self, node):
        super().__init__()
        self.registry = metrics_registry(node.status_snapshot)

    def render_GET(self, request):
        body = generate_latest(self.registry)
        request.setHeader(b"Content-Type", CONTENT_TYPE_LATEST.encode("ascii"))
        request.setHeader(b"Cache-Control", b"no-store")
        return body
