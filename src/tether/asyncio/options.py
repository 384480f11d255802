"""Translating user-facing options into protocol objects."""

from __future__ import annotations

from collections.abc import Sequence
from typing import Any, Literal

from tether.protocol.extensions.base import ClientExtensionFactory, ServerExtensionFactory

Compression = Literal["deflate"] | None


def server_extensions(
    compression: Compression, extensions: Sequence[ServerExtensionFactory] | None
) -> list[ServerExtensionFactory]:
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


def connection_options(
    *,
    ping_interval: float | None,
    ping_timeout: float | None,
    close_timeout: float | None,
    max_queue: int | None,
    write_limit: int | tuple[int, int],
    offload_threshold: int,
) -> dict[str, Any]:
    """The per-connection options that server and client share, validated once."""
    if max_queue is not None and max_queue < 1:
        raise ValueError("max_queue must be at least 1 (or None)")
    if offload_threshold < 1:
        raise ValueError("offload_threshold must be positive")
    return {
        "ping_interval": ping_interval,
        "ping_timeout": ping_timeout,
        "close_timeout": close_timeout,
        "max_queue": max_queue,
        "write_limit": write_limit,
        "offload_threshold": offload_threshold,
    }
