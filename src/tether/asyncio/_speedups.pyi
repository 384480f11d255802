"""Type stubs for the optional C extension ``tether.asyncio._speedups``.

Its pure-Python twin, and the interface it calls, are in
:mod:`tether.asyncio._receiver`.
"""

from collections.abc import Callable
from typing import Any, final

from tether.asyncio._receiver import ReceiverCore, ReceiverHost

@final
class Receiver:
    """A connection's fast read path for an asyncio BufferedProtocol (see ``_receiver``)."""

    fast: bool
    def __init__(self, expect_mask: bool = True, limit: int = 0) -> None: ...
    @property
    def pending(self) -> int: ...
    @property
    def delivered(self) -> int: ...
    def get_buffer(self, sizehint: int = -1, /) -> memoryview: ...
    def feed(
        self,
        nbytes: int,
        deliver: Callable[[Any, Any], object],
        conn: Any,
        core: ReceiverCore,
        /,
    ) -> int: ...
    def take(self, nbytes: int = 0, /) -> bytes: ...
    def bind(
        self, conn: ReceiverHost, core: ReceiverCore, expect_mask: bool, limit: int, /
    ) -> None: ...
    def enable(self, deliver: Callable[[Any, Any], object], /) -> None: ...
    def buffer_updated(self, nbytes: int, /) -> None: ...
