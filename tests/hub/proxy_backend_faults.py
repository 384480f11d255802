"""The example proxy backend (examples/proxy_backend.py) plus backends that misbehave.

Run by tests/hub/test_hub_proxy.py under uvicorn in a subprocess. Every hook
path of the example is kept; ``/{fault}/{hook}`` answers with one fault:

- ``slow``: never answers (waits on an event nobody sets)
- ``garbage``: 200 with an HTML body
- ``error``: 503
- ``shape``: JSON, but not an object with ``result`` or ``error``
- ``huge``: a 2 MiB answer
- ``badcode``: an ``error`` whose code is neither a wire code nor 1000-1999
- ``gate``: answers ``{"result": {"data": "through"}}`` once ``POST /release`` was
  called, counting the calls in flight (``GET /stats``)
"""

from __future__ import annotations

import asyncio
import sys
from pathlib import Path

from starlette.applications import Starlette
from starlette.requests import Request
from starlette.responses import JSONResponse, PlainTextResponse, Response
from starlette.routing import Route

sys.path.insert(0, str(Path(__file__).resolve().parents[2] / "examples"))

import proxy_backend

gate = asyncio.Event()
stats = {"in_flight": 0, "max_in_flight": 0, "calls": 0}


async def fault(request: Request) -> Response:
    kind = request.path_params["fault"]
    await request.body()
    if kind == "slow":
        await asyncio.Event().wait()
    if kind == "garbage":
        return PlainTextResponse("<html>502 Bad Gateway</html>")
    if kind == "error":
        return JSONResponse({"error": "overloaded"}, status_code=503)
    if kind == "shape":
        return JSONResponse({"result": ["not", "an", "object"]})
    if kind == "huge":
        return JSONResponse({"result": {"data": "x" * (2 * 1024 * 1024)}})
    if kind == "badcode":
        return JSONResponse({"error": {"code": 4003, "message": "not a tether code"}})
    if kind == "gate":
        stats["calls"] += 1
        stats["in_flight"] += 1
        stats["max_in_flight"] = max(stats["max_in_flight"], stats["in_flight"])
        try:
            await gate.wait()
        finally:
            stats["in_flight"] -= 1
        return JSONResponse({"result": {"data": "through"}})
    return JSONResponse({"error": f"no fault {kind}"}, status_code=404)


async def release(request: Request) -> JSONResponse:
    gate.set()
    return JSONResponse({})


async def get_stats(request: Request) -> JSONResponse:
    return JSONResponse(stats)


app = Starlette(
    routes=[
        *proxy_backend.routes,
        Route("/release", release, methods=["POST"]),
        Route("/stats", get_stats, methods=["GET"]),
        Route("/{fault}/{hook}", fault, methods=["POST"]),
    ]
)
