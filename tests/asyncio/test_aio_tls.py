"""wss:// with a certificate made at test time (trustme, else the openssl CLI)."""

from __future__ import annotations

import asyncio
import shutil
import ssl
import subprocess
from collections.abc import Iterator
from pathlib import Path

import pytest

from tether import ConnectionClosedOK, connect

GUARD = 10.0


def _openssl_cert(tmp: Path) -> tuple[Path, Path]:
    cert, key = tmp / "cert.pem", tmp / "key.pem"
    subprocess.run(
        [
            "openssl", "req", "-x509", "-newkey", "rsa:2048", "-nodes", "-days", "1",
            "-subj", "/CN=localhost", "-addext", "subjectAltName=DNS:localhost,IP:127.0.0.1",
            "-keyout", str(key), "-out", str(cert),
        ],
        check=True,
        capture_output=True,
        timeout=60,
    )  # fmt: skip
    return cert, key


@pytest.fixture
def tls_contexts(tmp_path: Path, require) -> Iterator[tuple[ssl.SSLContext, ssl.SSLContext]]:
    """(server context, client context) for localhost / 127.0.0.1."""
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    try:
        import trustme
    except ImportError:
        require(shutil.which("openssl"), "neither trustme nor the openssl CLI is available")
        cert, key = _openssl_cert(tmp_path)
        server_ctx.load_cert_chain(cert, key)
        client_ctx.load_verify_locations(cert)
    else:
        ca = trustme.CA()
        ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
        ca.configure_trust(client_ctx)
    yield server_ctx, client_ctx


async def test_wss_echo(start_server, tls_contexts) -> None:
    server_ctx, client_ctx = tls_contexts
    srv = await start_server(ssl=server_ctx)
    for host in ("localhost", "127.0.0.1"):
        async with connect(srv.url_for("/", "wss", host), ssl=client_ctx) as ws:
            assert ws.transport.get_extra_info("ssl_object") is not None
            await ws.send("secret ☃")
            assert await ws.recv() == "secret ☃"
            payload = bytes(range(256)) * 1024
            await ws.send(payload)
            assert await ws.recv() == payload
            assert await asyncio.wait_for(await ws.ping(), GUARD) >= 0
        with pytest.raises(ConnectionClosedOK):
            await ws.recv()


async def test_wss_close_handshake(start_server, tls_contexts) -> None:
    server_ctx, client_ctx = tls_contexts

    async def handler(ws):
        await ws.recv()
        await ws.close(4000, "tls bye")

    srv = await start_server(handler, ssl=server_ctx)
    async with connect(srv.url_for("/", "wss", "localhost"), ssl=client_ctx) as ws:
        await ws.send("go")
        await asyncio.wait_for(ws.wait_closed(), GUARD)
        assert (ws.close_code, ws.close_reason) == (4000, "tls bye")


async def test_wss_untrusted_certificate_fails(start_server, tls_contexts) -> None:
    server_ctx, _ = tls_contexts
    srv = await start_server(ssl=server_ctx)
    with pytest.raises(ssl.SSLCertVerificationError):
        await connect(srv.url_for("/", "wss", "localhost"))  # default trust store


def test_ssl_context_with_ws_uri_is_rejected(tls_contexts) -> None:
    _, client_ctx = tls_contexts
    with pytest.raises(ValueError):
        connect("ws://localhost:1/", ssl=client_ctx)
