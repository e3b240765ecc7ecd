"""
A tcpdump capture of the loopback interface, for the tests that check what
a peer link carries in the clear.

CI installs tcpdump (scripts/install-tcpdump); without it these tests fail
and say so, they are never skipped. Capturing needs root or CAP_NET_RAW.
"""

from __future__ import annotations

import os
import shutil
import signal
from pathlib import Path
from typing import Iterable

from twisted.internet.defer import inlineCallbacks

from .nodes import ChildProcess, Deadline, wait_for


class LoopbackCapture:
    """
    ``tcpdump -i lo`` of the TCP traffic to and from some ports, written
    whole (``-s 0``) to a pcap file.
    """

    def __init__(self, test_case, ports: Iterable[int]):
        tcpdump = shutil.which("tcpdump") or (
            "/usr/sbin/tcpdump" if Path("/usr/sbin/tcpdump").exists() else None
        )
        if tcpdump is None:
            raise AssertionError("tcpdump is not installed: run scripts/install-tcpdump")
        self._home = Path(test_case.mktemp()).resolve()
        self._home.mkdir(parents=True)
        self.path = self._home / "loopback.pcap"
        expression = " or ".join(f"tcp port {port}" for port in ports)
        # --immediate-mode and -U: each packet is written as it comes; without
        # them, the packets of the last second are lost at the stop.
        args = [tcpdump, "-i", "lo", "-n", "--immediate-mode", "-U", "-s", "0", "-w", str(self.path)]
        if os.geteuid() == 0:
            # Root's tcpdump would become the tcpdump user, who may not write here.
            args += ["-Z", "root"]
        self._process = ChildProcess(
            test_case,
            args + [expression],
            self._home,
            "tcpdump",
        )

    @inlineCallbacks
    def start(self, timeout: float = 10.0):
        """
        Wait until tcpdump says it is listening.
        """

        def listening():
            if not self._process.running:
                raise AssertionError(
                    f"tcpdump exited with code {self._process.exit_code}: {self._process.output}"
                )
            return "listening on" in self._process.output

        try:
            yield wait_for(listening, timeout, "tcpdump to listen on lo")
        except Deadline as e:
            raise Deadline(f"{e}\n{self._process.output}") from None

    @inlineCallbacks
    def stop(self, timeout: float = 10.0):
        """
        Stop tcpdump and fire with the bytes of the capture file.
        """
        self._process.signal(signal.SIGINT)
        yield self._process.wait_exit(timeout)
        return self.path.read_bytes()

    def packets(self) -> int:
        """
        How many packets tcpdump said it captured (once stopped).
        """
        for line in self._process.output.splitlines():
            if "packets captured" in line:
                return int(line.split()[0])
        return 0
