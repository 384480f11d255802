"""The extension negotiation hook (RFC 6455 §9) and the per-frame codec interface.

Negotiation (factories) is split from the codec (:class:`Extension`) so one
factory can hand out many independent codec instances, one per connection.
"""

from __future__ import annotations

import abc
from collections.abc import Sequence

from tether.protocol.frames import Frame
from tether.protocol.headers import ExtensionParams


class Extension(abc.ABC):
    """A negotiated extension, owned by one connection."""

    name: str

    @abc.abstractmethod
    def decode(
        self, frame: Frame, *, max_size: int | None = None, max_output: int | None = None
    ) -> Frame:
        """Transform an incoming data frame (TEXT, BINARY or CONT).

        ``max_size`` is how many payload bytes the rest of the current message
        may still grow by; an implementation that expands data must stop and
        raise :class:`~tether.protocol.exceptions.PayloadTooBig` as soon as it
        would exceed it, never expand first and check after. Malformed input
        raises :class:`~tether.protocol.exceptions.ProtocolError`.

        ``max_output`` bounds the work of this one call: an implementation
        that would produce more than that many bytes may put its state back
        as it was and raise
        :class:`~tether.protocol.exceptions.InflateDeferred`, for the caller
        to decode the same frame again later without the bound. Others may
        ignore it.
        """

    @abc.abstractmethod
    def encode(self, frame: Frame, *, compress: bool | None = None) -> Frame:
        """Transform an outgoing data frame.

        ``compress`` is the caller's per-message choice, given on the first
        frame of a message (``None`` lets the extension decide, e.g. by size);
        continuation frames follow whatever the first frame decided.
        """

    @property
    def shareable_key(self) -> tuple[object, ...] | None:
        """Connections whose extensions have equal keys may share encoded frames.

        ``None`` (the default) means encoding depends on per-connection state,
        so a broadcast must encode separately for this connection.
        """
        return None

    def clone(self) -> Extension:
        """A fresh codec with the same parameters (used to encode shared frames)."""
        raise NotImplementedError


class ClientExtensionFactory(abc.ABC):
    """Offers an extension in the client's upgrade request."""

    name: str

    @abc.abstractmethod
    def get_request_params(self) -> ExtensionParams:
        """Parameters to offer in Sec-WebSocket-Extensions."""

    @abc.abstractmethod
    def process_response_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> Extension:
        """Build the codec from the server's answer; raise NegotiationError if unacceptable."""


class ServerExtensionFactory(abc.ABC):
    """Accepts or declines an extension offered by a client."""

    name: str

    @abc.abstractmethod
    def process_request_params(
        self, params: ExtensionParams, accepted: Sequence[Extension]
    ) -> tuple[ExtensionParams, Extension]:
        """Return the response parameters and the codec for one offer.

        Raise :class:`~tether.protocol.exceptions.NegotiationError` to decline
        this offer; the server then tries the client's next offer or goes on
        without the extension (RFC 7692 §5: declining is always allowed).
        """
