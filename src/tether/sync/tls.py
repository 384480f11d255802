"""One TLS connection used by two threads: every OpenSSL call under one lock.

OpenSSL does not allow one SSL object to be read in one thread while it is
written in another, and CPython's ``ssl`` module does not serialize the two
(python/cpython#137583 removed the per-socket lock again): a reading thread
in ``SSL_read`` and a sender in ``SSL_write`` at the same moment corrupt the
TLS state now and then (spurious disconnects, seen by other threaded
WebSocket clients). So, once the handshakes are done, the socket turns
non-blocking and:

- :meth:`TLSStream.recv` tries ``SSL_read`` under the lock and, only when
  OpenSSL wants more bytes, waits for the socket to be readable *outside*
  it (a blocked reader must not hold up senders);
- :meth:`TLSStream.sendall` writes under the lock and waits for room the
  same way when the socket buffer is full.

Plain TCP sockets need none of this: their reads and writes are independent.
"""

from __future__ import annotations

import select
import selectors
import ssl
import threading
import time

__all__ = ["TLSStream"]


class TLSStream:
    """Thread-safe reads and writes on one non-blocking :class:`ssl.SSLSocket`."""

    __slots__ = ("_lock", "sock")

    def __init__(self, sock: ssl.SSLSocket) -> None:
        self.sock = sock
        self._lock = threading.Lock()
        sock.setblocking(False)

    def recv(self, bufsize: int, deadline: float | None = None) -> bytes:
        """Up to ``bufsize`` decrypted bytes (b"" at EOF); TimeoutError past ``deadline``."""
        sock = self.sock
        while True:
            with self._lock:
                try:
                    return sock.recv(bufsize)
                except ssl.SSLWantReadError:
                    event = selectors.EVENT_READ
                except ssl.SSLWantWriteError:  # a renegotiation or key update
                    event = selectors.EVENT_WRITE
            self._wait(event, deadline)

    def sendall(self, data: bytes) -> None:
        """Write all of ``data``; other threads may read meanwhile."""
        sock = self.sock
        view = memoryview(data)
        while view:
            with self._lock:
                try:
                    sent = sock.send(view)
                except ssl.SSLWantWriteError:
                    sent, event = 0, selectors.EVENT_WRITE
                except ssl.SSLWantReadError:
                    sent, event = 0, selectors.EVENT_READ
            if sent:
                view = view[sent:]
            else:
                # OpenSSL retries the same record next time (CPython sets
                # SSL_MODE_ACCEPT_MOVING_WRITE_BUFFER): just wait for room.
                self._wait(event, None)

    def _wait(self, event: int, deadline: float | None) -> None:
        timeout = None
        if deadline is not None:
            timeout = deadline - time.monotonic()
            if timeout <= 0:
                raise TimeoutError("timed out")
        if _poll is not None:
            # poll: no file descriptor of its own (epoll's costs two system
            # calls per wait) and no FD_SETSIZE limit (select's 1024).
            poller = _poll()
            poller.register(self.sock, _POLL_EVENTS[event])
            ready = poller.poll(None if timeout is None else timeout * 1000)
        else:  # pragma: no cover - Windows
            want = [self.sock]
            if event == selectors.EVENT_READ:
                ready = select.select(want, [], want, timeout)[0]
            else:
                ready = select.select([], want, want, timeout)[1]
        if not ready and deadline is not None:
            raise TimeoutError("timed out")


_poll = getattr(select, "poll", None)
_POLL_EVENTS = {
    selectors.EVENT_READ: getattr(select, "POLLIN", 1),
    selectors.EVENT_WRITE: getattr(select, "POLLOUT", 4),
}
