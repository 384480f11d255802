"""``tether connect URL --proxy …``: the CLI through tinyproxy, and a refusing proxy in one line."""

from __future__ import annotations

import asyncio
import os
import sys

GUARD = 20.0


async def run_connect(*args: str, stdin: bytes = b"") -> tuple[int, str, str]:
    env = {k: v for k, v in os.environ.items() if not k.lower().endswith("_proxy")}
    proc = await asyncio.create_subprocess_exec(
        sys.executable,
        "-m",
        "tether",
        "connect",
        *args,
        stdin=asyncio.subprocess.PIPE,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        env=env,
    )
    out, err = await asyncio.wait_for(proc.communicate(stdin), GUARD)
    assert proc.returncode is not None
    return proc.returncode, out.decode(), err.decode()


async def test_connect_through_tinyproxy(start_server, tinyproxy) -> None:
    proxy = await tinyproxy(auth=("cli", "pw"))
    srv = await start_server()
    status, out, err = await run_connect(
        srv.url, "--proxy", proxy.replace("http://", "http://cli:pw@"), "--linger", "0.5",
        stdin=b"hello proxy\n",
    )  # fmt: skip
    assert status == 0, err
    assert "< text: hello proxy" in out


async def test_connect_refused_by_the_proxy_is_one_line(start_server, tinyproxy) -> None:
    proxy = await tinyproxy(auth=("cli", "pw"))
    srv = await start_server()
    status, _out, err = await run_connect(srv.url, "--proxy", proxy)
    assert status == 1
    lines = err.strip().splitlines()
    assert len(lines) == 1, err
    assert "proxy failed" in lines[0] and "407" in lines[0]
