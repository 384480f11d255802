"""Run websockets' own example programs against tether, import lines changed, and count.

Not a pytest module (CI cannot reach GitHub, and websockets' sdist on PyPI
carries no ``example/`` folder); a measurement to run by hand::

    git clone https://github.com/python-websockets/websockets /tmp/websockets
    python tests/compat/upstream_examples.py /tmp/websockets [--library websockets]

Nothing of websockets is copied here: the programs are read from the
checkout given, copied to a temporary directory, and changed in two ways
only: ``websockets`` in import lines becomes ``tether`` (``--library
websockets`` keeps it, to check the harness against the original), and the
fixed port numbers become free ones (the machine is shared). Each server
program is probed by the real websockets client (a message and its answer,
a health check where the program has one, SIGTERM for those that handle
it); each client program gets a real websockets server as its peer. The
``sync``, ``trio`` and ``legacy`` programs, and those needing Django, are
counted apart (the sync API is another piece of work).

The snippets in its documentation are mostly fragments: those that are
whole programs run like the examples; for the rest, every name they import
from websockets and every method they call on a connection is looked up in
tether.
"""

from __future__ import annotations

import argparse
import asyncio
import contextlib
import json
import os
import random
import re
import shutil
import signal
import socket
import ssl
import sys
import tempfile
import textwrap
from collections.abc import Awaitable, Callable
from dataclasses import dataclass
from pathlib import Path

from websockets.asyncio.client import connect as ws_connect
from websockets.asyncio.client import unix_connect as ws_unix_connect
from websockets.asyncio.server import serve as ws_serve

TIMEOUT = 8.0


def free_port() -> int:
    """A port free on every interface (some programs listen on all of them).

    Below the kernel's ephemeral range: a port picked from that range can be
    taken by any outgoing connection on the machine before the program binds it.
    """
    low = int(Path("/proc/sys/net/ipv4/ip_local_port_range").read_text().split()[0])
    while True:
        port = random.randrange(max(low - 12000, 1024), low)
        with socket.socket() as sock, socket.socket(socket.AF_INET6) as sock6:
            sock6.setsockopt(socket.IPPROTO_IPV6, socket.IPV6_V6ONLY, 1)
            try:
                sock.bind(("0.0.0.0", port))
                sock6.bind(("::", port))
            except OSError:
                continue
        return port


def port_free(port: int) -> bool:
    with socket.socket() as sock:
        try:
            sock.bind(("0.0.0.0", port))
        except OSError:
            return False
        return True


def ported(source: str, library: str, ports: dict[int, int]) -> str:
    """The program with only its import lines and its port numbers changed."""
    if library == "tether":
        source = re.sub(r"^(\s*)from websockets(\.|\s)", r"\1from tether\2", source, flags=re.M)
        source = re.sub(
            r"^(\s*)import websockets\b", r"\1import tether as websockets", source, flags=re.M
        )
    for old, new in ports.items():
        source = re.sub(rf"\b{old}\b", str(new), source)
    return source


@dataclass
class Outcome:
    name: str
    ok: bool
    detail: str


Probe = Callable[[int, Path], Awaitable[str]]


async def _ws(port: int, path: str = "/", **kwargs: object) -> object:
    return ws_connect(f"ws://localhost:{port}{path}", open_timeout=TIMEOUT, **kwargs)


async def probe_echo(port: int, cwd: Path) -> str:
    async with ws_connect(f"ws://localhost:{port}/", open_timeout=TIMEOUT) as ws:
        await ws.send("ping")
        answer = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert answer == "ping", answer
    return "echo"


async def probe_hello(port: int, cwd: Path) -> str:
    async with ws_connect(f"ws://localhost:{port}/", open_timeout=TIMEOUT) as ws:
        await ws.send("tether")
        answer = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert answer == "Hello tether!", answer
    return "hello"


async def probe_first_message(port: int, cwd: Path) -> str:
    async with ws_connect(f"ws://localhost:{port}/", open_timeout=TIMEOUT) as ws:
        message = await asyncio.wait_for(ws.recv(), TIMEOUT)
        assert message
    return "received a message"


