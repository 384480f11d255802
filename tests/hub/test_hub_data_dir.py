"""``tether serve --data DIR`` run as an operator runs it: restarts lose nothing, faults are said.

Each test starts ``tether serve`` subprocesses. A full disk is a small tmpfs
when this process may mount one (root with CAP_SYS_ADMIN), else a file-size
limit (``RLIMIT_FSIZE``) in the child: SQLite sees ENOSPC or EFBIG, both
"database or disk is full". A read-only directory is a read-only bind mount
(root), or file modes (anyone else).
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import shutil
import subprocess
import sys
import tempfile
from collections.abc import AsyncIterator, Iterator
from pathlib import Path
from typing import Any

import pytest
from backplane_services import (
    API_KEY,
    CHANNEL,
    GUARD,
    ROOT,
    HubProcess,
    Peer,
    free_port,
    start_hub_process,
    unique,
    write_config,
)
from hub_support import api_headers, http

from tether.hub import Publication
from tether.hub.history.sqlite import FILE_NAME, SqliteHistory
from tether.hub.model import StreamPosition

# A guard for what spans a restart of ``tether serve`` (GUARD: for the rest).
RESTART_GUARD = 3 * GUARD


def hub_config(tmp_path: Path) -> Path:
    path = write_config(tmp_path / "hub.toml", unique("data"))
    with path.open("a") as file:  # room for every publication of a test
        file.write("[channels]\nhistory_size = 1000\nhistory_ttl = 600.0\n")
    return path


def serve_args(data: Path) -> list[str]:
    return ["--data", str(data), "--allow-anonymous", "--api-key", API_KEY]


# A Python whose files cannot grow past argv[1] bytes, running the rest of argv.
# (Set in the child itself: preexec_fn is not safe in a process with threads.)
# Python ignores SIGXFSZ, so a write past the limit fails with EFBIG.
LIMITED = """
import os, resource, sys
limit = int(sys.argv[1])
resource.setrlimit(resource.RLIMIT_FSIZE, (limit, limit))
os.execv(sys.executable, [sys.executable, *sys.argv[2:]])
"""

# ``tether`` as an unprivileged user, for root where nothing can be mounted: the
# code is loaded as root (the interpreter may live in root's home), then the
# process drops to nobody before the hub opens its data directory.
AS_NOBODY = """
import os, sys
import tether.cli, tether.cli.serve, tether.hub, tether.hub.history.sqlite
os.setgroups([])
os.setgid(65534)
os.setuid(65534)
tether.cli.main(sys.argv[1:])
"""


async def refused_at_start(
    *args: str, as_nobody: bool = False, python: list[str] | None = None, **popen: Any
) -> str:
    """Run ``tether serve`` expecting it to refuse to start; its stderr."""
    env = {k: v for k, v in os.environ.items() if not k.startswith("TETHER_")}
    launcher = ["-c", AS_NOBODY] if as_nobody else ["-m", "tether"]
    loop = ["--loop", "asyncio"] if as_nobody else []  # nothing left to import after the drop
    process = await asyncio.create_subprocess_exec(
        *(python or [sys.executable]),
        *launcher,
        "serve",
        "--port",
        str(free_port()),
        *loop,
        *args,
        stdout=asyncio.subprocess.PIPE,
        stderr=asyncio.subprocess.PIPE,
        cwd=ROOT,
        env=env,
        **popen,
    )
    out, err = await asyncio.wait_for(process.communicate(), 30)
    assert process.returncode == 2, (out + err).decode()
    assert b"listening on" not in out
    lines = err.decode().strip().splitlines()
    assert len(lines) == 1, lines  # one clear line, no traceback
    return lines[0]


async def publish(port: int, data: Any) -> tuple[int, dict[str, Any]]:
    status, _, body = await http(
        port, "POST", "/api/publish", {"channel": CHANNEL, "data": data}, headers=api_headers()
    )
    return status, json.loads(body)


async def history_data(port: int) -> tuple[list[Any], dict[str, Any]]:
    status, _, body = await http(
        port, "POST", "/api/history", {"channel": CHANNEL}, headers=api_headers()
    )
    assert status == 200, body
    result = json.loads(body)
    return [p["data"] for p in result["publications"]], result


# -------------------------------------------------------------- restarts


class Publisher:
    """A hub client publishing 0, 1, 2 ... each once acknowledged, across restarts."""

    def __init__(self, peer: Peer) -> None:
        self.peer = peer
        self.acked: list[StreamPosition] = []
        self.progress = asyncio.Event()
        self.stop = asyncio.Event()

    async def run(self) -> None:
        while not self.stop.is_set():
            # Survives the node's restarts: resent with its idempotency key
            # until acknowledged (tether.hub.Client.publish). One publish may
            # wait for a whole restart: a new interpreter, on a busy machine.
            ack = await asyncio.wait_for(
                self.peer.client.publish(CHANNEL, len(self.acked)), RESTART_GUARD
            )
            self.acked.append(StreamPosition(int(ack["offset"]), str(ack["epoch"])))
            self.progress.set()

    async def until(self, count: int) -> None:
        while len(self.acked) < count:
            self.progress.clear()
            await asyncio.wait_for(self.progress.wait(), RESTART_GUARD)


@pytest.fixture
async def hubs() -> AsyncIterator[list[HubProcess]]:
    started: list[HubProcess] = []
    yield started
    await asyncio.gather(*(hub.stop() for hub in started))


async def test_a_node_restarted_and_killed_mid_traffic_loses_nothing(
    tmp_path: Path, hubs: list[HubProcess]
) -> None:
    port = free_port()
    args, config = serve_args(tmp_path / "data"), hub_config(tmp_path)
    hubs.append(await start_hub_process(*args, config=config, port=port))
    subscriber = await Peer(hubs[-1].ws_url, "subscriber").start()
    publisher = Publisher(await Peer(hubs[-1].ws_url, "publisher").start("other:channel"))
    task = asyncio.get_running_loop().create_task(publisher.run())
    try:
        await publisher.until(20)
        await hubs[-1].stop()  # a deploy: SIGTERM, clients told 1012
        hubs.append(await start_hub_process(*args, config=config, port=port))
        await publisher.until(40)
        hubs[-1].kill()  # a crash: SIGKILL, whatever was in flight
        await hubs[-1].process.wait()
        hubs.append(await start_hub_process(*args, config=config, port=port))
        await publisher.until(60)
    finally:
        publisher.stop.set()
        await asyncio.wait_for(task, RESTART_GUARD)
    acked = publisher.acked
    count = len(acked)
    # One epoch across both restarts, every publish stored exactly once, no hole.
    assert {position.epoch for position in acked} == {acked[0].epoch}
    assert [position.offset for position in acked] == list(range(1, count + 1))
    delivered = [await subscriber.next_pub() for _ in range(count)]
    assert [p.data for p in delivered] == list(range(count))
    assert [(p.offset, p.epoch) for p in delivered] == [(a.offset, a.epoch) for a in acked]
    # The subscriber came back twice, and recovered both times.
    events = []
    while not subscriber.subscribed.empty():
        events.append(subscriber.subscribed.get_nowait())
    assert len(events) >= 2
    assert all(e.resubscribed and e.recovered for e in events), events
    stored, result = await history_data(port)
    assert stored == list(range(count))
    assert (result["offset"], result["epoch"]) == (count, acked[0].epoch)
    await asyncio.gather(
        *(asyncio.wait_for(p.client.close(), GUARD) for p in (subscriber, publisher.peer))
    )


# ------------------------------------------------------------ full disk


def can_mount() -> bool:
    if os.geteuid() != 0 or not shutil.which("mount"):
        return False
    with tempfile.TemporaryDirectory() as probe:
        made = subprocess.run(
            ["mount", "-t", "tmpfs", "-o", "size=64k", "tmpfs", probe], capture_output=True
        )
        if made.returncode != 0:
            return False
        subprocess.run(["umount", probe], check=True)
    return True


class SmallDisk:
    """A data directory with about ``size`` bytes of room, made bigger by :meth:`grow`."""

    def __init__(self, root: Path, size: int) -> None:
        self.tmpfs = can_mount()
        self.size = size
        self.mount = root / "disk"
        self.mount.mkdir()
        self.limited = True
        if self.tmpfs:
            self._mount_command("-t", "tmpfs", "-o", f"size={size}", "tmpfs", str(self.mount))
        self.data = self.mount / "data"

    @staticmethod
    def _mount_command(*args: str) -> None:
        subprocess.run(["mount", *args], check=True, capture_output=True)

    def popen(self) -> dict[str, Any]:
        """How to start the child: with no tmpfs, its files cannot outgrow ``size``."""
        if self.tmpfs or not self.limited:
            return {}
        return {"python": [sys.executable, "-c", LIMITED, str(self.size)]}

    @contextlib.contextmanager
    def full(self) -> Iterator[None]:
        """No room at all: a tmpfs filled to the last byte, or a limit of 0 bytes."""
        if not self.tmpfs:
            size, self.size = self.size, 0
            try:
                yield
            finally:
                self.size = size
            return
        filler = self.mount / "filler"
        with filler.open("wb") as file, contextlib.suppress(OSError):
            while True:
                file.write(b"\0" * 65536)
        try:
            yield
        finally:
            filler.unlink()

    def grow(self) -> None:
        """The operator makes room."""
        if self.tmpfs:
            self._mount_command("-o", "remount,size=64m", str(self.mount))
        self.limited = False

    def close(self) -> None:
        if self.tmpfs:
            subprocess.run(["umount", "-l", str(self.mount)], check=False)


async def test_a_full_disk_refuses_at_start_then_refuses_publishes_with_125(
    tmp_path: Path, hubs: list[HubProcess]
) -> None:
    disk = SmallDisk(tmp_path, 256 * 1024)
    try:
        args, config = serve_args(disk.data), hub_config(tmp_path)
        with disk.full():
            line = await refused_at_start(*args, **disk.popen())
        assert "cannot start the hub" in line and "full" in line, line
        hubs.append(await start_hub_process(*args, config=config, **disk.popen()))
        port = hubs[-1].port
        acked: list[int] = []
        refusals: list[dict[str, Any]] = []
        for i in range(1000):
            status, body = await publish(port, {"i": i, "pad": "x" * 4000})
            if status == 200:
                assert not refusals or acked  # (no success is needed after a refusal)
                assert body["offset"] == len(acked) + 1  # a refusal leaves no hole
                acked.append(i)
            else:
                assert status == 503 and body["error"]["code"] == 127, (status, body)
                assert "full" in body["error"]["message"]
                refusals.append(body)
                if len(refusals) == 5:
                    break
        assert len(refusals) == 5 and len(acked) >= 5, (len(acked), disk.tmpfs)
        # Nothing acknowledged is missing, nothing refused is there.
        stored, _ = await history_data(port)
        assert [d["i"] for d in stored] == acked
        # Room again, and a crash for good measure: everything acknowledged is still there.
        disk.grow()
        hubs[-1].kill()
        await hubs[-1].process.wait()
        hubs.append(await start_hub_process(*args, config=config, **disk.popen()))
        port = hubs[-1].port
        stored, _ = await history_data(port)
        assert [d["i"] for d in stored] == acked
        status, body = await publish(port, "after")
        assert (status, body["offset"]) == (200, len(acked) + 1)
    finally:
        await asyncio.gather(*(hub.stop() for hub in hubs))
        hubs.clear()
        disk.close()


# ------------------------------------------------------------ read-only


@contextlib.contextmanager
def read_only(directory: Path) -> Iterator[tuple[Path, dict[str, Any]]]:
    """``directory`` as a process may see it read-only: (its path there, subprocess arguments)."""
    if os.geteuid() != 0:
        modes = {p: p.stat().st_mode for p in (directory, *directory.iterdir())}
        for path in modes:
            path.chmod(0o555 if path.is_dir() else 0o444)
        try:
            yield directory, {}
        finally:
            for path, mode in modes.items():
                path.chmod(mode)
        return
    if can_mount():
        view = directory.parent / "read-only-view"
        view.mkdir()
        subprocess.run(["mount", "--bind", str(directory), str(view)], check=True)
        try:
            subprocess.run(["mount", "-o", "remount,bind,ro", str(view)], check=True)
            yield view, {}
        finally:
            subprocess.run(["umount", "-l", str(view)], check=False)
        return
    # Root without mounts: file modes bind an unprivileged user only.
    shared = Path(tempfile.mkdtemp(prefix="tether-ro-"))
    try:
        copy = shared / "data"
        shutil.copytree(directory, copy)
        for path in (shared, copy, *copy.iterdir()):
            path.chmod(0o555 if path.is_dir() else 0o444)
        yield copy, {"as_nobody": True}
    finally:
        for path in (shared, *shared.rglob("*")):
            path.chmod(0o755)
        shutil.rmtree(shared, ignore_errors=True)


async def test_a_read_only_data_directory_is_refused_at_start(tmp_path: Path) -> None:
    data = tmp_path / "data"
    history = SqliteHistory(data)
    await history.add(CHANNEL, Publication("kept"), size=10, ttl=60)
    await history.close()
    assert (data / FILE_NAME).exists()
    with read_only(data) as (view, popen):
        line = await refused_at_start(*serve_args(view), **popen)
    assert line.startswith("tether serve: cannot start the hub:"), line
    assert str(view) in line and "writable" in line, line
