"""wss:// with the sync API: a certificate made at test time with trustme."""

from __future__ import annotations

import asyncio
import ssl
import time
from collections.abc import Iterator
from typing import Any

import pytest
from sync_testing import GUARD

from tether.protocol.exceptions import InvalidHandshake
from tether.sync.client import connect

trustme = pytest.importorskip("trustme", reason="trustme is in the test extra")


@pytest.fixture
def tls_contexts() -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server context, client context) for localhost / 127.0.0.1."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(client_ctx)
    yield server_ctx, client_ctx


def test_sync_client_and_server_over_tls(sync_server: Any, tls_contexts: Any) -> None:
    server_ctx, client_ctx = tls_contexts
    srv = sync_server(ssl=server_ctx)
    for host in ("localhost", "127.0.0.1"):
        with connect(f"wss://{host}:{srv.port}/", ssl=client_ctx) as ws:
            assert isinstance(ws.socket, ssl.SSLSocket)
            ws.send("secret ☃")
            assert ws.recv(timeout=GUARD) == "secret ☃"
            big = bytes(range(256)) * 4096  # 1 MiB: many TLS records both ways
            ws.send(big)
            assert ws.recv(timeout=GUARD) == big
            assert ws.ping().wait(GUARD)
        assert ws.close_code == 1000


def test_untrusted_certificate_is_refused(sync_server: Any, tls_contexts: Any) -> None:
    server_ctx, _ = tls_contexts
    srv = sync_server(ssl=server_ctx)
    with pytest.raises(ssl.SSLCertVerificationError):
        connect(f"wss://localhost:{srv.port}/")  # the default context trusts no test CA


def test_plain_client_on_a_tls_port_fails_within_open_timeout(
    sync_server: Any, tls_contexts: Any
) -> None:
    server_ctx, _ = tls_contexts
    srv = sync_server(ssl=server_ctx, open_timeout=1)
    started = time.monotonic()
    # The server's TLS handshake fails on the HTTP request and drops the connection.
    with pytest.raises((InvalidHandshake, ConnectionResetError)):
        connect(f"ws://127.0.0.1:{srv.port}/", open_timeout=3)
    assert time.monotonic() - started < 3


@pytest.mark.parametrize("kind", ["tether", "websockets"])
def test_sync_client_against_asyncio_tls_servers(
    asyncio_server: Any, tls_contexts: Any, kind: str
) -> None:
    server_ctx, client_ctx = tls_contexts
    url = asyncio_server(kind, ssl=server_ctx).replace("ws://", "wss://")
    with connect(url, ssl=client_ctx) as ws:
        ws.send(["enc", "rypted"])
        assert ws.recv(timeout=GUARD) == "encrypted"


def test_websockets_client_against_sync_tls_server(sync_server: Any, tls_contexts: Any) -> None:
    from websockets.asyncio.client import connect as ws_connect

    server_ctx, client_ctx = tls_contexts
    srv = sync_server(ssl=server_ctx)

    async def main() -> None:
        async with ws_connect(f"wss://localhost:{srv.port}/", ssl=client_ctx) as ws:
            await ws.send("over tls")
            assert await ws.recv() == "over tls"

    asyncio.run(asyncio.wait_for(main(), GUARD))


def test_tls_reads_and_writes_from_two_threads_at_once(sync_server: Any, tls_contexts: Any) -> None:
    """Reading thread and senders share each TLS connection, both ways, all at once.

    tether.sync.tls serializes OpenSSL calls; an unserialized race corrupts
    the TLS state only now and then, so this exercises the path rather than
    catching the race every time.
    """
    import threading

    from tether.sync.server import ServerConnection

    count = 1500
    payload = b"t" * 3000

    def stream(ws: ServerConnection) -> None:
        # Writes while its own reading thread reads the client's messages.
        sender = threading.Thread(target=lambda: [ws.send(payload) for _ in range(count)])
        sender.start()
        for _ in range(count):
            assert ws.recv(timeout=GUARD) == payload
        sender.join(GUARD)
        ws.send("done")

    server_ctx, client_ctx = tls_contexts
    srv = sync_server(stream, ssl=server_ctx, compression=None)
    with connect(f"wss://localhost:{srv.port}/", ssl=client_ctx, compression=None) as ws:
        sender = threading.Thread(target=lambda: [ws.send(payload) for _ in range(count)])
        sender.start()
        received = [ws.recv(timeout=GUARD) for _ in range(count)]
        sender.join(GUARD)
        assert ws.recv(timeout=GUARD) == "done"
    assert received == [payload] * count