async def probe_opens(port: int, cwd: Path) -> str:
    async with ws_connect(f"ws://localhost:{port}/", open_timeout=TIMEOUT):
        pass
    return "handshake"


async def probe_handshake(port: int, cwd: Path) -> str:
    async with ws_connect(f"ws://localhost:{port}/", open_timeout=TIMEOUT) as ws:
        await ws.send("hello")
        await asyncio.sleep(0.2)
        assert ws.state.name == "OPEN"
    return "handshake"


async def http_get(port: int, path: str) -> tuple[int, bytes]:
    reader, writer = await asyncio.open_connection("localhost", port)
    writer.write(f"GET {path} HTTP/1.1\r\nHost: localhost\r\n\r\n".encode())
    data = await asyncio.wait_for(reader.read(), TIMEOUT)
    writer.close()
    head, _, body = data.partition(b"\r\n\r\n")
    return int(head.split()[1]), body


async def probe_health_then_echo(port: int, cwd: Path) -> str:
    status, body = await http_get(port, "/healthz")
    assert (status, body) == (200, b"OK\n"), (status, body)
    await probe_echo(port, cwd)
    return "health check + echo"


async def probe_tls_hello(port: int, cwd: Path) -> str:
    context = ssl.SSLContext(ssl.PROTOCOL_TLS_CLIENT)
    context.load_verify_locations(cwd / "localhost.pem")
    async with ws_connect(f"wss://localhost:{port}/", ssl=context, open_timeout=TIMEOUT) as ws:
        await ws.send("tether")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "Hello tether!"
    return "wss hello"


async def probe_connect4_play(port: int, cwd: Path) -> str:
    async with ws_connect(f"ws://localhost:{port}/", open_timeout=TIMEOUT) as ws:
        await ws.send(json.dumps({"type": "play", "column": 3}))
        event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert event["type"] == "play", event
    return "connect4 play"


async def probe_connect4_init(port: int, cwd: Path) -> str:
    async with ws_connect(f"ws://localhost:{port}/", open_timeout=TIMEOUT) as ws:
        await ws.send(json.dumps({"type": "init"}))
        event = json.loads(await asyncio.wait_for(ws.recv(), TIMEOUT))
        assert event["type"] == "init" and event["join"], event
    return "connect4 init"


async def probe_unix_echo(port: int, cwd: Path) -> str:
    path = cwd / "websockets-test_00.sock"
    for _ in range(100):
        if path.exists():
            break
        await asyncio.sleep(0.05)
    async with ws_unix_connect(str(path), open_timeout=TIMEOUT) as ws:
        await ws.send("ping")
        assert await asyncio.wait_for(ws.recv(), TIMEOUT) == "ping"
    return "unix echo"


# Server programs: relative path -> (fixed port in the program, probe, handles SIGTERM).
SERVERS: dict[str, tuple[int | None, Probe, bool]] = {
    "asyncio/echo.py": (8765, probe_echo, False),
    "asyncio/server.py": (8765, probe_hello, False),
    "faq/health_check_server.py": (8765, probe_health_then_echo, False),
    "faq/shutdown_server.py": (8765, probe_handshake, True),
    "quick/counter.py": (6789, probe_first_message, False),
    "quick/server.py": (8765, probe_hello, False),
    "quick/show_time.py": (5678, probe_first_message, False),
    "quick/sync_time.py": (5678, probe_first_message, False),
    "tls/server.py": (8765, probe_tls_hello, False),
    "deployment/fly/app.py": (8080, probe_health_then_echo, True),
    "deployment/haproxy/app.py": (8000, probe_echo, True),
    "deployment/heroku/app.py": (None, probe_echo, True),
    "deployment/koyeb/app.py": (None, probe_health_then_echo, True),
    "deployment/kubernetes/app.py": (80, probe_health_then_echo, True),
    "deployment/nginx/app.py": (None, probe_unix_echo, True),
    "deployment/render/app.py": (8080, probe_health_then_echo, True),
    "deployment/supervisor/app.py": (8080, probe_echo, True),
    "tutorial/step1/app.py": (8001, probe_connect4_play, False),
    "tutorial/step2/app.py": (8001, probe_connect4_init, False),
    "tutorial/step3/app.py": (None, probe_connect4_init, True),
    # The synchronous API (run when tether.sync exists).
    "sync/echo.py": (8765, probe_echo, False),
    "sync/server.py": (8765, probe_hello, False),
}

