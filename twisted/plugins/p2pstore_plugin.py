"""
The twistd plugin for p2pstore: ``twistd p2pstore``.

Nothing is imported from p2pstore until the plugin is chosen.
"""

from twisted.application.service import ServiceMaker

p2pstore = ServiceMaker(
    "p2pstore",
    "p2pstore.tap",
    "A storage node that ingests sensor readings and replicates them to peers.",
    "p2pstore",
)
