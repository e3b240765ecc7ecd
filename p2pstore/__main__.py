"""
C{python -m p2pstore}: the C{p2pstore} command (L{p2pstore.cli}).
"""

import sys

from .cli import main

sys.exit(main())
