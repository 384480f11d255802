"""Shared code of the Autobahn TestSuite runs: case selection, verdicts, the summary table.

kosoku (the Autobahn TestSuite cases, driven under Python 3) runs in this
process; tether runs in a child process (``tether echo`` for the server role,
``client_agent.py`` for the client role), so on a 2-core machine the fuzzer
and the implementation under test each get a core.

Verdicts
--------
kosoku reports two verdicts per case, ``behavior`` (the message exchange) and
``behaviorClose`` (the closing handshake). A case *passes* here only if its
``behavior`` is ``OK`` or ``INFORMATIONAL`` and its ``behaviorClose`` is
``OK`` or ``INFORMATIONAL``. ``NON-STRICT`` (a SHOULD not followed), ``FAILED``,
``UNIMPLEMENTED`` and kosoku's ``ERROR`` (the case could not run) do not pass.
The suite reports ``INFORMATIONAL`` only for the cases whose outcome RFC 6455
leaves open (7.1.6, 7.13.1, 7.13.2), and for those it reports nothing else.

For the table, a case whose ``behavior`` is acceptable but whose closing
handshake is not is counted as ``NON-STRICT`` when the close was merely
imperfect (``WRONG CODE``, ``FAILED BY CLIENT``) and as ``FAILED`` otherwise;
``ERROR`` is counted as ``FAILED``.
"""

from __future__ import annotations

import asyncio
import collections
import contextlib
import fnmatch
import os
import platform
import re
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterator, Sequence
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any

HERE = Path(__file__).resolve().parent
ROOT = HERE.parent
SRC = ROOT / "src"

#: RFC 6455 cases (the suite has no category 8 or 11).
BASE_CASES: tuple[str, ...] = ("1.*", "2.*", "3.*", "4.*", "5.*", "6.*", "7.*", "9.*", "10.*")
#: permessage-deflate (RFC 7692) cases.
DEFLATE_CASES: tuple[str, ...] = ("12.*", "13.*")

MAX_SIZE = 16 * 2**20

PASSING = frozenset({"OK", "INFORMATIONAL"})
_CLOSE_OK = frozenset({"OK", "INFORMATIONAL"})
_CLOSE_NON_STRICT = frozenset({"WRONG CODE", "FAILED BY CLIENT"})

COLUMNS = ("OK", "NON-STRICT", "INFORMATIONAL", "FAILED", "UNIMPLEMENTED")

# Fields of kosoku's per-case report worth showing when a case fails.
_REPORT_FIELDS = (
    "description",
    "expectation",
    "result",
    "resultClose",
    "expected",
    "received",
    "expectedClose",
    "closedByMe",
    "failedByMe",
    "droppedByMe",
    "wasClean",
    "wasNotCleanReason",
    "wasServerConnectionDropTimeout",
    "wasCloseHandshakeTimeout",
    "localCloseCode",
    "localCloseReason",
    "remoteCloseCode",
    "remoteCloseReason",
)


@dataclass(frozen=True, slots=True)
class CaseOutcome:
    """One case's result, reduced to what the summary and the tests need."""

    case_id: str
    behavior: str
    behavior_close: str
    duration_ms: int
    remote_close_code: int | None
    report: dict[str, Any] = field(repr=False, compare=False)

    @property
    def category(self) -> str:
        return self.case_id.split(".", 1)[0]

    @property
    def verdict(self) -> str:
        """The table column this case is counted in (see the module docstring)."""
        behavior = self.behavior
        if behavior not in COLUMNS:  # kosoku's ERROR, or anything unforeseen
            return "FAILED"
        if behavior in ("FAILED", "UNIMPLEMENTED") or self.behavior_close in _CLOSE_OK:
            return behavior
        if self.behavior_close in _CLOSE_NON_STRICT:
            return "NON-STRICT" if behavior == "OK" else behavior
        return "FAILED"

    @property
    def passed(self) -> bool:
        return self.behavior in PASSING and self.behavior_close in _CLOSE_OK

    def describe(self, limit: int = 1500) -> str:
        """A few lines on why the case did not pass, from kosoku's report."""
        lines = [
            f"case {self.case_id}: behavior={self.behavior} behaviorClose={self.behavior_close}"
            f" remoteCloseCode={self.remote_close_code} duration={self.duration_ms} ms"
        ]
        for key in _REPORT_FIELDS:
            if key in self.report:
                text = repr(self.report[key])
                if len(text) > limit:
                    text = text[:limit] + " ..."
                lines.append(f"    {key}: {text}")
        return "\n".join(lines)


