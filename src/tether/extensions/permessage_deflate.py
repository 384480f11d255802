"""``tether.extensions.permessage_deflate``: RFC 7692 factories (websockets' path)."""

from tether.protocol.extensions.permessage_deflate import (
    ClientPerMessageDeflateFactory,
    PerMessageDeflate,
    ServerPerMessageDeflateFactory,
)

__all__ = ["ClientPerMessageDeflateFactory", "PerMessageDeflate", "ServerPerMessageDeflateFactory"]
