"""Callback-style handlers: the fastest path, with no task per connection.

``async for message in ws`` costs a task wake-up per message. A
:class:`Listener` is called synchronously from the transport callback
instead, and answers with :meth:`Connection.send_nowait`, so an echo or a
fan-out runs start to finish in one callback:

.. code-block:: python

    class Echo(tether.Listener):
        def on_message(self, ws, message):
            ws.send_nowait(message)

    async with tether.serve(Echo, "127.0.0.1", 8765):
        ...

``serve`` recognises a ``Listener`` subclass passed as the handler and makes
one instance per connection. Callbacks must not block; start a task for
anything slow. An exception in a callback closes that connection with 1011.
"""

from __future__ import annotations

from typing import TYPE_CHECKING

if TYPE_CHECKING:
    from tether.asyncio.connection import Connection, Data
    from tether.protocol.events import Fragment


class Listener:
    """Subclass and override the callbacks you need; each has a no-op default."""

    __slots__ = ()

    def on_open(self, ws: Connection) -> None:
        """The handshake succeeded; ``ws`` is open."""

    def on_message(self, ws: Connection, message: Data | Fragment) -> None:
        """A whole message arrived (a :class:`Fragment` with ``stream_fragments=True``)."""

    def on_close(self, ws: Connection) -> None:
        """The connection is closed; ``ws.close_code`` and ``ws.close_reason`` say how."""
