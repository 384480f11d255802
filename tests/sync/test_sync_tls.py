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
