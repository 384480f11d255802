"""``tether.extensions``: the extension API, where websockets users look."""

from tether.protocol.extensions.base import (
    ClientExtensionFactory,
    Extension,
    ServerExtensionFactory,
)

__all__ = ["ClientExtensionFactory", "Extension", "ServerExtensionFactory"]
