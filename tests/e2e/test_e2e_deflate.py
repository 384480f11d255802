"""Interop with a real browser: headless Chromium against a plain tether server.

Chromium offers permessage-deflate (with ``client_max_window_bits``); the test
checks the extension it negotiated and echoes text and binary messages from
0 B to 4 MiB through it. The page is served by the same tether server
(``process_request``): Chromium refuses WebSockets to 127.0.0.1 from
about:blank.
"""

from __future__ import annotations

from collections.abc import AsyncIterator, Callable
from typing import Any

import pytest
import pytest_asyncio

import tether

pytestmark = pytest.mark.asyncio(loop_scope="module")

PAGE = """<!doctype html><meta charset="utf-8"><title>deflate</title>
<script>
async function echoAll(sizes) {
  const ws = new WebSocket(`ws://${location.host}/echo`);
  ws.binaryType = "arraybuffer";
  await new Promise((ok, fail) => { ws.onopen = ok; ws.onerror = fail; });
  const queue = [];
  let wake = null;
  ws.onmessage = (e) => { queue.push(e.data); if (wake) { wake(); wake = null; } };
  const next = async () => {
    while (!queue.length) await new Promise((r) => (wake = r));
    return queue.shift();
  };
  const results = [];
  for (const size of sizes) {
    // Text: JSON-like and compressible; binary: a byte pattern with structure.
    const text = JSON.stringify({n: size}).padEnd(size, "abcdefgh é").slice(0, size);
    ws.send(text);
    const t = await next();
    const bytes = new Uint8Array(size);
    for (let i = 0; i < size; i++) bytes[i] = (i * 7 + (i >> 8)) & 255;
    ws.send(bytes.buffer);
    const b = new Uint8Array(await next());
    let same = b.length === size;
    for (let i = 0; same && i < size; i++) same = b[i] === bytes[i];
    results.push({size, text: t === text, binary: same, textLength: t.length});
  }
  const extensions = ws.extensions;
  ws.close(1000);
  return {extensions, results};
}
</script>""".encode()

SIZES = [0, 1, 125, 126, 65535, 65536, 1 << 20, 4 << 20]


@pytest_asyncio.fixture(loop_scope="module")
async def echo_server() -> AsyncIterator[int]:
    async def echo(ws: tether.ServerConnection) -> None:
        async for message in ws:
            await ws.send(message)

    def page(connection: tether.ServerConnection, request: tether.Request) -> Any:
        if request.path != "/":
            return None  # upgrade
        headers = {"Content-Type": "text/html; charset=utf-8", "Content-Length": str(len(PAGE))}
        return tether.Response(200, "OK", tether.Headers(headers), PAGE)

    async with tether.serve(echo, "127.0.0.1", 0, process_request=page, max_size=8 << 20) as server:
        yield server.sockets[0].getsockname()[1]


async def test_chromium_negotiates_deflate_and_echoes_0_to_4_mib(
    browser: Any, echo_server: int, require: Callable[..., None]
) -> None:
    require(browser is not None, "Chromium or Playwright is missing (see tests/e2e/conftest.py)")
    context = await browser.new_context()
    try:
        page = await context.new_page()
        await page.goto(f"http://127.0.0.1:{echo_server}/")
        outcome = await page.evaluate("sizes => echoAll(sizes)", SIZES)
    finally:
        await context.close()
    extensions = outcome["extensions"]
    assert extensions.startswith("permessage-deflate"), extensions
    assert "client_max_window_bits=12" in extensions
    assert [r["size"] for r in outcome["results"]] == SIZES
    for result in outcome["results"]:
        assert result["text"], f"text of {result['size']} bytes came back different"
        assert result["binary"], f"binary of {result['size']} bytes came back different"
