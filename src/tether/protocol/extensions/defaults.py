"""Which extension factories a connection offers, from websockets' ``compression=`` option.

Shared by the asyncio and sync layers: ``compression="deflate"`` (the
default) adds permessage-deflate (RFC 7692) unless ``extensions`` already has
it; ``None`` offers only what ``extensions`` lists.
"""

from __future__ import annotations

from collections.abc import Sequence
from typing import Literal

from tether.protocol.extensions.base import ClientExtensionFactory, ServerExtensionFactory

Compression = Literal["deflate"] | None


def server_extensions(
    compression: Compression, extensions: Sequence[ServerExtensionFactory] | None
) -> list[ServerExtensionFactory]:
    """The server's extension factories: the ones given, plus permessage-deflate by default."""
    factories = list(extensions or [])
    if compression == "deflate":
        from tether.protocol.extensions.permessage_deflate import (
            ServerPerMessageDeflateFactory,
        )

        if not any(f.name == "permessage-deflate" for f in factories):
            factories.append(ServerPerMessageDeflateFactory())
    elif compression is not None:
        raise ValueError(f"unsupported compression: {compression!r}")
    return factories


def client_extensions(
    compression: Compression, extensions: Sequence[ClientExtensionFactory] | None
) -> list[ClientExtensionFactory]:
    """The client's extension factories: the ones given, plus permessage-deflate by default."""
    factories = list(extensions or [])
    if compression == "deflate":
        from tether.protocol.extensions.permessage_deflate import (
            ClientPerMessageDeflateFactory,
        )

        if not any(f.name == "permessage-deflate" for f in factories):
            factories.append(ClientPerMessageDeflateFactory())
    elif compression is not None:
        raise ValueError(f"unsupported compression: {compression!r}")
    return factories
