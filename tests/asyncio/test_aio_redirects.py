"""The client follows redirects (across hosts and schemes, bounded) and sends URI credentials.

Servers on 127.0.0.1 answer the upgrade with 3xx from ``process_request``;
"another host" is ``localhost`` against ``127.0.0.1``.
"""

from __future__ import annotations

import base64
import ssl
import time
from collections.abc import Callable
from pathlib import Path
from typing import Any

import pytest

import tether
from tether import connect
from tether.protocol import redirects
from tether.protocol.client import parse_uri
from tether.protocol.exceptions import InvalidStatus, InvalidURI, SecurityError
from tether.protocol.handshake import Request, Response

OPEN_TIMEOUT = 2.0
SLACK = 2.0


def redirect_to(location: str | Callable[[Request], str], status: int = 302) -> Any:
    def process_request(conn: tether.ServerConnection, request: Request) -> Response:
        target = location(request) if callable(location) else location
        return conn.respond(status, "moved", {"Location": target})

    return process_request


def recording(seen: list[Request]) -> Any:
    def process_request(conn: tether.ServerConnection, request: Request) -> None:
        seen.append(request)

    return process_request


def basic(user: str, password: str) -> str:
    return "Basic " + base64.b64encode(f"{user}:{password}".encode()).decode()


