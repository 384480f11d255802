"""In-process microbenchmark of tether's echo path, without sockets.

Feeds masked frames to a server connection through a fake transport and
reports the CPU microseconds per echoed message: parse, deliver to the handler's
``async for``, send, frame. Useful for profiling the hot path in isolation;
the comparisons with other libraries live in the shared harness.

usage: python bench/micro_echo.py [SIZE] [COUNT] [--profile]
"""

from __future__ import annotations

import asyncio
import cProfile
import os
import pstats
import sys
import time
from typing import Any

import tether
from tether.asyncio.server import Server, ServerConnection
from tether.protocol.connection import State
from tether.protocol.frames import serialize_frame


class NullTransport:
    def __init__(self) -> None:
        self.written = 0

    def write(self, data: bytes) -> None:
        self.written += len(data)

    def writelines(self, chunks: Any) -> None:
        for chunk in chunks:
            self.written += len(chunk)

    def can_write_eof(self) -> bool:
        return False

    def get_extra_info(self, name: str, default: Any = None) -> Any:
        return default

    def set_write_buffer_limits(self, high: int, low: int) -> None:
        pass

    def get_write_buffer_size(self) -> int:
        return 0

    def is_closing(self) -> bool:
        return False

    def close(self) -> None:
        pass

    def pause_reading(self) -> None:
        pass

    def resume_reading(self) -> None:
        pass


def feed(conn: Any, frame: bytes) -> None:
    """What the transport does on a read: fill get_buffer(), call buffer_updated()."""
    n = len(frame)
    while n:
        buf = conn.get_buffer(-1)
        k = min(len(buf), n)
        buf[:k] = frame[len(frame) - n : len(frame) - n + k]
        del buf
        conn.buffer_updated(k)
        n -= k


class EchoListener(tether.Listener):
    count = 0

    def on_message(self, ws: Any, message: Any) -> None:
        ws.send_nowait(message)
        EchoListener.count += 1


async def run_listener(size: int, count: int) -> float:
    server = Server(EchoListener, compression=None, ping_interval=None, max_size=None)
    conn = server._make_connection()
    transport = NullTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.protocol._set_state(State.OPEN)  # the checked transition keeps send_ready true
    conn._listener = EchoListener()
    conn._enable_fast_paths()
    frame = serialize_frame(2, os.urandom(size), mask=os.urandom(4))
    start = time.process_time()
    for _ in range(count):
        feed(conn, frame)
    elapsed = time.process_time() - start
    assert EchoListener.count == count and transport.written >= count * size
    return elapsed * 1e6 / count


async def run(size: int, count: int) -> float:
    if "--listener" in sys.argv:
        return await run_listener(size, count)
    done = asyncio.Event()
    seen = 0

    async def echo(ws: ServerConnection) -> None:
        nonlocal seen
        async for message in ws:
            await ws.send(message)
            seen += 1
            if seen == count:
                done.set()

    server = Server(echo, compression=None, ping_interval=None, max_size=None)
    conn = server._make_connection()
    transport = NullTransport()
    conn.connection_made(transport)  # type: ignore[arg-type]
    conn.protocol._set_state(State.OPEN)  # the checked transition keeps send_ready true
    conn._handler_task = server._track(conn._run_handler())
    conn._enable_fast_paths()
    frame = serialize_frame(2, os.urandom(size), mask=os.urandom(4))
    await asyncio.sleep(0)
    start = time.process_time()
    for _ in range(count):
        feed(conn, frame)
        await asyncio.sleep(0)
    await done.wait()
    elapsed = time.process_time() - start
    assert transport.written >= count * size
    return elapsed * 1e6 / count


def main() -> None:
    args = [a for a in sys.argv[1:] if not a.startswith("--")]
    size = int(args[0]) if args else 64
    count = int(args[1]) if len(args) > 1 else 100_000
    if "--profile" in sys.argv:
        prof = cProfile.Profile()
        prof.enable()
        us = asyncio.run(run(size, count))
        prof.disable()
        pstats.Stats(prof).sort_stats("tottime").print_stats(15)
    else:
        us = asyncio.run(run(size, count))
    print(f"{size} B: {us:.2f} us per echoed message ({tether.__name__})")


if __name__ == "__main__":
    main()
