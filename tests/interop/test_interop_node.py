"""Interop with Node.js's ``ws`` (npm ws@8), both roles.

tether server <-> ws client, and ws server <-> tether client.

The Node peer is ``tests/interop/node/peer.js``. Its dependency is installed by
CI (.ci/run) and by hand with::

    cd tests/interop/node && npm ci

Without node, npm or ``node_modules/ws`` these tests skip with that reason, or
fail under ``TETHER_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import importlib.util
import json
import random
import shutil
from collections.abc import AsyncIterator, Awaitable, Callable
from pathlib import Path
from typing import Any

import pytest

import tether
from tether import ConnectionClosedError, ConnectionClosedOK

NODE_DIR = Path(__file__).parent / "node"
PEER = NODE_DIR / "peer.js"
GUARD = 120.0
MiB = 1 << 20
MAX_SIZE = 64 * MiB
SIZES = [0, 125, 126, 65535, 65536, MiB, 16 * MiB]
_ASCII = bytes(32 + b % 95 for b in range(256))


@pytest.fixture
def node(require) -> str:
    executable = shutil.which("node")
    require(executable, "Node.js (node) is not installed")
    require(shutil.which("npm"), "npm is not installed")
    require(
        (NODE_DIR / "node_modules" / "ws" / "package.json").is_file(),
        "tests/interop/node/node_modules is missing: run `npm ci` in tests/interop/node",
    )
    assert executable is not None
    return executable


@pytest.fixture
def run_client(node: str) -> Callable[..., Awaitable[dict[str, Any]]]:
    """``result = await run_client(url, scenario, *args)``: the Node client's JSON outcome."""

    async def run(url: str, scenario: str, *args: str) -> dict[str, Any]:
        proc = await asyncio.create_subprocess_exec(
            node,
            str(PEER),
            "client",
            url,
            scenario,
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            stdout, stderr = await asyncio.wait_for(proc.communicate(), GUARD)
        finally:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()
        lines = stdout.decode().strip().splitlines()
        assert lines, f"no output from the node client; stderr:\n{stderr.decode()}"
        result: dict[str, Any] = json.loads(lines[-1])
        assert proc.returncode == 0 and "error" not in result, (result, stderr.decode())
        return result

    return run


@pytest.fixture
async def node_server(node: str, request: pytest.FixtureRequest) -> AsyncIterator[str]:
    """Base URL (``ws://127.0.0.1:PORT``) of a Node ``ws`` server; routes in peer.js.

    Indirect parametrization with ``"deflate"`` turns on its permessage-deflate.
    """
    extra = [request.param] if getattr(request, "param", None) else []
    proc = await asyncio.create_subprocess_exec(
        node,
        str(PEER),
        "server",
        *extra,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    try:
        assert proc.stdout is not None and proc.stdin is not None
        line = await asyncio.wait_for(proc.stdout.readline(), GUARD)
        assert line, "node server exited: " + (await proc.stderr.read()).decode()  # type: ignore[union-attr]
        yield f"ws://127.0.0.1:{json.loads(line)['port']}"
        proc.stdin.close()
        await asyncio.wait_for(proc.wait(), GUARD)
    finally:
        if proc.returncode is None:
            proc.kill()
            await proc.wait()


def _record_close(loop: asyncio.AbstractEventLoop) -> tuple[asyncio.Future[Any], Any]:
    seen: asyncio.Future[Any] = loop.create_future()

    async def handler(ws):
        try:
            async for message in ws:
                await ws.send(message)
        except ConnectionClosedError:
            pass
        await ws.wait_closed()
        seen.set_result((ws.close_code, ws.close_reason))

    return seen, handler


# ------------------------------------------------------ tether server, ws client


async def test_node_client_echo_all_sizes(start_server, run_client) -> None:
    """0 B to 16 MiB, text and binary, plus non-ASCII text."""
    srv = await start_server(compression=None, max_size=MAX_SIZE)
    result = await run_client(srv.url, "echo")
    assert result == {"checked": 15, "code": 1000}


async def test_node_client_ping_pong_both_ways(start_server, run_client) -> None:
    server_latency: asyncio.Future[float] = asyncio.get_running_loop().create_future()

    async def handler(ws):
        assert await ws.recv() == "ping me"
        server_latency.set_result(await (await ws.ping(b"from-tether")))
        await ws.send("done")
        await ws.wait_closed()

    srv = await start_server(handler, compression=None)
    result = await run_client(srv.url, "ping")
    assert result == {"pong": "node-ping", "ping": "from-tether", "after": "done"}
    assert await asyncio.wait_for(server_latency, GUARD) >= 0


@pytest.mark.parametrize(("code", "reason"), [(1000, ""), (4000, "node reason ☃")])
async def test_node_client_closes(start_server, run_client, code, reason) -> None:
    seen, handler = _record_close(asyncio.get_running_loop())
    srv = await start_server(handler, compression=None)
    result = await run_client(srv.url, "close", str(code), reason)
    assert await asyncio.wait_for(seen, GUARD) == (code, reason)
    assert result["code"] == code


async def test_tether_server_closes_node_client(start_server, run_client) -> None:
    async def handler(ws):
        await ws.recv()
        await ws.close(4001, "server reason")

    srv = await start_server(handler, compression=None)
    assert await run_client(srv.url, "wait-close") == {"code": 4001, "reason": "server reason"}


async def test_tether_handler_exception_is_1011_for_node_client(start_server, run_client) -> None:
    async def handler(ws):
        await ws.recv()
        raise RuntimeError("handler bug")

    srv = await start_server(handler, compression=None)
    result = await run_client(srv.url, "wait-close")
    assert result["code"] == 1011


async def test_tether_server_shutdown_is_1001_for_node_client(start_server, run_client) -> None:
    async def handler(ws):
        await ws.recv()
        ws.server.close()
        await ws.wait_closed()

    srv = await start_server(handler, compression=None)
    result = await run_client(srv.url, "wait-close")
    assert result["code"] == 1001


async def test_tether_server_abrupt_drop_is_1006_for_node_client(start_server, run_client) -> None:
    async def handler(ws):
        await ws.recv()
        ws.transport.abort()

    srv = await start_server(handler, compression=None)
    result = await run_client(srv.url, "wait-close")
    assert result["code"] == 1006


async def test_node_client_abrupt_drop_is_1006_for_tether_server(start_server, run_client) -> None:
    seen, handler = _record_close(asyncio.get_running_loop())
    srv = await start_server(handler, compression=None)
    result = await run_client(srv.url, "terminate")
    assert result["code"] == 1006
    assert await asyncio.wait_for(seen, GUARD) == (1006, "")


async def test_node_client_default_compression(start_server, run_client, require) -> None:
    if importlib.util.find_spec("tether.protocol.extensions.permessage_deflate") is None:
        pytest.skip("tether.protocol.extensions.permessage_deflate is not there yet")
    srv = await start_server(max_size=MAX_SIZE)  # default compression
    result = await run_client(srv.url, "compress")
    assert "permessage-deflate" in result["extensions"]
    assert result["code"] == 1000


# ------------------------------------------------------ ws server, tether client


@pytest.mark.parametrize("size", SIZES, ids=[f"{s}B" for s in SIZES])
async def test_tether_client_node_server_echo(node_server, size) -> None:
    binary = random.Random(size).randbytes(size)
    text = binary.translate(_ASCII).decode("ascii")  # exactly size bytes of UTF-8
    async with tether.connect(f"{node_server}/echo", compression=None, max_size=MAX_SIZE) as ws:
        await ws.send(text)
        echoed = await asyncio.wait_for(ws.recv(), GUARD)
        assert type(echoed) is str and echoed == text
        await ws.send(binary)
        echoed = await asyncio.wait_for(ws.recv(), GUARD)
        assert type(echoed) is bytes and echoed == binary


async def test_tether_client_node_server_ping_both_ways(node_server) -> None:
    async with tether.connect(f"{node_server}/ping", compression=None) as ws:
        # The server pinged on connect; tether answered it automatically.
        assert await asyncio.wait_for(ws.recv(), GUARD) == "pong:from-node"
        assert await asyncio.wait_for(await ws.ping(b"from-tether"), GUARD) >= 0


async def test_tether_client_closes_node_server(node_server) -> None:
    ws = await tether.connect(f"{node_server}/echo", compression=None)
    await ws.send("hi")
    assert await ws.recv() == "hi"
    await asyncio.wait_for(ws.close(4000, "tether reason"), GUARD)
    assert ws.close_code == 4000
    with pytest.raises(ConnectionClosedError):
        await ws.recv()


async def test_node_server_closes_tether_client(node_server) -> None:
    async with tether.connect(f"{node_server}/close/4002/node%20says%20bye") as ws:
        await ws.send("go")
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), GUARD)
        assert (info.value.code, info.value.reason) == (4002, "node says bye")
    async with tether.connect(f"{node_server}/close/1000/") as ws:
        await ws.send("go")
        with pytest.raises(ConnectionClosedOK):
            await asyncio.wait_for(ws.recv(), GUARD)
        assert ws.close_code == 1000


