"""A real nginx (Debian's package) as a hostile round-robin load balancer in front of
two ``tether serve`` nodes on Redis, for the fallback end-to-end tests.

The proxy is configured as a corporate one would be: it passes no ``Upgrade`` header,
so every WebSocket upgrade fails (the hub sees a plain GET and refuses it); with
``buffering=True`` it also buffers whole responses and ignores ``X-Accel-Buffering``,
so no stream gets through in time and only long polling can work. No sticky sessions:
plain round robin, so a page's requests land on both nodes.

nginx runs in the foreground on a free port with its own prefix and configuration
(``nginx -c CONF -p PREFIX -g 'daemon off;'``), started and stopped by the test.
"""

from __future__ import annotations

import os
import shutil
import socket
import subprocess
import time
import urllib.request
import uuid
from dataclasses import dataclass, field
from pathlib import Path

from e2e_support import Hub, start_hub, stop_hub

REDIS_URL = os.environ.get("TETHER_REDIS_URL") or "redis://127.0.0.1:6379/0"
NGINX = shutil.which("nginx") or "/usr/sbin/nginx"
PRESENCE_TTL = 2.0

# What makes nginx hold every stream: buffering, whatever the hub says in
# X-Accel-Buffering, and compression, which (buffered, so without a flush per chunk)
# keeps a stream's few hundred bytes in the compressor until the response ends. Whole
# responses (long polls) still get through.
BUFFERING = (
    "proxy_ignore_headers X-Accel-Buffering;\n"
    "            gzip on;\n"
    "            gzip_types application/x-ndjson text/event-stream application/json;"
)

CONFIG = """\
{user}
worker_processes 1;
error_log {prefix}/error.log warn;
pid {prefix}/nginx.pid;
events {{ worker_connections 512; }}
http {{
    access_log {prefix}/access.log;
    client_body_temp_path {prefix}/tmp/body;
    proxy_temp_path {prefix}/tmp/proxy;
    fastcgi_temp_path {prefix}/tmp/fastcgi;
    uwsgi_temp_path {prefix}/tmp/uwsgi;
    scgi_temp_path {prefix}/tmp/scgi;

    # Round robin, no stickiness. A node that refuses connections is skipped for a while.
    upstream tether {{
{servers}
        keepalive 16;
    }}
    server {{
        listen 127.0.0.1:{port};
        location / {{
            proxy_pass http://tether;
            proxy_http_version 1.1;
            proxy_set_header Host $http_host;
            # Hostile: hop-by-hop headers are not forwarded, and no `Upgrade` is set, so
            # every WebSocket upgrade arrives as a plain GET and fails.
            proxy_set_header Connection "";
            proxy_buffering {buffering};
            {ignore}
            proxy_read_timeout 60s;
            proxy_next_upstream error timeout;
            proxy_connect_timeout 2s;
        }}
    }}
}}
"""


def free_port() -> int:
    with socket.socket() as s:
        s.bind(("127.0.0.1", 0))
        port: int = s.getsockname()[1]
        return port


def missing_nginx() -> str | None:
    if not os.path.exists(NGINX):
        return "nginx is not installed (apt-get install -y nginx)"
    return None


@dataclass
class Nginx:
    process: subprocess.Popen[bytes]
    port: int
    prefix: Path

    @property
    def url(self) -> str:
        return f"http://127.0.0.1:{self.port}"

    def log(self) -> str:
        parts = []
        for name in ("error.log", "access.log"):
            path = self.prefix / name
            if path.exists():
                parts.append(f"--- {name}\n" + path.read_text()[-6000:])
        return "\n".join(parts)

    def stop(self) -> None:
        if self.process.poll() is None:
            self.process.terminate()
            try:
                self.process.wait(10)
            except subprocess.TimeoutExpired:
                self.process.kill()
                self.process.wait()


def start_nginx(backends: list[int], prefix: Path, *, buffering: bool) -> Nginx:
    """nginx on a free port in front of ``backends`` (ports on 127.0.0.1)."""
    for sub in ("tmp/body", "tmp/proxy", "tmp/fastcgi", "tmp/uwsgi", "tmp/scgi"):
        (prefix / sub).mkdir(parents=True, exist_ok=True)
    port = free_port()
    servers = "\n".join(
        f"        server 127.0.0.1:{p} max_fails=1 fail_timeout=30s;" for p in backends
    )
    conf = prefix / "nginx.conf"
    conf.write_text(
        CONFIG.format(
            # As root, nginx's workers would run as nobody, who cannot write this prefix.
            user="user root;" if os.geteuid() == 0 else "",
            prefix=prefix,
            servers=servers,
            port=port,
            buffering="on" if buffering else "off",
            ignore=BUFFERING if buffering else "",
        )
    )
    process = subprocess.Popen(
        [NGINX, "-c", str(conf), "-p", str(prefix), "-g", "daemon off;"],
        stdout=subprocess.DEVNULL,
        stderr=subprocess.PIPE,
    )
    nginx = Nginx(process, port, prefix)
    deadline = time.monotonic() + 10
    while True:
        if process.poll() is not None:
            err = process.stderr.read().decode() if process.stderr else ""
            raise RuntimeError(f"nginx exited ({process.returncode}): {err}\n{nginx.log()}")
        try:
            with socket.create_connection(("127.0.0.1", port), timeout=0.2):
                return nginx
        except OSError:
            if time.monotonic() > deadline:
                nginx.stop()
                raise RuntimeError(f"nginx did not listen in time\n{nginx.log()}") from None
            time.sleep(0.05)


@dataclass
class Cluster:
    """Two hub nodes on one Redis (a fresh key prefix) behind nginx."""

    nodes: list[Hub]
    nginx: Nginx
    prefix: str
    killed: list[Hub] = field(default_factory=list)

    @property
    def url(self) -> str:
        return self.nginx.url

    def sessions(self, node: Hub) -> int:
        """Client sessions ``node`` opened (every transport), from its /metrics."""
        with urllib.request.urlopen(f"{node.url}/metrics", timeout=5) as response:
            text = response.read().decode()
        total = 0
        for line in text.splitlines():
            if line.startswith("tether_transport_sessions_total{"):
                total += int(float(line.rsplit(" ", 1)[1]))
        return total

    def kill(self, node: Hub) -> None:
        """SIGKILL: no goodbye to anyone, as a crashed machine."""
        node.process.kill()
        node.process.wait()
        self.killed.append(node)

    def logs(self) -> str:
        parts = [f"--- node {n.port}\n{n.log()}" for n in self.nodes]
        return "\n".join([*parts, self.nginx.log()])

    def stop(self) -> None:
        self.nginx.stop()
        for node in self.nodes:
            stop_hub(node)


def start_cluster(tmp: Path, *, buffering: bool) -> Cluster:
    prefix = f"e2e-fallback-{uuid.uuid4().hex[:12]}"
    tmp.mkdir(parents=True, exist_ok=True)
    config = tmp / "hub.toml"
    # A killed node's presence entries live until presence_ttl: short here, so the test
    # sees the survivors' presence without waiting the default minute.
    config.write_text(f'backplane_prefix = "{prefix}"\npresence_ttl = {PRESENCE_TTL}\n')
    nodes: list[Hub] = []
    try:
        for _ in range(2):
            nodes.append(start_hub("--broker", REDIS_URL, "--config", str(config)))
        nginx = start_nginx([n.port for n in nodes], tmp / "nginx", buffering=buffering)
    except BaseException:
        for node in nodes:
            stop_hub(node)
        raise
    return Cluster(nodes, nginx, prefix)
