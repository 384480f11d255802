"""Every runnable code block of README.md and docs/ runs, and prints what the docs say it prints.

The convention (also in docs/index.md, "Code blocks in these docs"):

- A fenced block whose info string is exactly ``python`` is complete and
  runnable: this test writes it to a file and runs it with this interpreter
  in a subprocess (timeout 30 s), which must exit with status 0.
- ``python fragment`` marks a block that is only a piece of a program. It is
  not run, but it must still parse (top-level ``await`` allowed).
- Other languages (``sh``, ``console``, ``js`` ...) are not run. A Python block
  spelled ``py``, ``python3`` or ``Python`` is an error here, so nothing meant
  to run is skipped by accident.
- An HTML comment right before a block (blank lines between are fine) says
  what the block needs, as space-separated words::

      <!-- docs-test: needs=hub port=8000 -->

  ``needs=echo``
      a ``tether echo`` server is started first (its port: see ``port``).
  ``needs=hub``
      a ``tether serve`` hub is started first, with ``--allow-anonymous`` and
      a JWT secret the block finds in ``TETHER_JWT_SECRET`` (and the API key
      in ``TETHER_API_KEY``), as a real deployment would pass them.
  ``port=N``
      the number N in the block is a port: the test replaces it with a free
      one (the started server's, when the block needs one), so docs show
      readable ports and runs never collide. Default: 8765 with
      ``needs=echo``, 8000 with ``needs=hub``.
  ``server``
      the block serves until stopped: the test starts it, waits until its
      port (``port=N``, required) answers an HTTP request, then stops it with
      SIGINT. It passes if it was still running by then.
  ``timeout=S``
      seconds allowed instead of 30.
  ``skip="why"``
      not run; the test is reported as skipped with that reason.
- A block with the info string ``text`` right after a runnable block, and
  preceded by ``<!-- docs-test: output -->``, is that block's expected output:
  its stdout must be exactly these lines (trailing spaces aside).

New files under docs/ and new blocks are picked up without touching this test.
"""

from __future__ import annotations

import asyncio
import itertools
import os
import re
import shlex
import signal
import socket
import sys
from collections.abc import AsyncIterator, Iterator
from dataclasses import dataclass, field
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parent.parent
DOCUMENTS = [ROOT / "README.md", *sorted((ROOT / "docs").rglob("*.md"))]
DEFAULT_TIMEOUT = 30.0
DEFAULT_PORTS = {"echo": 8765, "hub": 8000}
HUB_SECRET = "docs-test-secret-0123456789abcdefghijklmnop"  # 43 bytes: HS256 wants >= 32
HUB_API_KEY = "docs-test-api-key"
NOT_PYTHON_SPELLINGS = {"py", "python3", "py3", "Python", "pycon"}
TIMEOUTS = (asyncio.TimeoutError, TimeoutError)  # distinct classes before Python 3.11
FENCE = re.compile(r"^(?P<indent> {0,3})(?P<fence>`{3,}|~{3,})(?P<info>.*)$")
DIRECTIVE = re.compile(r"^\s*<!--\s*docs-test:(?P<words>.*?)-->\s*$")


@dataclass
class Block:
    path: Path
    line: int  # of the opening fence, 1-based
    info: str
    code: str
    directives: dict[str, str] = field(default_factory=dict)
    expected_output: str | None = None

    @property
    def where(self) -> str:
        return f"{self.path.relative_to(ROOT)}:{self.line}"

    @property
    def language(self) -> str:
        return self.info.split()[0] if self.info.split() else ""


def _directives(comment: str | None) -> dict[str, str]:
    if comment is None:
        return {}
    out = {}
    for word in shlex.split(comment):
        key, _, value = word.partition("=")
        out[key] = value
    return out