@dataclass(slots=True)
class RunResult:
    """Everything one role's run produced."""

    role: str
    outcomes: list[CaseOutcome]
    wall_time: float
    selected: list[str]
    outdir: Path | None = None
    log: Path | None = None

    @property
    def failures(self) -> list[CaseOutcome]:
        return [o for o in self.outcomes if not o.passed]

    @property
    def ok(self) -> bool:
        return (
            bool(self.outcomes) and not self.failures and len(self.outcomes) == len(self.selected)
        )

    def missing(self) -> list[str]:
        """Selected cases that produced no result at all."""
        seen = {o.case_id for o in self.outcomes}
        return [case for case in self.selected if case not in seen]


# ------------------------------------------------------------------ selection


def _case_key(case_id: str) -> tuple[int, ...]:
    return tuple(int(part) for part in case_id.split("."))


def all_case_ids() -> list[str]:
    """Every case id kosoku knows, in suite order."""
    prepare_kosoku()
    from kosoku.cases import CASES

    return sorted(CASES, key=_case_key)


def select_cases(include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    """The case ids that ``-i``/``-x`` globs select, as kosoku matches them."""
    return [
        case
        for case in all_case_ids()
        if any(fnmatch.fnmatchcase(case, pat) for pat in include)
        and not any(fnmatch.fnmatchcase(case, pat) for pat in exclude)
    ]


def deflate_status() -> str | None:
    """Why permessage-deflate cannot be tested, or ``None`` if it works.

    "Works" means the extension module imports and a codec pair negotiated by
    tether's own client and server factories round-trips a message, both with
    the compressor's context kept and reset.
    """
    try:
        from tether.protocol.extensions.permessage_deflate import (
            ClientPerMessageDeflateFactory,
            ServerPerMessageDeflateFactory,
        )
        from tether.protocol.frames import Frame, Opcode

        client_factory = ClientPerMessageDeflateFactory()
        server_params, server = ServerPerMessageDeflateFactory().process_request_params(
            client_factory.get_request_params(), []
        )
        client = client_factory.process_response_params(server_params, [])
        message = b"tether " * 100
        for _ in range(3):
            sent = client.encode(Frame(Opcode.BINARY, message), compress=True)
            if not sent.rsv1 or server.decode(sent).data != message:
                return "permessage-deflate does not round-trip a message"
            back = server.encode(Frame(Opcode.TEXT, message), compress=True)
            if client.decode(back).data != message:
                return "permessage-deflate does not round-trip a message"
    except Exception as exc:  # any failure means "not usable yet"
        return f"permessage-deflate unavailable: {type(exc).__name__}: {exc}"
    return None


def default_includes(compression: bool) -> list[str]:
    cases = list(BASE_CASES)
    if compression and deflate_status() is None:
        cases += DEFLATE_CASES
    return cases


# --------------------------------------------------------------------- kosoku

_PREPARED = False


def prepare_kosoku() -> None:
    """Import kosoku's case index and repair one Python 3 porting bug in it.

    The 12.* and 13.* cases hash every echoed message with ``hashlib.sha1``.
    kosoku hands a case compressed messages as ``bytes`` but uncompressed ones
    as ``str`` (text, or binary as latin-1), and hashing a ``str`` raises
    ``TypeError: Strings must be encoded before hashing``: the case ends in
    ERROR whenever the peer echoes a message without compressing it, which
    RFC 7692 allows (tether does so below its compression threshold, 128
    bytes, e.g. cases 12.*.1 and 12.*.2). Under Python 2, where the suite was
    written, ``str`` was ``bytes``; the wrapper restores that by encoding the
    payload back to the bytes that were on the wire before the case sees it.
    """
    global _PREPARED
    if _PREPARED:
        return
    _PREPARED = True
    from kosoku.cases import CASES

    for case_id, case_class in CASES.items():
        if case_id.split(".")[0] not in ("12", "13"):
            continue
        cls: Any = case_class
        original: Callable[..., Any] = cls.onMessage

        def on_message(
            self: Any, msg: str | bytes, binary: bool, _original: Callable[..., Any] = original
        ) -> Any:
            if isinstance(msg, str):
                msg = msg.encode("latin-1" if binary else "utf-8")
            return _original(self, msg, binary)

        cls.onMessage = on_message


def outcome_from_result(result: Any) -> CaseOutcome:
    """Turn a ``kosoku.CaseResult`` into a :class:`CaseOutcome`."""
    from kosoku._report import case_to_dict

    try:
        report = case_to_dict(result)
    except Exception as exc:  # a report that cannot be rendered must not hide the verdict
        report = {"result": f"(report unavailable: {exc})"}
    report.pop("wirelog", None)
    return CaseOutcome(
        case_id=result.case_id,
        behavior=result.behavior.value,
        behavior_close=result.behavior_close.value,
        duration_ms=int(result.duration),
        remote_close_code=result.remote_close_code,
        report=report,
    )


def write_reports(results: Sequence[Any], outdir: Path | None) -> None:
    """Write kosoku's usual report files (``index.json``, HTML) into ``outdir``."""
    if outdir is None or not results:
        return
    from kosoku._report import write_reports as kosoku_write_reports

    kosoku_write_reports(list(results), str(outdir))


# --------------------------------------------------------------- subprocesses


def child_env() -> dict[str, str]:
    """The environment for tether child processes: this checkout's sources first."""
    env = dict(os.environ)
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(SRC), env.get("PYTHONPATH")]))
    env.setdefault("PYTHONUNBUFFERED", "1")
    return env


