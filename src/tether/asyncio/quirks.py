"""Known bugs of the standard library's asyncio transports, by Python version.

Each name says whether a transport method can be relied on for what tether
needs from it; the I/O code picks a slower but safe call where it cannot.
"""

from __future__ import annotations

import sys

# The selector transport's writelines() never pauses the protocol when its
# buffer passes the high-water mark in CPython 3.12.0-3.12.8 and 3.13.0-3.13.1
# (python/cpython gh-127655): a sender of large messages would never be made
# to wait in send(), and its buffer would grow without bound.
WRITELINES_PAUSES_WRITING = not (
    (3, 12) <= sys.version_info < (3, 12, 9) or (3, 13) <= sys.version_info < (3, 13, 2)
)