def read_blocks(path: Path) -> list[Block]:
    """Fenced blocks in order, each with the directive comment right before it."""
    lines = path.read_text().splitlines()
    blocks: list[Block] = []
    pending: str | None = None  # the words of the last directive, until a block takes them
    index = 0
    while index < len(lines):
        text = lines[index]
        directive = DIRECTIVE.match(text)
        opening = FENCE.match(text)
        if directive:
            pending = directive.group("words")
        elif opening:
            fence = opening.group("fence")
            first_line = index + 1
            body: list[str] = []
            index += 1
            while index < len(lines) and not (
                lines[index].strip().startswith(fence[0] * len(fence))
                and not lines[index].strip().strip(fence[0])
            ):
                body.append(lines[index])
                index += 1
            blocks.append(
                Block(
                    path,
                    first_line,
                    opening.group("info").strip(),
                    "\n".join(body) + "\n",
                    _directives(pending),
                )
            )
            pending = None
        elif text.strip():
            pending = None  # a directive must be right before its block
        index += 1
    # Expected outputs: a `text` block marked `output`, right after a runnable block.
    for previous, block in itertools.pairwise(blocks):
        if block.language == "text" and "output" in block.directives:
            assert previous.info == "python", f"{block.where}: output after a non-runnable block"
            previous.expected_output = block.code
    return blocks


ALL_BLOCKS = [block for path in DOCUMENTS for block in read_blocks(path)]
RUNNABLE = [block for block in ALL_BLOCKS if block.info == "python"]
FRAGMENTS = [block for block in ALL_BLOCKS if block.info == "python fragment"]


def test_blocks_are_found() -> None:
    # The parser finds what is there: guards against a silently empty parametrization.
    assert len(RUNNABLE) >= 4 and len(FRAGMENTS) >= 1
    assert any(block.path.name == "README.md" for block in RUNNABLE)


def test_python_blocks_use_the_convention() -> None:
    wrong = [
        f"{block.where}: ```{block.info}"
        for block in ALL_BLOCKS
        if block.language in NOT_PYTHON_SPELLINGS
        or (block.language == "python" and block.info not in ("python", "python fragment"))
    ]
    assert not wrong, "use ```python (runnable) or ```python fragment: " + ", ".join(wrong)


@pytest.mark.parametrize("block", FRAGMENTS, ids=[block.where for block in FRAGMENTS])
def test_fragment_parses(block: Block) -> None:
    import ast

    flags = ast.PyCF_ALLOW_TOP_LEVEL_AWAIT | ast.PyCF_ONLY_AST
    try:
        compile(block.code, block.where, "exec", flags=flags)
    except SyntaxError as exc:
        pytest.fail(f"{block.where}: fragment does not parse: {exc}")


# ------------------------------------------------------------------ running


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def with_port(code: str, documented: int, actual: int) -> str:
    """The block with its documented port number replaced (never inside a longer number)."""
    return re.sub(rf"(?<![\d.]){documented}(?!\d)", str(actual), code)


async def _read_port(process: asyncio.subprocess.Process, pattern: str) -> int:
    """Read the server's stdout until its banner shows the port it listens on."""
    assert process.stdout is not None
    seen = []
    while True:
        raw = await asyncio.wait_for(process.stdout.readline(), DEFAULT_TIMEOUT)
        if not raw:
            raise AssertionError(f"server exited before listening: {seen}")
        seen.append(raw.decode())
        match = re.search(pattern, seen[-1])
        if match:
            return int(match.group(1))


class Services:
    """Servers blocks need (``tether echo``, ``tether serve``), each started once per test."""

    def __init__(self) -> None:
        self.ports: dict[str, int] = {}
        self.processes: list[asyncio.subprocess.Process] = []

    async def need(self, kind: str) -> int:
        """The port of a running ``kind`` server (``echo`` or ``hub``)."""
        if kind not in self.ports:
            self.ports[kind] = await self._start(kind)
        return self.ports[kind]

    async def _start(self, kind: str) -> int:
        args = ["echo", "--port", "0"]
        if kind == "hub":
            args = ["serve", "--port", "0", "--allow-anonymous"]
        process = await asyncio.create_subprocess_exec(
            sys.executable,
            "-m",
            "tether",
            *args,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.DEVNULL,
            env={**os.environ, "TETHER_JWT_SECRET": HUB_SECRET, "TETHER_API_KEY": HUB_API_KEY},
        )
        self.processes.append(process)
        return await _read_port(process, r"(?:ws|http)://127\.0\.0\.1:(\d+)/")

    async def stop(self) -> None:
        for process in self.processes:
            if process.returncode is None:
                process.terminate()
            await process.wait()


@pytest.fixture
async def services() -> AsyncIterator[Services]:
    running = Services()
    try:
        yield running
    finally:
        await running.stop()


