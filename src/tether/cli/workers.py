"""``tether serve --workers N``: N hub processes on one port, run as one group.

A Python process uses one core; a machine has several. The supervisor (this
module, in the process ``tether serve`` started as) forks N workers. Each
worker runs a whole hub node and listens on the same host and port with
``SO_REUSEPORT``, so the kernel spreads new connections over them; the
supervisor itself holds the port (bound, not listening) so that a restarting
worker can always get it back.

Workers are separate nodes, so they must share a backplane: the broker moves
publications between them, history and presence live in the shared store.
With everything in memory, each worker would be an island (a client's
publication would reach only the clients that the kernel happened to put on
the same worker), so ``--workers`` above 1 needs ``--broker`` (Redis, or
NATS with ``--history``/``--presence`` on Redis).

Signals, as gunicorn and uvicorn operators expect:

- SIGTERM / SIGINT: every worker closes its clients with 1012 / 1001 (come
  back and recover) and exits; the supervisor exits 0 once all have.
- SIGHUP: the configuration (flags, environment, ``--config``) is read again
  and the workers are replaced one at a time, each new one listening before
  the old one is told to stop, so the port never stops answering. A
  configuration that no longer loads is reported and the old workers keep
  running.
- A worker that dies is started again (its clients reconnect to any worker
  and recover). A worker that keeps dying within seconds of its start
  (``CRASH_LOOP`` times in a row) makes the group exit with status 1 and says
  so: a broken deployment should fail loudly, not flap forever.
"""

from __future__ import annotations

import contextlib
import ctypes
import os
import select
import signal
import socket
import sys
import tempfile
import time
import traceback
from collections.abc import Callable
from dataclasses import dataclass, field
from os import _exit as leave_now  # a forked child ends this way (os._exit)
from pathlib import Path
from typing import Any

from tether.cli.errors import USAGE_ERROR, CliError

STOP_GRACE = 30.0
"""Seconds workers get to close their clients after SIGTERM before SIGKILL."""
START_TIMEOUT = 60.0
"""Seconds a worker gets to start listening."""
CRASH_LOOP = 5
"""A worker dying this many times in a row, each within ``QUICK_DEATH`` s of its start,
ends the group."""
QUICK_DEATH = 10.0


def count_from(value: str | int) -> int:
    """``auto`` (one per core this process may run on) or a positive number."""
    if isinstance(value, str) and value.strip().lower() == "auto":
        return (
            len(os.sched_getaffinity(0))
            if hasattr(os, "sched_getaffinity")
            else os.cpu_count() or 1
        )
    try:
        count = int(value)
    except (TypeError, ValueError):
        raise CliError(f"--workers must be a number or 'auto', not {value!r}") from None
    if count < 1:
        raise CliError("--workers must be at least 1")
    return count


def require_shared_backplane(backend_urls: dict[str, str], count: int) -> None:
    """Refuse several workers that would each keep their own broker, history or presence."""
    if count <= 1:
        return
    from tether.hub.backends import MEMORY, SQLITE, backend_kind

    alone = [role for role, url in backend_urls.items() if backend_kind(url) == MEMORY]
    if alone:
        raise CliError(
            f"--workers {count} needs a shared backplane, but the {_listed(alone)} "
            f"{'is' if len(alone) == 1 else 'are'} in memory: each worker is its own node, "
            "and the kernel spreads clients over them at random, so without a shared "
            "broker, history and presence a publication would reach only the clients "
            "of one worker (--data keeps history on disk but moves no publications). "
            "Pass --broker redis://HOST:PORT or --broker nats://HOST:PORT (JetStream), "
            "or run one worker"
        )
    if backend_kind(backend_urls.get("history", "")) == SQLITE:
        raise CliError(
            f"--workers {count}: history in SQLite (--data) belongs to one process; "
            "with several workers keep it in Redis or JetStream (the broker's default)"
        )


def _listed(names: list[str]) -> str:
    return names[0] if len(names) == 1 else ", ".join(names[:-1]) + " and " + names[-1]


@dataclass
class Worker:
    index: int
    pid: int
    started: float
    ready: bool = False
    retiring: bool = False
    """Told to stop (replaced on SIGHUP); not restarted when it exits."""


@dataclass
class Group:
    """What the workers are started with; replaced on SIGHUP."""

    plan: Any
    count: int
    runtime_dir: Path
    run_worker: Callable[[Any, int, int, Path, int], int]
    """``(plan, index, count, runtime_dir, ready_fd) -> exit status``, in the child."""


def _die_with_parent() -> None:
    """Linux: the kernel sends SIGTERM to the worker when the supervisor dies."""
    with contextlib.suppress(OSError, AttributeError):
        libc = ctypes.CDLL(None, use_errno=True)
        PR_SET_PDEATHSIG = 1
        libc.prctl(PR_SET_PDEATHSIG, signal.SIGTERM)


