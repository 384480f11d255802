"""Real proxies for the client's proxy tests, each started on a free port with its own config.

``tinyproxy``  ``await tinyproxy(auth=("user", "pass"))`` starts Debian's tinyproxy
               (HTTP CONNECT) in the foreground; returns its ``http://`` URL.
``danted``     ``await danted()`` starts Debian's dante-server (SOCKS4/SOCKS5);
               returns ``host:port`` (prefix the scheme you test).
``tls``        a trustme CA, a server context for 127.0.0.1/localhost, and a
               client context that trusts it.

Neither daemon reads a system file: the config, the log and the pid file live
in the test's tmp_path, and both run in the foreground, stopped on teardown.
As root (CI), dante needs users to switch to: root and nobody; otherwise it
runs as the current user. A missing binary skips, or fails under
TETHER_REQUIRE_SERVICES=1 (tether_testing.require).
"""

from __future__ import annotations

import asyncio
import os
import shutil
import socket
import ssl
import subprocess
import time
from collections.abc import AsyncIterator, Awaitable, Callable, Iterator
from dataclasses import dataclass
from pathlib import Path

import pytest

from tether_testing import require

START_TIMEOUT = 10.0
SBIN_PATH = os.pathsep.join([os.environ.get("PATH", ""), "/usr/sbin", "/usr/bin"])


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


async def wait_listening(proc: subprocess.Popen[bytes], port: int, log: Path) -> None:
    """Until the daemon accepts on ``port``; fail with its log if it exits or never does."""
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        if proc.poll() is not None:
            pytest.fail(f"the proxy exited with {proc.returncode}:\n{log.read_text()[-2000:]}")
        try:
            _, writer = await asyncio.open_connection("127.0.0.1", port)
        except OSError:
            if time.monotonic() > deadline:
                pytest.fail(f"the proxy did not listen within {START_TIMEOUT}s:\n{log.read_text()}")
            # Nothing to await on a process that has not bound yet: poll briefly.
            await asyncio.sleep(0.02)
            continue
        writer.close()
        return


@dataclass
class Daemons:
    procs: list[subprocess.Popen[bytes]]

    def stop(self) -> None:
        for proc in self.procs:
            proc.terminate()
        for proc in self.procs:
            try:
                proc.wait(5)
            except subprocess.TimeoutExpired:
                proc.kill()
                proc.wait(5)


@pytest.fixture
def daemons() -> Iterator[Daemons]:
    running = Daemons([])
    yield running
    running.stop()


TINYPROXY_CONFIG = """\
Port {port}
Listen 127.0.0.1
Timeout 30
MaxClients 50
LogLevel Info
Allow 127.0.0.1
DisableViaHeader Yes
PidFile "{pid}"
{auth}
"""


@pytest.fixture
async def tinyproxy(
    tmp_path: Path, daemons: Daemons
) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    binary = shutil.which("tinyproxy", path=SBIN_PATH)

    async def start(auth: tuple[str, str] | None = None) -> str:
        require(binary, "tinyproxy is not installed (apt-get install tinyproxy)")
        assert binary is not None
        port = free_port()
        config = tmp_path / f"tinyproxy-{port}.conf"
        config.write_text(
            TINYPROXY_CONFIG.format(
                port=port,
                pid=tmp_path / f"tinyproxy-{port}.pid",
                auth=f"BasicAuth {auth[0]} {auth[1]}" if auth else "",
            )
        )
        log = tmp_path / f"tinyproxy-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen([binary, "-d", "-c", str(config)], stdout=out, stderr=out)
        daemons.procs.append(proc)
        await wait_listening(proc, port, log)
        return f"http://127.0.0.1:{port}"

    yield start


DANTED_CONFIG = """\
logoutput: stderr
internal: 127.0.0.1 port = {port}
external: 127.0.0.1
clientmethod: none
socksmethod: {method}
{users}
client pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
socks pass {{ from: 127.0.0.0/8 to: 0.0.0.0/0 }}
"""


@pytest.fixture
async def danted(tmp_path: Path, daemons: Daemons) -> AsyncIterator[Callable[..., Awaitable[str]]]:
    # /usr/sbin may be missing from a non-root PATH.
    binary = next(
        filter(None, (shutil.which(name, path=SBIN_PATH) for name in ("danted", "sockd"))), None
    )

    async def start(method: str = "none") -> str:
        """``method`` "username" asks clients for RFC 1929 credentials (system users)."""
        require(binary, "dante-server is not installed (apt-get install dante-server)")
        assert binary is not None
        port = free_port()
        # As root, dante insists on users to drop to; unprivileged, it stays who it is.
        users = "user.privileged: root\nuser.unprivileged: nobody" if os.geteuid() == 0 else ""
        config = tmp_path / f"danted-{port}.conf"
        config.write_text(DANTED_CONFIG.format(port=port, method=method, users=users))
        log = tmp_path / f"danted-{port}.log"
        with log.open("wb") as out:
            proc = subprocess.Popen(
                [binary, "-f", str(config), "-p", str(tmp_path / f"danted-{port}.pid"), "-N", "1"],
                stdout=out,
                stderr=out,
            )
        daemons.procs.append(proc)
        await wait_listening(proc, port, log)
        return f"127.0.0.1:{port}"

    yield start


@dataclass
class TLS:
    server: ssl.SSLContext
    client: ssl.SSLContext
    ca_file: Path


@pytest.fixture
def tls(tmp_path: Path) -> TLS:
    trustme = pytest.importorskip("trustme")
    ca = trustme.CA()
    server = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
    ca.issue_cert("localhost", "127.0.0.1").configure_cert(server)
    client = ssl.create_default_context(ssl.Purpose.SERVER_AUTH)
    ca.configure_trust(client)
    ca_file = tmp_path / "ca.pem"
    ca.cert_pem.write_to_path(str(ca_file))
    return TLS(server, client, ca_file)


@pytest.fixture(autouse=True)
def no_proxy_environment(monkeypatch: pytest.MonkeyPatch) -> None:
    """Tests set the proxy variables they need; none leaks in from the machine."""
    for name in list(os.environ):
        if name.lower().endswith("_proxy"):
            monkeypatch.delenv(name)