@pytest.fixture
def tls(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> tuple[ssl.SSLContext, ssl.SSLContext]:
    """(server, client) contexts; the default context trusts the CA too (a redirect to wss://)."""
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    # ssl.create_default_context() loads OpenSSL's default paths, which honour this.
    monkeypatch.setenv("SSL_CERT_FILE", str(ca_file))
    return server, client


@pytest.mark.parametrize("status", [301, 302, 303, 307, 308])
async def test_redirect_to_another_host(start_server, status: int) -> None:
    seen: list[Request] = []
    target = await start_server(process_request=recording(seen))
    source = await start_server(
        process_request=redirect_to(target.url_for("/new?x=1", host="localhost"), status)
    )
    async with connect(source.url_for("/old"), open_timeout=OPEN_TIMEOUT) as ws:
        await ws.send("followed")
        assert await ws.recv() == "followed"
        assert ws.remote_address[1] == target.port
    assert [r.path for r in seen] == ["/new?x=1"]
    assert seen[0].headers["Host"] == f"localhost:{target.port}"


async def test_relative_redirect_on_the_same_server(start_server) -> None:
    def process_request(conn: tether.ServerConnection, request: Request) -> Response | None:
        if request.path == "/old":
            return conn.respond(307, "", {"Location": "/new"})
        return None

    srv = await start_server(process_request=process_request)
    async with connect(srv.url_for("/old")) as ws:
        assert ws.request is not None and ws.request.path == "/new"


async def test_redirect_from_ws_to_wss(start_server, tls) -> None:
    server_ctx, _ = tls
    secure = await start_server(ssl=server_ctx)
    plain = await start_server(process_request=redirect_to(secure.url_for("/", "wss", "localhost")))
    async with connect(plain.url, open_timeout=OPEN_TIMEOUT) as ws:
        assert ws.transport.get_extra_info("ssl_object") is not None
        await ws.send("upgraded to TLS")
        assert await ws.recv() == "upgraded to TLS"


async def test_redirect_from_wss_to_wss_keeps_the_context(start_server, tls) -> None:
    server_ctx, client_ctx = tls
    target = await start_server(ssl=server_ctx)
    source = await start_server(
        ssl=server_ctx, process_request=redirect_to(target.url_for("/", "wss", "localhost"))
    )
    async with connect(source.url_for("/", "wss", "localhost"), ssl=client_ctx) as ws:
        assert ws.remote_address[1] == target.port


async def test_redirect_from_wss_to_ws_is_refused(start_server, tls) -> None:
    server_ctx, client_ctx = tls
    plain = await start_server()
    secure = await start_server(ssl=server_ctx, process_request=redirect_to(plain.url))
    with pytest.raises(SecurityError, match="insecure"):
        await connect(secure.url_for("/", "wss", "localhost"), ssl=client_ctx)


@pytest.mark.parametrize("location", ["http://127.0.0.1:1/", "ftp://127.0.0.1/file", "//x:1#f"])
async def test_redirect_to_another_scheme(start_server, location: str) -> None:
    srv = await start_server(process_request=redirect_to(location))
    started = time.monotonic()
    with pytest.raises(InvalidURI) as caught:
        await connect(srv.url, open_timeout=OPEN_TIMEOUT)
    assert time.monotonic() - started < OPEN_TIMEOUT + SLACK
    assert isinstance(caught.value.__context__, InvalidStatus)  # the redirect it came from


async def test_redirect_loop(start_server) -> None:
    # Two servers sending the client to each other, forever.
    ports: list[int] = []
    a = await start_server(process_request=redirect_to(lambda r: f"ws://localhost:{ports[1]}/"))
    b = await start_server(process_request=redirect_to(lambda r: f"ws://127.0.0.1:{ports[0]}/"))
    ports += [a.port, b.port]
    started = time.monotonic()
    with pytest.raises(SecurityError, match="more than 10 redirects"):
        await connect(a.url, open_timeout=OPEN_TIMEOUT)
    assert time.monotonic() - started < OPEN_TIMEOUT + SLACK


async def test_redirect_count_is_bounded_exactly(start_server) -> None:
    async def chain(length: int) -> str:
        srv = await start_server()
        url = srv.url
        for _ in range(length):
            url = (await start_server(process_request=redirect_to(url))).url
        return url

    async with connect(await chain(2), max_redirects=2) as ws:
        await ws.send("two hops")
        assert await ws.recv() == "two hops"
    with pytest.raises(SecurityError, match="more than 2 redirects"):
        await connect(await chain(3), max_redirects=2)


async def test_3xx_without_location_is_an_invalid_status(start_server) -> None:
    def process_request(conn: tether.ServerConnection, request: Request) -> Response:
        return conn.respond(302, "nowhere")

    srv = await start_server(process_request=process_request)
    with pytest.raises(InvalidStatus) as caught:
        await connect(srv.url)
    assert caught.value.response.status_code == 302


async def test_uri_credentials_are_sent_as_basic_auth(start_server) -> None:
    seen: list[Request] = []
    srv = await start_server(process_request=recording(seen))
    async with connect(f"ws://al%20ice:p%40ss:w@127.0.0.1:{srv.port}/"):
        pass
    assert seen[0].headers["Authorization"] == basic("al ice", "p@ss:w")
    # An Authorization header given explicitly wins over the URI's.
    async with connect(
        f"ws://u:p@127.0.0.1:{srv.port}/", additional_headers={"Authorization": "Bearer t"}
    ):
        pass
    assert seen[1].headers.get_all("Authorization") == ["Bearer t"]


async def test_credentials_follow_same_origin_redirects_only(start_server) -> None:
    seen: list[Request] = []

    def process_request(conn: tether.ServerConnection, request: Request) -> Response | None:
        seen.append(request)
        if request.path == "/a":
            return conn.respond(302, "", {"Location": "/b"})
        if request.path == "/b":
            return conn.respond(302, "", {"Location": f"ws://localhost:{other.port}/c"})
        return None

    other = await start_server(process_request=recording(seen))
    srv = await start_server(process_request=process_request)
    async with connect(
        f"ws://u:pw@127.0.0.1:{srv.port}/a", additional_headers={"Cookie": "s=1", "X-Keep": "1"}
    ) as ws:
        assert ws.request is not None and ws.request.path == "/c"
    first, same_origin, cross_origin = seen
    assert (
        first.headers["Authorization"] == same_origin.headers["Authorization"] == basic("u", "pw")
    )
    assert same_origin.headers["Cookie"] == "s=1"
    assert "Authorization" not in cross_origin.headers
    assert "Cookie" not in cross_origin.headers
    assert cross_origin.headers["X-Keep"] == "1"


def test_follow_without_io() -> None:
    current = parse_uri("wss://u:p@a.example/x/y")
    same = redirects.follow("wss://u:p@a.example/x/y", current, "z")
    assert same.uri == "wss://u:p@a.example/x/z"
    assert not same.cross_origin
    assert same.parsed.user_info == ("u", "p")
    other = redirects.follow(
        "wss://a.example/", parse_uri("wss://a.example/"), "wss://b.example:8443/"
    )
    assert other.cross_origin and other.parsed.port == 8443
    with pytest.raises(SecurityError):
        redirects.follow("wss://a.example/", parse_uri("wss://a.example/"), "ws://a.example/")
    with pytest.raises(InvalidURI):
        redirects.follow("ws://a.example/", parse_uri("ws://a.example/"), "https://a.example/")


async def test_no_cross_origin_redirect_over_a_unix_socket(tmp_path: Path) -> None:
    path = str(tmp_path / "ws.sock")
    async with tether.unix_serve(
        lambda ws: ws.wait_closed(), path, process_request=redirect_to("ws://elsewhere.example/")
    ):
        with pytest.raises(ValueError, match="Unix socket"):
            await tether.unix_connect(path, open_timeout=OPEN_TIMEOUT)
