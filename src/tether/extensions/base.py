"""``tether.extensions.base``: extension and factory base classes (websockets' path)."""

from tether.protocol.extensions.base import (
    ClientExtensionFactory,
    Extension,
    ServerExtensionFactory,
)

__all__ = ["ClientExtensionFactory", "Extension", "ServerExtensionFactory"]