# Client programs: relative path -> (fixed port, peer handler, stdin, argv, expected output).


async def peer_hello(ws: object) -> None:
    name = await ws.recv()  # type: ignore[attr-defined]
    await ws.send(f"Hello {name}!")  # type: ignore[attr-defined]


PEER_CONNECTED = asyncio.Event()


async def peer_echo(ws: object) -> None:
    PEER_CONNECTED.set()
    async for message in ws:  # type: ignore[attr-defined]
        await ws.send(message)  # type: ignore[attr-defined]


CLIENTS = {
    "asyncio/client.py": (8765, peer_hello, b"tether\n", [], "<<< Hello tether!"),
    "quick/client.py": (8765, peer_hello, b"tether\n", [], "<<< Hello tether!"),
    "sync/client.py": (8765, peer_hello, b"tether\n", [], "<<< Hello tether!"),
    "sync/hello.py": (8765, peer_echo, b"", [], "Hello world!"),
    "tls/client.py": (8765, peer_hello, b"tether\n", [], "<<< Hello tether!"),
    "asyncio/hello.py": (8765, peer_echo, b"", [], "Hello world!"),
    "faq/shutdown_client.py": (8765, peer_echo, b"", [], None),
    "deployment/kubernetes/benchmark.py": (32080, peer_echo, b"", ["2", "3"], None),
}

SKIPPED_DIRS = {"trio": "trio", "legacy": "legacy", "django": "needs Django"}


def has_sync_api(library: str) -> bool:
    if library == "websockets":
        return True
    try:
        import tether.sync.client
        import tether.sync.server
    except ImportError:
        return False
    return bool(tether.sync.client and tether.sync.server)


async def run_server(
    program: Path, rel: str, library: str, fixed: int | None, probe: Probe, sigterm: bool
) -> Outcome:
    outcome = await run_server_once(program, rel, library, fixed, probe, sigterm)
    if not outcome.ok and "address already in use" in outcome.detail:
        # The shared machine's other processes took the free port meanwhile: once more.
        outcome = await run_server_once(program, rel, library, fixed, probe, sigterm)
    return outcome


async def run_server_once(
    program: Path, rel: str, library: str, fixed: int | None, probe: Probe, sigterm: bool
) -> Outcome:
    port = free_port()
    work = Path(tempfile.mkdtemp())
    try:
        for entry in program.parent.iterdir():
            # Links are followed (connect4.py is one); links to what the checkout lacks are not.
            if entry.is_file():
                shutil.copyfile(entry.resolve(), work / entry.name)
        ports = {fixed: port} if fixed is not None else {}
        if rel == "deployment/haproxy/app.py":
            ports = {}
        source = ported(program.read_text(), library, ports)
        target = work / program.name
        target.write_text(source)
        env = dict(os.environ, PORT=str(port), PYTHONUNBUFFERED="1")
        env["SUPERVISOR_PROCESS_NAME"] = "websockets-test_00"
        if rel == "deployment/haproxy/app.py":
            # The program listens on 8000 + the process number's last two digits.
            port = next(8000 + n for n in range(100) if port_free(8000 + n))
            env["SUPERVISOR_PROCESS_NAME"] = f"websockets-test_{port - 8000:02d}"
        proc = await asyncio.create_subprocess_exec(
            sys.executable,
            str(target),
            cwd=work,
            env=env,
            stdout=asyncio.subprocess.PIPE,
            stderr=asyncio.subprocess.PIPE,
        )
        try:
            if rel != "deployment/nginx/app.py":
                await wait_port(port, proc)
            what = await asyncio.wait_for(probe(port, work), TIMEOUT * 2)
        except Exception as exc:
            with contextlib.suppress(ProcessLookupError):
                proc.kill()
            _, err = await proc.communicate()
            tail = err.decode(errors="replace").strip().splitlines()[-1:] or [""]
            return Outcome(rel, False, f"{type(exc).__name__}: {exc} {tail[0]}".strip())
        proc.send_signal(signal.SIGTERM)
        try:
            await asyncio.wait_for(proc.wait(), TIMEOUT)
        except asyncio.TimeoutError:
            proc.kill()
            await proc.wait()
            return Outcome(rel, False, f"{what}; did not exit on SIGTERM")
        if sigterm and proc.returncode != 0:
            _, err = await proc.communicate()
            return Outcome(rel, False, f"{what}; exit {proc.returncode}: {err[-300:]!r}")
        return Outcome(rel, True, what + ("; clean exit on SIGTERM" if sigterm else ""))
    finally:
        shutil.rmtree(work, ignore_errors=True)