_LISTENING = re.compile(r"listening on ws://([^/\s]+):(\d+)")


@contextlib.contextmanager
def echo_server(
    compression: bool, log: Path, keepalive: bool = False, sync: bool = False
) -> Iterator[int]:
    """Run ``tether echo`` on a free port of 127.0.0.1; yield the port.

    Without ``keepalive``, through ``echo_server.py``, which turns its Pings off.
    With ``sync``, the ``tether.sync`` echo server (``sync_echo_server.py``) instead.
    """
    if sync:
        launcher = [str(HERE / "sync_echo_server.py")]
    elif keepalive:
        launcher = ["-m", "tether", "echo"]
    else:
        launcher = [str(HERE / "echo_server.py")]
    cmd = [
        sys.executable,
        *launcher,
        "--host",
        "127.0.0.1",
        "--port",
        "0",
        "--max-size",
        "16MiB",
    ]
    if not compression:
        cmd.append("--no-compression")
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as errors:
        proc = subprocess.Popen(
            cmd, stdout=subprocess.PIPE, stderr=errors, env=child_env(), cwd=str(ROOT)
        )
        try:
            assert proc.stdout is not None
            line = proc.stdout.readline().decode("utf-8", "replace")
            match = _LISTENING.search(line)
            if match is None:
                proc.kill()
                proc.wait()
                raise RuntimeError(
                    f"tether echo did not start (exit {proc.returncode}): {line!r}; see {log}"
                )
            yield int(match.group(2))
        finally:
            _stop_child(proc, timeout=10)


def _stop_child(proc: subprocess.Popen[bytes], timeout: float) -> None:
    """SIGTERM, then SIGKILL if the child is still there after ``timeout`` seconds."""
    if proc.poll() is None:
        proc.terminate()
        try:
            proc.wait(timeout=timeout)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()


UVICORN_ENGINE = "tether.uvicorn:WebSocketProtocol"


def _free_port() -> int:
    import socket

    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