@dataclass
class Supervisor:
    group: Group
    ready_read: int
    ready_write: int
    workers: dict[int, Worker] = field(default_factory=dict)
    """pid -> worker."""
    quick_deaths: dict[int, int] = field(default_factory=dict)
    """index -> how many times in a row it died soon after starting."""
    signals: list[int] = field(default_factory=list)

    def spawn(self, index: int) -> Worker:
        pid = os.fork()
        if pid == 0:  # the worker
            status = 1
            try:
                for sig in (signal.SIGTERM, signal.SIGINT, signal.SIGCHLD):
                    signal.signal(sig, signal.SIG_DFL)
                # A terminal hangup or a reload is the supervisor's business.
                signal.signal(signal.SIGHUP, signal.SIG_IGN)
                signal.set_wakeup_fd(-1)
                _die_with_parent()
                os.close(self.ready_read)
                g = self.group
                status = g.run_worker(g.plan, index, g.count, g.runtime_dir, self.ready_write)
            except SystemExit as exc:
                status = exc.code if isinstance(exc.code, int) else 1
            except CliError as exc:
                _tell(self.ready_write, f"E{index} {exc}")
                status = USAGE_ERROR
            except BaseException:
                traceback.print_exc()
                _tell(self.ready_write, f"E{index} crashed (traceback above)")
            finally:
                sys.stdout.flush()
                sys.stderr.flush()
                leave_now(status)  # no atexit or cleanup of the supervisor's state
        worker = Worker(index, pid, time.monotonic())
        self.workers[pid] = worker
        return worker

    def live(self) -> list[Worker]:
        return [w for w in self.workers.values() if not w.retiring]

    # ------------------------------------------------------------ events

    def wait_events(self, timeout: float, wakeup: int) -> list[str]:
        """Lines from workers (``R3``: worker 3 listens; ``E3 why``: it cannot)."""
        readable, _, _ = select.select([self.ready_read, wakeup], [], [], timeout)
        lines: list[str] = []
        if wakeup in readable:
            with contextlib.suppress(BlockingIOError):
                os.read(wakeup, 4096)
        if self.ready_read in readable:
            data = os.read(self.ready_read, 65536).decode(errors="replace")
            lines = [line for line in data.split("\n") if line]
        return lines

    def reap(self) -> list[tuple[Worker, int]]:
        """Workers that exited since the last call, with their wait status."""
        dead = []
        while True:
            try:
                pid, status = os.waitpid(-1, os.WNOHANG)
            except ChildProcessError:
                break
            if pid == 0:
                break
            worker = self.workers.pop(pid, None)
            if worker is not None:
                dead.append((worker, status))
        return dead

    def signal_all(self, sig: int) -> None:
        for pid in list(self.workers):
            with contextlib.suppress(ProcessLookupError):
                os.kill(pid, sig)


def _tell(fd: int, line: str) -> None:
    with contextlib.suppress(OSError):
        os.write(fd, (line.replace("\n", " ") + "\n").encode())


def describe_status(status: int) -> str:
    if os.WIFSIGNALED(status):
        sig = os.WTERMSIG(status)
        return f"killed by {signal.Signals(sig).name}"
    return f"exit status {os.waitstatus_to_exitcode(status)}"


def reserve_port(host: str, port: int) -> socket.socket:
    """A socket bound (not listening) to ``host:port`` with SO_REUSEPORT: holds the port."""
    infos = socket.getaddrinfo(host or None, port, type=socket.SOCK_STREAM, flags=socket.AI_PASSIVE)
    family, kind, proto, _, address = infos[0]
    sock = socket.socket(family, kind, proto)
    try:
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEADDR, 1)
        sock.setsockopt(socket.SOL_SOCKET, socket.SO_REUSEPORT, 1)
        sock.bind(address)
    except OSError:
        sock.close()
        raise
    return sock


def supervise(
    group: Group,
    replan: Callable[[], tuple[Any, int]],
    announce: Callable[[Any, int, list[int]], None],
    log: Callable[[str], None],
) -> int:
    """Start the group, keep it running, stop it on SIGTERM/SIGINT; the exit status.

    ``replan`` reads the configuration again (on SIGHUP) and returns the new
    plan and worker count, or raises :class:`CliError`. ``announce`` prints
    the banner once every worker listens.
    """
    ready_read, ready_write = os.pipe()
    wake_read, wake_write = os.pipe()
    os.set_blocking(wake_write, False)
    os.set_blocking(wake_read, False)
    sup = Supervisor(group, ready_read, ready_write)
    old_wakeup = signal.set_wakeup_fd(wake_write)
    handled = (signal.SIGTERM, signal.SIGINT, signal.SIGHUP, signal.SIGCHLD)
    previous = {sig: signal.signal(sig, lambda s, _f: sup.signals.append(s)) for sig in handled}
    try:
        return _run(sup, replan, announce, log, wake_read)
    finally:
        for sig, handler in previous.items():
            signal.signal(sig, handler)
        signal.set_wakeup_fd(old_wakeup)
        for fd in (ready_read, ready_write, wake_read, wake_write):
            os.close(fd)