async def wait_port(port: int, proc: asyncio.subprocess.Process) -> None:
    for _ in range(200):
        if proc.returncode is not None:
            _, err = await proc.communicate()
            raise RuntimeError(f"exited {proc.returncode}: {err.decode()[-400:]}")
        try:
            _, writer = await asyncio.open_connection("localhost", port)
        except OSError:
            await asyncio.sleep(0.05)
            continue
        writer.close()
        return
    raise TimeoutError(f"nothing listening on {port}")


async def run_client(program: Path, rel: str, library: str) -> Outcome:
    fixed, peer, stdin, argv, expected = CLIENTS[rel]
    port = free_port()
    context = None
    if rel == "tls/client.py":
        context = ssl.SSLContext(ssl.PROTOCOL_TLS_SERVER)
        context.load_cert_chain(program.with_name("localhost.pem"))
    async with ws_serve(peer, "localhost", port, ssl=context):
        source = ported(program.read_text(), library, {fixed: port})
        with tempfile.TemporaryDirectory() as work:
            for entry in program.parent.iterdir():
                if entry.is_file():
                    shutil.copyfile(entry.resolve(), Path(work) / entry.name)
            target = Path(work) / program.name
            target.write_text(source)
            proc = await asyncio.create_subprocess_exec(
                sys.executable,
                str(target),
                *argv,
                cwd=work,
                stdin=asyncio.subprocess.PIPE,
                stdout=asyncio.subprocess.PIPE,
                stderr=asyncio.subprocess.PIPE,
            )
            if rel == "faq/shutdown_client.py":
                # Once connected, the program installs its SIGTERM handler.
                PEER_CONNECTED.clear()
                await asyncio.wait_for(PEER_CONNECTED.wait(), TIMEOUT)
                await asyncio.sleep(0.5)
                proc.send_signal(signal.SIGTERM)
            try:
                out, err = await asyncio.wait_for(proc.communicate(stdin), TIMEOUT)
            except asyncio.TimeoutError:
                proc.kill()
                await proc.wait()
                return Outcome(rel, False, "timed out")
    text = out.decode(errors="replace")
    if proc.returncode != 0:
        return Outcome(rel, False, f"exit {proc.returncode}: {err.decode()[-300:]}")
    if expected is not None and expected not in text:
        return Outcome(rel, False, f"output {text!r}")
    return Outcome(rel, True, "ran against a websockets peer")


# ------------------------------------------------------------ doc snippets

_BLOCK = re.compile(r"(?:^\.\. code-block:: python\n|::\n)\n((?:(?: {3,}.*)?\n)+)", re.M)


def doc_snippets(docs: Path) -> list[tuple[str, str]]:
    found = []
    for path in sorted(docs.rglob("*.rst")):
        rel = str(path.relative_to(docs))
        if any(part in rel for part in ("legacy", "trio", "changelog", "sansio", "sync/")):
            continue
        for match in _BLOCK.finditer(path.read_text()):
            code = textwrap.dedent(match.group(1))
            if "websocket" in code and "sync" not in code.replace("async", ""):
                found.append(
                    (f"{rel}:{path.read_text()[: match.start()].count(chr(10)) + 1}", code)
                )
    return found