@contextlib.contextmanager
def uvicorn_echo_server(compression: bool, log: Path) -> Iterator[int]:
    """uvicorn serving uvicorn_echo.py (Starlette) with tether's engine; yield the port."""
    import socket

    port = _free_port()
    cmd = [
        sys.executable,
        "-m",
        "uvicorn",
        "uvicorn_echo:app",
        "--app-dir",
        str(HERE),
        "--host",
        "127.0.0.1",
        "--port",
        str(port),
        "--ws",
        UVICORN_ENGINE,
        "--ws-max-size",
        str(MAX_SIZE),
        "--ws-ping-interval",
        "0",
        "--lifespan",
        "off",
    ]
    if not compression:
        cmd += ["--ws-per-message-deflate", "false"]
    log.parent.mkdir(parents=True, exist_ok=True)
    with open(log, "wb") as out:
        proc = subprocess.Popen(
            cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=str(ROOT)
        )
        try:
            deadline = time.monotonic() + 30
            while True:
                # uvicorn's log goes to a file (a pipe nobody reads would fill
                # up and stall it): wait for the port to accept instead.
                if proc.poll() is not None or time.monotonic() > deadline:
                    raise RuntimeError(f"uvicorn did not start (exit {proc.returncode}); see {log}")
                try:
                    socket.create_connection(("127.0.0.1", port), timeout=1).close()
                    break
                except OSError:
                    time.sleep(0.1)
            yield port
        finally:
            # uvicorn waits for its connections to close first: allow more time.
            _stop_child(proc, timeout=20)


# ---------------------------------------------------------------------- roles


def _log_path(outdir: Path | None, name: str) -> Path:
    if outdir is None:
        return Path(tempfile.gettempdir()) / f"{os.getpid()}-{name}"
    outdir.mkdir(parents=True, exist_ok=True)
    return outdir / name


def _selected_or_fail(include: Sequence[str], exclude: Sequence[str]) -> list[str]:
    selected = select_cases(include, exclude)
    if not selected:
        raise SystemExit(f"no case matches -i {list(include)} -x {list(exclude)}")
    return selected


async def _run_server_role(port: int, selected: Sequence[str], parallelism: int) -> list[Any]:
    from kosoku import FailureError, run_fuzzingclient

    try:
        return list(
            await run_fuzzingclient(
                f"ws://127.0.0.1:{port}", list(selected), None, concurrency=parallelism
            )
        )
    except FailureError as failure:
        return list(failure.results)


def run_server_role(
    include: Sequence[str],
    exclude: Sequence[str] = (),
    *,
    parallelism: int = 2,
    compression: bool = True,
    outdir: Path | None = None,
    keepalive: bool = False,
    under_uvicorn: bool = False,
    sync: bool = False,
) -> RunResult:
    """kosoku's fuzzing client against ``tether echo``: tether as the server under test.

    ``keepalive`` keeps the echo server's keepalive Pings (see echo_server.py).
    ``under_uvicorn`` runs a Starlette echo endpoint under uvicorn with
    tether's engine (``--ws tether.uvicorn:WebSocketProtocol``) instead;
    ``sync`` the threaded ``tether.sync`` echo server (sync_echo_server.py).
    """
    prepare_kosoku()
    selected = _selected_or_fail(include, exclude)
    if under_uvicorn:
        log = _log_path(outdir, "uvicorn-echo.log")
        server = uvicorn_echo_server(compression, log)
    else:
        log = _log_path(outdir, "tether-sync-echo.log" if sync else "tether-echo.log")
        server = echo_server(compression, log, keepalive, sync)
    start = time.monotonic()
    with server as port:
        results = asyncio.run(_run_server_role(port, selected, parallelism))
    wall = time.monotonic() - start
    write_reports(results, outdir)
    outcomes = sorted((outcome_from_result(r) for r in results), key=lambda o: _case_key(o.case_id))
    role = "server (Starlette under uvicorn, --ws tether.uvicorn)" if under_uvicorn else "server"
    if sync:
        role = "server (tether.sync)"
    return RunResult(role, outcomes, wall, list(selected), outdir, log)


