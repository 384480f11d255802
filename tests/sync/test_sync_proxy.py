"""The sync client through an HTTP CONNECT proxy (a small one written here, in threads).

tests/proxy/ runs the client through real tinyproxy and dante daemons; these
check that ``tether.sync`` uses the same tunnel: ``proxy=`` and the
environment's ``https_proxy`` / ``no_proxy``, to ``ws://`` and ``wss://``.
"""

from __future__ import annotations

import contextlib
import socket
import threading
from collections.abc import Iterator
from typing import Any

import pytest
from sync_testing import GUARD

from tether.sync.client import connect


class ConnectProxy:
    """Answers CONNECT host:port with 200 and relays bytes both ways; counts tunnels."""

    def __init__(self) -> None:
        self.listener = socket.create_server(("127.0.0.1", 0))
        self.port = int(self.listener.getsockname()[1])
        self.tunnels: list[str] = []
        self.thread = threading.Thread(target=self.serve, daemon=True)
        self.thread.start()

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def serve(self) -> None:
        while True:
            try:
                client, _ = self.listener.accept()
            except OSError:
                return
            threading.Thread(target=self.tunnel, args=(client,), daemon=True).start()

    def tunnel(self, client: socket.socket) -> None:
        head = b""
        while b"\r\n\r\n" not in head:
            chunk = client.recv(4096)
            if not chunk:
                client.close()
                return
            head += chunk
        target = head.split(b" ")[1].decode()
        self.tunnels.append(target)
        host, _, port = target.rpartition(":")
        upstream = socket.create_connection((host.strip("[]"), int(port)), GUARD)
        upstream.settimeout(None)
        client.sendall(b"HTTP/1.1 200 Connection established\r\n\r\n")

        def pump(src: socket.socket, dst: socket.socket) -> None:
            try:
                while data := src.recv(65536):
                    dst.sendall(data)
            except OSError:
                pass
            finally:
                for sock in (src, dst):
                    with contextlib.suppress(OSError):
                        sock.shutdown(socket.SHUT_RDWR)

        threading.Thread(target=pump, args=(upstream, client), daemon=True).start()
        pump(client, upstream)

    def close(self) -> None:
        self.listener.close()


@pytest.fixture
def connect_proxy() -> Iterator[ConnectProxy]:
    proxy = ConnectProxy()
    yield proxy
    proxy.close()


def test_proxy_argument(sync_server: Any, connect_proxy: ConnectProxy) -> None:
    srv = sync_server()
    with connect(srv.url, proxy=connect_proxy.url) as ws:
        ws.send("through the tunnel")
        assert ws.recv(timeout=GUARD) == "through the tunnel"
    assert connect_proxy.tunnels == [f"127.0.0.1:{srv.port}"]


def test_proxy_from_the_environment_and_no_proxy(
    sync_server: Any, connect_proxy: ConnectProxy, monkeypatch: pytest.MonkeyPatch
) -> None:
    srv = sync_server()
    monkeypatch.setenv("https_proxy", connect_proxy.url)
    with connect(srv.url) as ws:
        ws.send("env")
        assert ws.recv(timeout=GUARD) == "env"
    assert len(connect_proxy.tunnels) == 1
    with connect(srv.url, proxy=None) as ws:  # None: never a proxy
        ws.send("direct")
        assert ws.recv(timeout=GUARD) == "direct"
    monkeypatch.setenv("no_proxy", "127.0.0.1")  # the server's host: around the proxy
    with connect(srv.url) as ws:
        ws.send("bypassed")
        assert ws.recv(timeout=GUARD) == "bypassed"
    assert len(connect_proxy.tunnels) == 1


def test_wss_through_the_proxy(sync_server: Any, connect_proxy: ConnectProxy) -> None:
    import ssl

    trustme = pytest.importorskip("trustme", reason="trustme is in the test extra")
    server_ctx = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    client_ctx = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca = trustme.CA()
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server_ctx)
    ca.configure_trust(client_ctx)
    srv = sync_server(ssl=server_ctx)
    with connect(f"wss://localhost:{srv.port}/", ssl=client_ctx, proxy=connect_proxy.url) as ws:
        ws.send("tls in the tunnel")
        assert ws.recv(timeout=GUARD) == "tls in the tunnel"
    assert connect_proxy.tunnels == [f"localhost:{srv.port}"]


def test_a_refusing_proxy_is_a_clear_error(raw_server: Any) -> None:
    from tether.protocol.exceptions import InvalidHandshake

    def refuse(sock: socket.socket) -> None:
        sock.recv(4096)
        sock.sendall(b"HTTP/1.1 403 Forbidden\r\nContent-Length: 0\r\n\r\n")

    port = raw_server(refuse)
    with pytest.raises(InvalidHandshake):
        connect("ws://example.invalid/", proxy=f"http://127.0.0.1:{port}", open_timeout=3)
