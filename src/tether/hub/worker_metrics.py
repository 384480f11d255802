"""One ``/metrics`` view for the workers of one ``tether serve --workers N`` group.

The kernel hands each connection, a Prometheus scrape included, to any one of
the workers listening on the port (``SO_REUSEPORT``). So that a scrape sees
the whole group and not one worker picked at random, the worker that answers
asks the others for their own metrics over a Unix socket each (in a private
directory of the supervisor's) and merges them: every sample gets a
``worker="I"`` label, and the samples of one metric stay together under one
``# HELP``/``# TYPE`` header, as the text exposition format requires.
Labels rather than sums: counters summed across workers would go backwards
whenever a worker is restarted, while per-worker series let Prometheus'
``rate()`` handle each reset and ``sum without (worker)`` give the total.
A worker that does not answer within the timeout is left out and counted in
``tether_workers_unreachable``.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import os
from collections.abc import Callable
from pathlib import Path

logger = logging.getLogger("tether.hub")

ASK_TIMEOUT = 1.0
"""Seconds the answering worker waits for each other worker's metrics."""
MAX_METRICS_SIZE = 16 * 1024 * 1024
"""Bytes read from one worker at most (a bound, far above real output)."""


def socket_path(directory: Path, index: int) -> Path:
    return directory / f"worker-{index}.sock"


def with_worker_label(text: str, index: int) -> dict[str, list[str]]:
    """``text``'s lines grouped per metric family, each sample labelled ``worker``.

    Keys are family names in order of appearance; each list starts with the
    family's ``#`` lines, then its samples.
    """
    families: dict[str, list[str]] = {}
    label = f'worker="{index}"'
    for line in text.splitlines():
        if not line:
            continue
        if line.startswith("#"):
            parts = line.split(" ", 3)
            name = parts[2] if len(parts) > 2 else ""
            families.setdefault(name, []).append(line)
            continue
        name, brace, rest = line.partition("{")
        if brace:
            sample = (
                f"{name}{{{label},{rest}" if not rest.startswith("}") else f"{name}{{{label}{rest}"
            )
        else:
            name, _, value = line.partition(" ")
            sample = f"{name}{{{label}}} {value}"
        families.setdefault(_family(name, families), []).append(sample)
    return families


def _family(sample_name: str, families: dict[str, list[str]]) -> str:
    """The family a sample belongs to (histograms' ``_bucket``/``_sum``/``_count``)."""
    if sample_name in families:
        return sample_name
    for suffix in ("_bucket", "_sum", "_count", "_total"):
        if sample_name.endswith(suffix) and sample_name[: -len(suffix)] in families:
            return sample_name[: -len(suffix)]
    return sample_name


def merge(texts: dict[int, str]) -> str:
    """The workers' metrics (worker index -> text) as one exposition."""
    merged: dict[str, tuple[list[str], list[str]]] = {}
    for index in sorted(texts):
        for name, lines in with_worker_label(texts[index], index).items():
            headers, samples = merged.setdefault(name, ([], []))
            for line in lines:
                if line.startswith("#"):
                    if line not in headers:
                        headers.append(line)
                else:
                    samples.append(line)
    out: list[str] = []
    for headers, samples in merged.values():
        out.extend(headers)
        out.extend(samples)
    return "\n".join(out) + "\n"


async def _ask(path: Path) -> str:
    reader, writer = await asyncio.open_unix_connection(str(path))
    try:
        data = await reader.read(MAX_METRICS_SIZE)
    finally:
        writer.close()
        with contextlib.suppress(OSError):
            await writer.wait_closed()
    return data.decode()


class WorkerMetrics:
    """Serves this worker's metrics to its siblings and gathers theirs."""

    def __init__(self, directory: Path, index: int, count: int, render: Callable[[], str]) -> None:
        self.directory = directory
        self.index = index
        self.count = count
        self.render = render
        self._server: asyncio.AbstractServer | None = None
        self._inode = 0

    async def start(self) -> None:
        path = socket_path(self.directory, self.index)
        with contextlib.suppress(FileNotFoundError):
            path.unlink()  # left by this worker's predecessor (restarted)
        self._server = await asyncio.start_unix_server(self._answer, str(path))
        os.chmod(path, 0o600)
        self._inode = path.stat().st_ino

    async def _answer(self, reader: asyncio.StreamReader, writer: asyncio.StreamWriter) -> None:
        try:
            writer.write(self.render().encode())
            await writer.drain()
        except OSError:
            pass
        finally:
            writer.close()

    async def gather(self, own: str) -> str:
        """``own`` (this worker's metrics) merged with every reachable sibling's."""
        others = [i for i in range(self.count) if i != self.index]
        answers = await asyncio.gather(
            *(asyncio.wait_for(_ask(socket_path(self.directory, i)), ASK_TIMEOUT) for i in others),
            return_exceptions=True,
        )
        texts = {self.index: own}
        unreachable = 0
        for i, answer in zip(others, answers, strict=True):
            if isinstance(answer, str):
                texts[i] = answer
            else:
                unreachable += 1
                logger.debug("metrics of worker %d: %r", i, answer)
        text = merge(texts)
        return (
            text + "# HELP tether_workers_unreachable Workers that did not answer this scrape.\n"
            "# TYPE tether_workers_unreachable gauge\n"
            f"tether_workers_unreachable {unreachable}\n"
        )

    async def close(self) -> None:
        if self._server is not None:
            self._server.close()
            with contextlib.suppress(Exception):
                await self._server.wait_closed()
        # Only our own socket: on SIGHUP our successor has already put its own there.
        path = socket_path(self.directory, self.index)
        with contextlib.suppress(OSError):
            if path.stat().st_ino == self._inode:
                path.unlink()