def names_missing(code: str) -> list[str]:
    """Names the snippet takes from websockets, or calls on a connection, that tether lacks."""
    import importlib

    import tether
    from tether.asyncio.client import ClientConnection
    from tether.asyncio.server import Server, ServerConnection

    missing = []
    imports = re.findall(r"from websockets((?:\.\w+)*) import (\([^)]*\)|[\w, ]+)", code)
    for module, names in imports:
        try:
            mod = importlib.import_module("tether" + module)
        except ImportError:
            missing.append("tether" + module)
            continue
        for name in re.findall(r"(\w+)(?:\s+as\s+\w+)?", names):
            if not hasattr(mod, name):
                with contextlib.suppress(ImportError):
                    importlib.import_module(f"tether{module}.{name}")
            if not hasattr(mod, name):
                missing.append(f"tether{module}.{name}")
    for dotted in re.findall(r"\bwebsockets\.((?:\w+\.)*\w+)", code):
        target: object = tether
        for part in dotted.split("."):
            if isinstance(target, type(tether)) and not hasattr(target, part):
                with contextlib.suppress(ImportError):
                    importlib.import_module(f"{target.__name__}.{part}")
            if not hasattr(target, part):
                missing.append("tether." + dotted)
                break
            target = getattr(target, part)
    for attr in re.findall(r"\bwebsocket\.(\w+)", code):
        known = any(hasattr(cls, attr) for cls in (ServerConnection, ClientConnection))
        if not known and attr not in ("username", "handler"):  # set per connection
            missing.append(f"connection.{attr}")
    for attr in re.findall(r"\bserver\.(\w+)", code):
        if not hasattr(Server, attr):
            missing.append(f"Server.{attr}")
    return missing


def is_program(code: str) -> bool:
    return "asyncio.run(" in code and "serve(" in code


async def run_snippet_program(name: str, code: str, library: str) -> Outcome:
    with tempfile.TemporaryDirectory() as work:
        program = Path(work) / "snippet.py"
        program.write_text(code)
        port = int(m.group(1)) if (m := re.search(r'serve\(\w+, "[^"]*", (\d+)', code)) else None
        return await run_server(program, name, library, port, probe_opens, False)


async def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("checkout", type=Path, help="a clone of python-websockets/websockets")
    parser.add_argument("--library", choices=["tether", "websockets"], default="tether")
    args = parser.parse_args()
    examples = args.checkout / "example"
    outcomes: list[Outcome] = []
    apart: list[str] = []
    for program in sorted(examples.rglob("*.py")):
        rel = str(program.relative_to(examples))
        if "websockets" not in program.read_text():
            continue  # a helper module (connect4.py)
        top = rel.split("/")[0]
        if top in SKIPPED_DIRS:
            apart.append(f"{rel} ({SKIPPED_DIRS[top]})")
            continue
        if "websockets.sync" in program.read_text() and not has_sync_api(args.library):
            apart.append(f"{rel} (sync API: tether.sync is not there)")
            continue
        if rel in SERVERS:
            fixed, probe, sigterm = SERVERS[rel]
            outcomes.append(await run_server(program, rel, args.library, fixed, probe, sigterm))
        elif rel in CLIENTS:
            outcomes.append(await run_client(program, rel, args.library))
        else:
            apart.append(f"{rel} (no probe written)")
    fragments = 0
    fragment_missing: dict[str, list[str]] = {}
    for name, code in doc_snippets(args.checkout / "docs"):
        if is_program(code):
            outcomes.append(await run_snippet_program(name, code, args.library))
        else:
            fragments += 1
            missing = names_missing(code)
            if missing:
                fragment_missing[name] = missing
    for outcome in outcomes:
        print(f"{'ok  ' if outcome.ok else 'FAIL'} {outcome.name}: {outcome.detail}")
    for line in apart:
        print(f"---- {line}")
    passed = sum(outcome.ok for outcome in outcomes)
    print(f"\nprograms: {passed} of {len(outcomes)} ran ({len(apart)} counted apart)")
    complete = fragments - len(fragment_missing)
    print(f"doc fragments: {complete} of {fragments} use only names tether has")
    for name, missing in fragment_missing.items():
        print(f"  {name}: {', '.join(sorted(set(missing)))}")
    return 0 if passed == len(outcomes) and not fragment_missing else 1


if __name__ == "__main__":
    sys.exit(asyncio.run(main()))
