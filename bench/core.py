"""
What every bench module needs first: this checkout ahead of any installed
p2pstore on sys.path, the one exception a run fails with, and a reactor
sleep.

Every script in bench/ imports this module before anything from p2pstore
(scripts run as ``python bench/X.py`` have bench/ first on sys.path
already, so ``import core`` is the whole prologue).
"""

from __future__ import annotations

import sys
from pathlib import Path

REPO = Path(__file__).resolve().parent.parent
if str(REPO) not in sys.path:
    sys.path.insert(0, str(REPO))


class BenchFailure(Exception):
    """
    The run went wrong or its result is wrong; the message says how.
    """


def sleep(reactor, seconds: float):
    from twisted.internet.task import deferLater

    return deferLater(reactor, seconds, lambda: None)
