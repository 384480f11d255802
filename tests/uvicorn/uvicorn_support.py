"""Run the real uvicorn in a child process with ``--ws tether.uvicorn:WebSocketProtocol``.

``UvicornProcess`` starts ``python -m uvicorn`` on a free port of
127.0.0.1 with this checkout's sources first on the path, collects its
output (uvicorn's log and the apps' ``REPORT`` lines, see asgi_apps.py) in
a thread, and lets a test await a line in it.
"""

from __future__ import annotations

import asyncio
import json
import os
import signal
import socket
import subprocess
import sys
import threading
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any

HERE = Path(__file__).resolve().parent
SRC = HERE.parent.parent / "src"
ENGINE = "tether.uvicorn:WebSocketProtocol"
# Bounds waits for things that should happen quickly; never a way to wait.
GUARD = 15.0


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


class UvicornProcess:
    """``with UvicornProcess("asgi_apps:app", "--ws-max-size", "1000") as server: ...``."""

    def __init__(self, target: str, *args: str, engine: str | None = ENGINE) -> None:
        self.target = target
        self.args = list(args)
        self.engine = engine
        self.port = 0
        self.lines: list[str] = []
        self._changed = threading.Condition()
        self.proc: subprocess.Popen[bytes] | None = None
        self._reader: threading.Thread | None = None

    def url(self, path: str) -> str:
        return f"ws://127.0.0.1:{self.port}{path}"

    def __enter__(self) -> UvicornProcess:
        self.port = free_port()
        env = dict(os.environ)
        env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
        env["PYTHONUNBUFFERED"] = "1"
        cmd = [sys.executable, "-m", "uvicorn", self.target, "--app-dir", str(HERE)]
        cmd += ["--host", "127.0.0.1", "--port", str(self.port)]
        if self.engine is not None:
            cmd += ["--ws", self.engine]
        cmd += self.args
        self.proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT, env=env, cwd=str(HERE)
        )
        self._reader = threading.Thread(target=self._read, daemon=True)
        self._reader.start()
        if not self._wait_sync(lambda: self._has("Uvicorn running on"), GUARD):
            self.stop()
            raise RuntimeError("uvicorn did not start:\n" + self.output())
        return self

    def _read(self) -> None:
        assert self.proc is not None and self.proc.stdout is not None
        for raw in self.proc.stdout:
            with self._changed:
                self.lines.append(raw.decode("utf-8", "replace").rstrip("\n"))
                self._changed.notify_all()
        with self._changed:
            self.lines.append("<exit>")
            self._changed.notify_all()

    def _has(self, text: str) -> bool:
        return any(text in line for line in self.lines)

    def _wait_sync(self, predicate: Callable[[], bool], timeout: float) -> bool:
        with self._changed:
            return self._changed.wait_for(predicate, timeout)

    def output(self) -> str:
        with self._changed:
            return "\n".join(self.lines)

    async def wait_for(self, text: str, timeout: float = GUARD) -> str:
        """Await a line of output containing ``text``; return it."""

        def found() -> bool:
            return self._has(text)

        ok = await asyncio.to_thread(self._wait_sync, found, timeout)
        assert ok, f"no {text!r} in uvicorn's output within {timeout} s:\n{self.output()}"
        with self._changed:
            return next(line for line in self.lines if text in line)

    async def report(self, route: str, nth: int = 1) -> Any:
        """The ``nth`` REPORT line an app printed for ``route``, decoded."""
        prefix = f"REPORT {route} "

        def enough() -> bool:
            return sum(line.startswith(prefix) for line in self.lines) >= nth

        ok = await asyncio.to_thread(self._wait_sync, enough, GUARD)
        assert ok, f"no report #{nth} for {route!r}:\n{self.output()}"
        with self._changed:
            found = [line for line in self.lines if line.startswith(prefix)]
        return json.loads(found[nth - 1][len(prefix) :])

    def signal(self, signum: int = signal.SIGINT) -> None:
        assert self.proc is not None
        self.proc.send_signal(signum)

    async def exit_code(self, timeout: float = GUARD) -> int:
        assert self.proc is not None
        return await asyncio.to_thread(self.proc.wait, timeout)

    def stop(self) -> None:
        proc = self.proc
        if proc is None or proc.poll() is not None:
            return
        proc.send_signal(signal.SIGINT)
        try:
            proc.wait(timeout=GUARD)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()
        if self._reader is not None:
            self._reader.join(GUARD)
