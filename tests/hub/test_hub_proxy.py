"""The backend proxy against a real backend under uvicorn: the example app, and faults.

The backend (tests/hub/proxy_backend_faults.py: examples/proxy_backend.py plus
misbehaving routes) runs in a uvicorn subprocess on a free port. The hub runs
in-process. Checked: the contract both ways (bodies, cookies and headers in;
results and refusals out), per-namespace URLs from TOML, and every failure of
the backend (slow, HTML, 503, wrong shape, too large, a bad code, stopped)
answered with its code while the connection goes on being served.
"""

from __future__ import annotations

import asyncio
import importlib.util
import os
import socket
import subprocess
import sys
import time
from collections.abc import Awaitable, Callable, Iterator
from dataclasses import replace
from pathlib import Path
from typing import Any

import pytest
from backplane_services import eventually, free_port
from hub_support import GUARD, WireClient, WireError, config

from tether.cli import build_parser
from tether.cli import serve as cli_serve
from tether.hub import HubServer, Node
from tether.hub.config import ProxyConfig, config_from_mapping
from tether.hub.errors import ErrorCode, HubCloseCode
from tether_testing import require

StartHub = Callable[..., Awaitable[HubServer]]
Wire = Callable[..., Awaitable[WireClient]]
HERE = Path(__file__).resolve().parent
PROXY_KEY = "proxy-key-for-tests"


class Backend:
    """A uvicorn subprocess serving proxy_backend_faults:app."""

    def __init__(self) -> None:
        require(
            importlib.util.find_spec("uvicorn") and importlib.util.find_spec("starlette"),
            "uvicorn and starlette are not installed (pip install -e '.[test]')",
        )
        require(importlib.util.find_spec("httpx"), "httpx is not installed ('tether[proxy]')")
        self.port = free_port()
        self.process = subprocess.Popen(
            [
                sys.executable,
                "-m",
                "uvicorn",
                "proxy_backend_faults:app",
                "--app-dir",
                str(HERE),
                "--host",
                "127.0.0.1",
                "--port",
                str(self.port),
                "--log-level",
                "warning",
                # The "slow" routes never answer: do not wait for them on the way out.
                "--timeout-graceful-shutdown",
                "1",
            ],
            env={**os.environ, "TETHER_PROXY_KEY": PROXY_KEY},
        )
        deadline = time.monotonic() + 3 * GUARD
        while True:
            try:
                socket.create_connection(("127.0.0.1", self.port), 0.5).close()
                return
            except OSError:
                if self.process.poll() is not None or time.monotonic() > deadline:
                    self.stop()
                    raise RuntimeError("the backend did not start") from None
                time.sleep(0.05)  # a process starting: nothing to await here

    def url(self, path: str) -> str:
        return f"http://127.0.0.1:{self.port}{path}"

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(GUARD)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait(GUARD)

    async def get(self, path: str) -> Any:
        import httpx

        async with httpx.AsyncClient() as client:
            response = await client.get(self.url(path))
            return response.json()


@pytest.fixture(scope="module")
def backend() -> Iterator[Backend]:
    running = Backend()
    yield running
    running.stop()


def proxied(backend: Backend, prefix: str = "/tether", **overrides: Any) -> ProxyConfig:
    urls = {
        hook: backend.url(f"{prefix}/{hook}")
        for hook in ("connect", "subscribe", "publish", "rpc", "disconnect")
    }
    headers = ["X-Tenant", "User-Agent"]
    return ProxyConfig(**{**urls, "headers": headers, "key": PROXY_KEY, **overrides})


