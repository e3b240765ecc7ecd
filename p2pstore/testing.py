"""
Listening ports on 127.0.0.1 for the nodes that tests and benchmarks start.

A port picked by binding port 0 comes from the kernel's ephemeral range, the
range outgoing connections take their local ports from; any connection opened
between the pick and the node's bind (a peer dialling, a sensor, a status
request) can take it, and the node then fails with "Address already in use".
These helpers pick ports outside that range instead.
"""

from __future__ import annotations

import functools
import random
import socket
import subprocess
from pathlib import Path
from typing import Optional

# Linux's ephemeral range; FreeBSD and macOS answer sysctl instead (other
# systems get IANA's range).
EPHEMERAL_RANGE_FILE = Path("/proc/sys/net/ipv4/ip_local_port_range")
EPHEMERAL_RANGE_SYSCTLS = ("net.inet.ip.portrange.first", "net.inet.ip.portrange.last")
# IANA's dynamic range, which Windows uses.
IANA_EPHEMERAL = (49152, 65535)
# Ports below this are left to the services of the machine while enough
# ports above it lie outside the ephemeral range.
LOWEST_PORT = 10000
LOWEST_UNPRIVILEGED = 1024
# Fewer ports than this outside the ephemeral range (a host that made it
# 1024-65535) and the picker takes from all of them, ephemeral or not.
MIN_LISTENING_PORTS = 1000
# Shares the ports are split into for trial's parallel workers (-j up to this).
TRIAL_WORKERS = 8

_handed_out: set[int] = set()


@functools.cache
def ephemeral_range() -> tuple[int, int]:
    """
    The kernel's ephemeral port range, first and last port (read once).
    """
    try:
        low, high = map(int, EPHEMERAL_RANGE_FILE.read_text().split())
        return low, high
    except (OSError, ValueError):
        pass
    try:
        out = subprocess.run(
            ["sysctl", "-n", *EPHEMERAL_RANGE_SYSCTLS],
            capture_output=True,
            text=True,
            timeout=5,
            check=True,
        ).stdout
        low, high = map(int, out.split())
        return low, high
    except (OSError, ValueError, subprocess.SubprocessError):
        return IANA_EPHEMERAL


def listening_ports(low: int, high: int, worker: Optional[int] = None) -> list[int]:
    """
    The ports to pick from when the ephemeral range is ``low``-``high``:
    those outside it, from LOWEST_PORT up, or from 1024 up when that leaves
    too few, or every unprivileged port when even that leaves too few.

    @param worker: the number of a ``trial -j`` worker, which takes every
        TRIAL_WORKERS-th port from its own offset, so that no worker can take
        a port another picked and has not bound yet.
    """
    for lowest in (LOWEST_PORT, LOWEST_UNPRIVILEGED):
        ports = [*range(lowest, low), *range(max(high + 1, lowest), 65536)]
        if len(ports) >= MIN_LISTENING_PORTS:
            break
    else:
        ports = list(range(LOWEST_UNPRIVILEGED, 65536))
    if worker is not None:
        ports = ports[worker % TRIAL_WORKERS :: TRIAL_WORKERS]
    return ports


def _trial_worker() -> Optional[int]:
    # `trial -j N` runs worker k in _trial_temp/k.
    cwd = Path.cwd()
    if cwd.parent.name == "_trial_temp" and cwd.name.isdigit():
        return int(cwd.name)
    return None


def free_ports(n: int) -> list[int]:
    """
    ``n`` different ports on 127.0.0.1 outside the ephemeral range, none
    handed out before by this process (so a node restarted on its old port
    gets it back), each bindable a moment ago.
    """
    candidates = [
        p for p in listening_ports(*ephemeral_range(), _trial_worker()) if p not in _handed_out
    ]
    # Another run on the machine picks from the same ports.
    random.shuffle(candidates)
    ports = []
    for port in candidates:
        with socket.socket(socket.AF_INET, socket.SOCK_STREAM) as s:
            try:
                s.bind(("127.0.0.1", port))
            except OSError:
                continue
        ports.append(port)
        if len(ports) == n:
            _handed_out.update(ports)
            return ports
    raise RuntimeError(f"fewer than {n} free TCP ports on 127.0.0.1 outside the ephemeral range")


def free_port() -> int:
    """
    One port from L{free_ports}.
    """
    return free_ports(1)[0]