def _run(
    sup: Supervisor,
    replan: Callable[[], tuple[Any, int]],
    announce: Callable[[Any, int, list[int]], None],
    log: Callable[[str], None],
    wakeup: int,
) -> int:
    for index in range(sup.group.count):
        sup.spawn(index)
    announced = False
    replacing: list[int] = []  # worker indexes still to replace (SIGHUP)
    replacement: Worker | None = None
    reload_pending = False  # every new worker listens; say so once the old ones are gone
    stopping: float | None = None
    exit_status = 0
    deadline = time.monotonic() + START_TIMEOUT
    while True:
        for line in sup.wait_events(1.0, wakeup):
            index = int(line[1:].split(" ", 1)[0])
            worker = next(
                (w for w in sup.workers.values() if w.index == index and not w.ready), None
            )
            if line.startswith("R") and worker is not None:
                worker.ready = True
            elif line.startswith("E") and stopping is None:
                log(f"worker {index}: {line.split(' ', 1)[1] if ' ' in line else 'failed'}")
                if not announced:  # a start that cannot work: say why once, stop
                    exit_status = 2
                    stopping = time.monotonic()
                    sup.signal_all(signal.SIGTERM)
        while sup.signals:
            sig = sup.signals.pop(0)
            if sig in (signal.SIGTERM, signal.SIGINT) and stopping is None:
                stopping = time.monotonic()
                sup.signal_all(sig)
            elif sig == signal.SIGHUP and stopping is None and announced and not replacing:
                try:
                    plan, count = replan()
                except CliError as exc:
                    log(f"SIGHUP: configuration not reloaded, workers unchanged: {exc}")
                    continue
                log(f"SIGHUP: configuration reloaded, replacing {count} workers one at a time")
                sup.group.plan = plan
                for w in sup.live()[count:] if count < sup.group.count else []:
                    w.retiring = True
                    os.kill(w.pid, signal.SIGTERM)
                sup.group.count = count
                replacing = list(range(count))
        for worker, status in sup.reap():
            if worker.retiring or stopping is not None:
                continue
            log(f"worker {worker.index} (pid {worker.pid}) died: {describe_status(status)}")
            quick = time.monotonic() - worker.started < QUICK_DEATH
            deaths = sup.quick_deaths.get(worker.index, 0) + 1 if quick else 0
            sup.quick_deaths[worker.index] = deaths
            if deaths >= CRASH_LOOP:
                log(
                    f"worker {worker.index} died {deaths} times in a row within "
                    f"{QUICK_DEATH:g} s of starting: stopping the group"
                )
                exit_status = 1
                stopping = time.monotonic()
                sup.signal_all(signal.SIGTERM)
                continue
            if replacement is worker:
                replacement = None
            sup.spawn(worker.index)
        now = time.monotonic()
        if stopping is not None:
            if not sup.workers:
                return exit_status
            if now - stopping > STOP_GRACE:
                log(f"workers still running {STOP_GRACE:g} s after SIGTERM: killing them")
                sup.signal_all(signal.SIGKILL)
                stopping = now  # reap them on the next rounds
            continue
        if not announced:
            if all(w.ready for w in sup.workers.values()) and len(sup.workers) == sup.group.count:
                announce(sup.group.plan, sup.group.count, [w.pid for w in sup.live()])
                announced = True
            elif now > deadline:
                log(f"workers did not start listening within {START_TIMEOUT:g} s: stopping")
                exit_status = 1
                stopping = now
                sup.signal_all(signal.SIGTERM)
            continue
        # SIGHUP: start each index's new worker, and retire the old one once it listens.
        if replacing and replacement is None:
            replacement = sup.spawn(replacing[0])
        elif replacement is not None and replacement.ready:
            for w in sup.live():
                if w.index == replacement.index and w is not replacement:
                    w.retiring = True
                    os.kill(w.pid, signal.SIGTERM)
            replacing.pop(0)
            replacement = None
            reload_pending = not replacing
        if reload_pending and not any(w.retiring for w in sup.workers.values()):
            reload_pending = False
            log("SIGHUP: every worker replaced (the old ones have exited)")


def make_runtime_dir() -> Path:
    return Path(tempfile.mkdtemp(prefix="tether-workers-"))


def remove_runtime_dir(path: Path) -> None:
    for entry in path.glob("*"):
        with contextlib.suppress(OSError):
            entry.unlink()
    with contextlib.suppress(OSError):
        path.rmdir()


def tell_ready(fd: int, index: int) -> None:
    _tell(fd, f"R{index}")