async def test_the_example_backend_decides_through_the_proxy(
    backend: Backend, start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub(config=config(proxy=proxied(backend)))
    headers = {"Cookie": "session=s-alice", "X-Tenant": "acme", "X-Secret": "not forwarded"}
    client = await wire(hub.websocket_url, connect=False, ws={"additional_headers": headers})
    result = await client.connect(name="Alice")
    assert result["user"] == "alice"
    assert result["data"] == {"tenant": "acme"}
    assert (await client.push("subscribe"))["channel"] == "user:alice"

    assert (await client.call("subscribe", {"channel": "news"}))["data"] == {"joined": "news"}
    with pytest.raises(WireError) as caught:
        await client.call("subscribe", {"channel": "admin:ops"})
    assert (caught.value.code, caught.value.message) == (103, "admins only")

    await client.call("publish", {"channel": "news", "data": {"text": "oh darn"}})
    assert (await client.push("pub"))["data"] == {"text": "oh ****"}
    await client.call("publish", {"channel": "news", "data": {"text": "fine"}})
    assert (await client.push("pub"))["data"] == {"text": "fine"}
    with pytest.raises(WireError) as caught:
        await client.call("publish", {"channel": "news", "data": 42})
    assert caught.value.code == ErrorCode.BAD_REQUEST

    assert (await client.call("rpc", {"method": "add", "data": [1, 2, 3]}))["data"] == 6
    whoami = await client.call("rpc", {"method": "whoami"})
    assert whoami["data"] == {"user": "alice", "session": {"tenant": "acme"}}
    with pytest.raises(WireError) as caught:
        await client.call("rpc", {"method": "launch"})
    assert (caught.value.code, caught.value.message) == (1404, "no method launch")

    await client.close()

    async def told() -> bool:
        seen = await backend.get("/tether/disconnected")
        return any(d["client"] == client.client_id for d in seen)

    await eventually(told, timeout=GUARD, what="the disconnect POST")
    (event,) = [d for d in await backend.get("/tether/disconnected") if d["user"] == "alice"]
    assert event["code"] == 1000
    # The allow-list only (no X-Secret, no Cookie among the headers).
    assert sorted(event["headers"]) == ["User-Agent", "X-Tenant"]
    assert event["headers"]["X-Tenant"] == "acme"
    assert event["cookies"] == {"session": "s-alice"}


async def test_the_backend_refuses_a_connection(
    backend: Backend, start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub(config=config(proxy=proxied(backend)))
    client = await wire(hub.websocket_url, connect=False)
    with pytest.raises(WireError) as caught:
        await client.connect()
    assert (caught.value.code, caught.value.message) == (101, "log in first")
    assert (await client.close_code())[0] == HubCloseCode.FORBIDDEN


async def test_per_namespace_urls_from_toml(
    backend: Backend, start_hub: StartHub, wire: Wire
) -> None:
    cfg = config_from_mapping(
        {
            "allow_anonymous": True,
            "proxy": {"timeout": 2.0, "max_concurrency": 8, "key": PROXY_KEY},
            "namespaces": {"admin": {"proxy_subscribe": backend.url("/tether/subscribe")}},
        }
    )
    assert cfg.proxy_enabled() and not cfg.proxy.enabled
    hub = await start_hub(Node(cfg))
    client = await wire(hub.websocket_url)
    # Only the admin namespace asks the backend.
    assert "data" not in await client.call("subscribe", {"channel": "news"})
    with pytest.raises(WireError) as caught:
        await client.call("subscribe", {"channel": "admin:ops"})
    assert caught.value.message == "admins only"


async def test_calls_without_the_proxy_key_are_refused_by_the_backend(
    backend: Backend, start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub(config=config(proxy=proxied(backend, connect="", key="wrong")))
    client = await wire(hub.websocket_url)
    with pytest.raises(WireError) as caught:
        await client.call("rpc", {"method": "add", "data": [1]})
    assert caught.value.code == ErrorCode.APP_ERROR  # the backend answered 401


FAULTS = [
    ("slow", ErrorCode.APP_TIMEOUT),
    ("garbage", ErrorCode.APP_ERROR),
    ("error", ErrorCode.APP_ERROR),
    ("shape", ErrorCode.APP_ERROR),
    ("huge", ErrorCode.APP_ERROR),
    ("badcode", ErrorCode.APP_ERROR),
]


@pytest.mark.parametrize(("fault", "code"), FAULTS)
async def test_a_misbehaving_backend_answers_a_code_and_the_connection_goes_on(
    backend: Backend,
    start_hub: StartHub,
    wire: Wire,
    fault: str,
    code: ErrorCode,
    caplog: pytest.LogCaptureFixture,
) -> None:
    # Only the slow backend is meant to time out; the others get time to answer even
    # on a loaded machine.
    timeout = 0.5 if fault == "slow" else GUARD
    proxy = proxied(backend, f"/{fault}", timeout=timeout, connect="", disconnect="")
    hub = await start_hub(config=config(proxy=proxy))
    client = await wire(hub.websocket_url)
    for method, params in [
        ("rpc", {"method": "x"}),
        ("subscribe", {"channel": "news"}),
        ("publish", {"channel": "news", "data": {"text": "hi"}}),
    ]:
        with pytest.raises(WireError) as caught:
            await client.call(method, params)
        assert caught.value.code == code, method
        assert caught.value.temporary
        assert await client.call("ping") == {}
    assert any(r.name == "tether.hub.proxy" for r in caplog.records)


async def test_a_slow_connect_backend_times_out_without_hanging(
    backend: Backend, start_hub: StartHub, wire: Wire
) -> None:
    hub = await start_hub(config=config(proxy=proxied(backend, "/slow", timeout=0.3)))
    client = await wire(hub.websocket_url, connect=False)
    with pytest.raises(WireError) as caught:
        await client.connect()
    assert caught.value.code == ErrorCode.APP_TIMEOUT and caught.value.temporary


async def test_a_stopped_backend_is_unavailable(start_hub: StartHub, wire: Wire) -> None:
    own = Backend()
    try:
        hub = await start_hub(config=config(proxy=proxied(own, connect="", disconnect="")))
        client = await wire(hub.websocket_url)
        assert (await client.call("rpc", {"method": "add", "data": [1]}))["data"] == 1
    finally:
        own.stop()
    with pytest.raises(WireError) as caught:
        await client.call("rpc", {"method": "add", "data": [1]})
    assert caught.value.code == ErrorCode.APP_UNAVAILABLE and caught.value.temporary
    assert await client.call("ping") == {}


async def test_concurrency_per_backend_url_is_bounded(
    backend: Backend, start_hub: StartHub, wire: Wire
) -> None:
    proxy = ProxyConfig(rpc=backend.url("/gate/rpc"), max_concurrency=2, timeout=GUARD)
    hub = await start_hub(config=config(proxy=proxy))
    clients = [await wire(hub.websocket_url) for _ in range(4)]
    calls = [c.send("rpc", {"method": "wait"}) for c in clients]

    async def two_in_flight() -> bool:
        stats = await backend.get("/stats")
        return bool(stats["in_flight"] == 2)

    await eventually(two_in_flight, timeout=GUARD, what="two calls at the backend")
    assert (await backend.get("/stats"))["calls"] == 2  # the other two wait for a slot
    import httpx

    async with httpx.AsyncClient() as http:
        await http.post(backend.url("/release"))
    replies = await asyncio.wait_for(asyncio.gather(*calls), GUARD)
    assert [r["result"]["data"] for r in replies] == ["through"] * 4
    stats = await backend.get("/stats")
    assert stats["max_in_flight"] == 2 and stats["calls"] == 4


def test_serve_flags_map_onto_the_proxy_config(tmp_path: Path) -> None:
    path = tmp_path / "hub.toml"
    path.write_text('[proxy]\nrpc = "http://file/rpc"\ntimeout = 9.0\n')
    args = build_parser().parse_args(
        [
            "serve",
            "--config",
            str(path),
            "--proxy-connect",
            "http://flag/connect",
            "--proxy-timeout",
            "1.5",
            "--proxy-header",
            "X-Tenant",
        ]
    )
    proxy = cli_serve.plan(args, environ={"TETHER_PROXY_KEY": "k"}).config.proxy
    assert proxy == replace(
        ProxyConfig(),
        connect="http://flag/connect",
        rpc="http://file/rpc",
        timeout=1.5,
        headers=["X-Tenant"],
        key="k",
    )