async def _run_client_role(
    selected: Sequence[str], compression: bool, log: Path, timeout: float
) -> list[Any]:
    from kosoku import FailureError, run_fuzzingserver

    agent = HERE / "client_agent.py"
    async with run_fuzzingserver(list(selected), None, host="127.0.0.1", port=0) as server:
        cmd = [
            sys.executable,
            str(agent),
            "--url",
            f"ws://127.0.0.1:{server.port}",
            "--agent",
            "tether",
        ]
        if not compression:
            cmd.append("--no-compression")
        with open(log, "wb") as out:
            proc = await asyncio.create_subprocess_exec(
                *cmd, stdout=out, stderr=subprocess.STDOUT, env=child_env(), cwd=str(ROOT)
            )
            result_task = asyncio.ensure_future(server.get_result())
            agent_task = asyncio.ensure_future(proc.wait())
            try:
                done, _ = await asyncio.wait(
                    {result_task, agent_task},
                    timeout=timeout,
                    return_when=asyncio.FIRST_COMPLETED,
                )
                if result_task not in done:
                    # The agent ended first (or the time ran out): give kosoku
                    # a moment to finish the report the agent asked for.
                    await asyncio.wait({result_task}, timeout=10)
                if not result_task.done():
                    raise RuntimeError(
                        f"the client agent did not finish the run (agent exit code "
                        f"{proc.returncode}); see {log}"
                    )
                try:
                    results = list(result_task.result())
                except FailureError as failure:
                    results = list(failure.results)
            finally:
                if proc.returncode is None:
                    proc.kill()
                await proc.wait()
                for task in (result_task, agent_task):
                    if not task.done():
                        task.cancel()
                        with contextlib.suppress(BaseException):
                            await task
    return results


def run_client_role(
    include: Sequence[str],
    exclude: Sequence[str] = (),
    *,
    compression: bool = True,
    outdir: Path | None = None,
    timeout: float = 3600.0,
) -> RunResult:
    """kosoku's fuzzing server against ``client_agent.py``: tether as the client under test."""
    prepare_kosoku()
    selected = _selected_or_fail(include, exclude)
    log = _log_path(outdir, "client-agent.log")
    start = time.monotonic()
    results = asyncio.run(_run_client_role(selected, compression, log, timeout))
    wall = time.monotonic() - start
    write_reports(results, outdir)
    outcomes = sorted((outcome_from_result(r) for r in results), key=lambda o: _case_key(o.case_id))
    return RunResult("client", outcomes, wall, list(selected), outdir, log)


# -------------------------------------------------------------------- summary


def table(outcomes: Sequence[CaseOutcome]) -> str:
    """The per-category summary as a Markdown table."""
    by_category: dict[str, list[CaseOutcome]] = collections.defaultdict(list)
    for outcome in outcomes:
        by_category[outcome.category].append(outcome)
    header = ["category", "cases", *COLUMNS, "time (s)"]
    rows = [header, ["---"] * len(header)]
    totals: collections.Counter[str] = collections.Counter()
    total_ms = 0
    for category in sorted(by_category, key=int):
        cases = by_category[category]
        counts = collections.Counter(o.verdict for o in cases)
        totals.update(counts)
        duration = sum(o.duration_ms for o in cases)
        total_ms += duration
        rows.append(
            [
                category,
                str(len(cases)),
                *(str(counts[c]) for c in COLUMNS),
                f"{duration / 1000:.1f}",
            ]
        )
    rows.append(
        [
            "**all**",
            str(len(outcomes)),
            *(str(totals[c]) for c in COLUMNS),
            f"{total_ms / 1000:.1f}",
        ]
    )
    widths = [max(len(row[i]) for row in rows) for i in range(len(header))]
    lines = []
    for row in rows:
        cells = [
            cell.ljust(width) if i == 0 else cell.rjust(width)
            for i, (cell, width) in enumerate(zip(row, widths, strict=True))
        ]
        if row[0] == "---":
            cells = ["-" * widths[0], *(("-" * (w - 1)) + ":" for w in widths[1:])]
        lines.append("| " + " | ".join(cells) + " |")
    return "\n".join(lines)


