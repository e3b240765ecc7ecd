"""
p2pstore: sensor readings stored durably in SQLite and replicated peer to peer.
"""

__version__ = "0.1.0"
