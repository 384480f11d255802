"""tether.js's ``rpc()`` and server-side subscriptions against a real hub with app hooks.

Runs tests/js/rpc_live.mjs under node (20+: its WebSocket is behind
``--experimental-websocket`` there); skips without node unless
``TETHER_REQUIRE_SERVICES=1``.
"""

from __future__ import annotations

import asyncio
import json
import shutil
import subprocess
from collections.abc import Awaitable, Callable
from pathlib import Path
from typing import Any

from hub_support import GUARD, config

from tether.hub import HubServer, Node
from tether.hub.hooks import ConnectRequest, ConnectResult, Hooks, Refuse, RpcRequest
from tether_testing import require

JS = Path(__file__).resolve().parents[1] / "js"


def node_binary() -> str:
    node = shutil.which("node")
    require(node, "node is not installed (apt-get install -y nodejs)")
    assert node is not None
    version = subprocess.run([node, "--version"], capture_output=True, text=True, check=True)
    major = int(version.stdout.strip().lstrip("v").split(".")[0])
    require(major >= 20, f"node {version.stdout.strip()} has no WebSocket (20+ needed)")
    return node


async def test_tether_js_rpc_and_server_side_subscription(
    start_hub: Callable[..., Awaitable[HubServer]],
) -> None:
    node_path = node_binary()
    node: Node

    async def on_connect(request: ConnectRequest) -> ConnectResult:
        return ConnectResult(user="js", data={"echo": request.data}, channels=["inbox:js"])

    async def on_rpc(request: RpcRequest) -> Any:
        if request.method == "add":
            return sum(request.data)
        if request.method == "publish_to_me":
            await node.publish("inbox:js", {"hello": request.session.user})
            return None
        raise Refuse(1404, f"no method {request.method}")

    node = Node(config(), hooks=Hooks(on_connect=on_connect, on_rpc=on_rpc))
    hub = await start_hub(node)
    process = await asyncio.create_subprocess_exec(
        node_path,
        "--experimental-websocket",
        "--no-warnings",
        str(JS / "rpc_live.mjs"),
        hub.websocket_url,
        cwd=JS,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
    )
    stdout, stderr = await asyncio.wait_for(process.communicate(), 3 * GUARD)
    assert process.returncode == 0, stderr.decode()[-4000:]
    seen = json.loads(stdout.decode().strip().splitlines()[-1])
    assert seen == {
        "serverSubscription": "inbox:js",
        "connectData": {"echo": {"from": "tether.js"}},
        "sum": 6,
        "error": {"code": 1404, "message": "no method nope", "temporary": False},
        "published": {"hello": "js"},
    }