async def test_node_server_abrupt_drop_is_1006_for_tether_client(node_server) -> None:
    async with tether.connect(f"{node_server}/terminate", compression=None) as ws:
        await ws.send("go")
        with pytest.raises(ConnectionClosedError) as info:
            await asyncio.wait_for(ws.recv(), GUARD)
        assert info.value.code == 1006
        assert ws.close_code == 1006


async def test_tether_client_node_server_without_deflate(node_server) -> None:
    if importlib.util.find_spec("tether.protocol.extensions.permessage_deflate") is None:
        pytest.skip("tether.protocol.extensions.permessage_deflate is not there yet")
    # ws servers disable permessage-deflate by default: the offer is declined cleanly.
    async with tether.connect(f"{node_server}/echo") as ws:
        assert "Sec-WebSocket-Extensions" not in ws.response_headers
        await ws.send("uncompressed " * 1000)
        assert await ws.recv() == "uncompressed " * 1000


@pytest.mark.parametrize("node_server", ["deflate"], indirect=True)
async def test_tether_client_node_server_with_deflate(node_server) -> None:
    if importlib.util.find_spec("tether.protocol.extensions.permessage_deflate") is None:
        pytest.skip("tether.protocol.extensions.permessage_deflate is not there yet")
    text = '{"event": "tick", "value": 12345, "tags": ["a", "b", "c"]}\n' * 20000
    binary = random.Random(1).randbytes(MiB)
    async with tether.connect(f"{node_server}/echo", max_size=MAX_SIZE) as ws:
        assert "permessage-deflate" in ws.response_headers["Sec-WebSocket-Extensions"]
        for message in (text, binary, "small", b"", ["frag", "ments"]):
            await ws.send(message)
            expected = "fragments" if isinstance(message, list) else message
            assert await asyncio.wait_for(ws.recv(), GUARD) == expected