async def _answers_http(port: int) -> bool:
    """A WebSocket upgrade request to ``/`` on ``port`` gets an HTTP response: the server is up.

    A plain ``tether.serve`` answers 101; a hub answers ``/`` with its demo page.
    """
    try:
        reader, writer = await asyncio.open_connection("127.0.0.1", port)
    except OSError:
        return False
    try:
        writer.write(
            b"GET / HTTP/1.1\r\nHost: 127.0.0.1\r\nUpgrade: websocket\r\n"
            b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
            b"Sec-WebSocket-Version: 13\r\n\r\n"
        )
        status = await asyncio.wait_for(reader.readline(), 5)
        return status.startswith(b"HTTP/1.1 ")
    except (OSError, *TIMEOUTS):
        return False
    finally:
        writer.close()


async def _spawn(path: Path, env: dict[str, str]) -> asyncio.subprocess.Process:
    """The block's file run by this interpreter, in its own folder, without stdin."""
    return await asyncio.create_subprocess_exec(
        sys.executable,
        str(path),
        cwd=path.parent,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        stdin=asyncio.subprocess.DEVNULL,
        env={**os.environ, **env},
    )


async def _run_server_block(path: Path, port: int, timeout: float, env: dict[str, str]) -> None:
    process = await _spawn(path, env)
    try:
        deadline = asyncio.get_running_loop().time() + timeout
        while not await _answers_http(port):
            if process.returncode is not None:
                break
            assert asyncio.get_running_loop().time() < deadline, "server never answered"
            await asyncio.sleep(0.1)  # polling a port another process opens: nothing to await
        assert process.returncode is None, (
            f"the server exited with {process.returncode} before serving: "
            + (await process.stderr.read()).decode()[-2000:]  # type: ignore[union-attr]
        )
    finally:
        if process.returncode is None:
            process.send_signal(signal.SIGINT)
            try:
                await asyncio.wait_for(process.wait(), 10)
            except TIMEOUTS:
                process.kill()
                await process.wait()


async def _run_block(path: Path, timeout: float, env: dict[str, str]) -> tuple[int, str, str]:
    process = await _spawn(path, env)
    try:
        out, err = await asyncio.wait_for(process.communicate(), timeout)
    except TIMEOUTS:
        process.kill()
        await process.wait()
        pytest.fail(f"did not finish within {timeout:g} s")
    assert process.returncode is not None
    return process.returncode, out.decode(), err.decode()


def _cases() -> Iterator[object]:
    for block in RUNNABLE:
        marks = []
        if "skip" in block.directives:
            marks.append(pytest.mark.skip(reason=block.directives["skip"] or "docs-test: skip"))
        yield pytest.param(block, id=block.where, marks=marks)


@pytest.mark.parametrize("block", list(_cases()))
async def test_block_runs(block: Block, services: Services, tmp_path: Path) -> None:
    needs = block.directives.get("needs", "")
    timeout = float(block.directives.get("timeout") or DEFAULT_TIMEOUT)
    documented = block.directives.get("port") or (
        str(DEFAULT_PORTS[needs]) if needs in DEFAULT_PORTS else ""
    )
    assert not needs or needs in DEFAULT_PORTS, f"{block.where}: unknown needs={needs}"
    code = block.code
    env: dict[str, str] = {}
    if needs:
        port = await services.need(needs)
        if needs == "hub":
            env = {"TETHER_JWT_SECRET": HUB_SECRET, "TETHER_API_KEY": HUB_API_KEY}
    else:
        port = free_port()
    if documented:
        assert re.search(rf"(?<![\d.]){documented}(?!\d)", code), (
            f"{block.where}: port={documented} but the block does not mention it"
        )
        code = with_port(code, int(documented), port)
    script = tmp_path / "block.py"
    script.write_text(code)

    if "server" in block.directives:
        assert documented, f"{block.where}: a server block needs port=N"
        await _run_server_block(script, port, timeout, env)
        return
    status, out, err = await _run_block(script, timeout, env)
    assert status == 0, f"{block.where} exited with {status}:\n{err[-3000:]}"
    if block.expected_output is not None:
        got = [line.rstrip() for line in out.rstrip("\n").splitlines()]
        want = [line.rstrip() for line in block.expected_output.rstrip("\n").splitlines()]
        assert got == want, f"{block.where}: the docs show {want}, the block printed {got}"