def machine_description() -> str:
    host = platform.node() or "unknown host"
    return f"{host}, {os.cpu_count()} cores, Python {platform.python_version()}"


def report_text(run: RunResult) -> str:
    """Table, wall time and the failing cases, as the scripts print them."""
    lines = [
        f"Autobahn TestSuite (kosoku), tether as the {run.role}: {len(run.outcomes)} of "
        f"{len(run.selected)} selected cases in {run.wall_time:.1f} s wall time "
        f"({machine_description()})",
        "",
        table(run.outcomes),
        "",
        "time (s): sum of the case durations kosoku reports (cases may run in parallel).",
    ]
    missing = run.missing()
    if missing:
        lines.append(f"no result for {len(missing)} selected case(s): {', '.join(missing)}")
    failures = run.failures
    if failures:
        lines.append(f"{len(failures)} case(s) did not pass (only OK and INFORMATIONAL pass):")
        lines.extend(o.describe() for o in failures)
    elif not missing:
        lines.append("every case passed (OK or INFORMATIONAL)")
    if run.outdir is not None:
        lines.append(f"reports: {run.outdir}/index.html")
    return "\n".join(lines)


# ------------------------------------------------------------------------ CLI


def cli(role: str, argv: Sequence[str] | None = None) -> int:
    """The command line of ``run_server.py`` and ``run_client.py``."""
    import argparse

    parser = argparse.ArgumentParser(
        prog=f"run_{role}.py",
        description=f"Run the Autobahn TestSuite cases (kosoku) with tether as the {role}.",
    )
    parser.add_argument(
        "-i",
        "--include",
        action="append",
        metavar="CASE",
        help="case id or glob to run (repeatable); default 1.* to 10.*, plus 12.* and "
        "13.* when permessage-deflate works and compression is on",
    )
    parser.add_argument(
        "-x", "--exclude", action="append", default=[], metavar="CASE", help="case id or glob"
    )
    if role == "server":
        parser.add_argument(
            "-p", "--parallelism", type=int, default=2, help="cases run at once (default 2)"
        )
        parser.add_argument(
            "--keepalive",
            action="store_true",
            help="run the plain `tether echo`, keepalive Pings every 20 s included "
            "(by default they are off: Autobahn cases do not expect Pings)",
        )
        parser.add_argument(
            "--sync",
            action="store_true",
            help="test the threaded tether.sync server (sync_echo_server.py) "
            "instead of `tether echo`",
        )
        parser.add_argument(
            "--uvicorn",
            action="store_true",
            help="test a Starlette echo endpoint under uvicorn with tether's engine "
            "(--ws tether.uvicorn:WebSocketProtocol) instead of `tether echo`",
        )
    parser.add_argument(
        "--no-compression", action="store_true", help="run tether without permessage-deflate"
    )
    parser.add_argument(
        "-o",
        "--outdir",
        type=Path,
        default=HERE / "reports" / role,
        help="where kosoku's reports go (default compliance/reports/ROLE)",
    )
    args = parser.parse_args(argv)
    # A SIGTERM unwinds like Ctrl-C, so the tether child process is stopped too.
    signal.signal(signal.SIGTERM, lambda *_: sys.exit(128 + signal.SIGTERM))
    compression = not args.no_compression
    if args.include:
        include = args.include
    else:
        include = default_includes(compression)
        status = deflate_status()
        if compression and status is not None:
            print(f"note: 12.* and 13.* left out: {status}", file=sys.stderr)
    if role == "server":
        run = run_server_role(
            include,
            args.exclude,
            parallelism=args.parallelism,
            compression=compression,
            outdir=args.outdir,
            keepalive=args.keepalive,
            under_uvicorn=args.uvicorn,
            sync=args.sync,
        )
    else:
        run = run_client_role(include, args.exclude, compression=compression, outdir=args.outdir)
    print(report_text(run))
    return 0 if run.ok else 1
