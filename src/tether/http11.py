"""``tether.http11``: the handshake's HTTP request and response, where websockets users look."""

import sys

from tether._version import __version__
from tether.protocol.handshake import Request, Response

# websockets' default Server and User-Agent values, under tether's name.
# (tether's own defaults are the shorter "tether": see server_header and
# user_agent_header.)
USER_AGENT = f"Python/{sys.version_info.major}.{sys.version_info.minor} tether/{__version__}"
SERVER = USER_AGENT

__all__ = ["SERVER", "USER_AGENT", "Request", "Response"]
