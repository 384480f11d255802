"""The Autobahn TestSuite (through kosoku) as part of the test suite, both roles.

Every selected case must be OK, or INFORMATIONAL where the suite only
observes (7.1.6, 7.13.*); NON-STRICT fails here. See ab_harness.py for the
verdicts and README.md for how to run the same thing by hand.
"""

from __future__ import annotations

from pathlib import Path

import ab_harness as ab
import pytest

pytestmark = pytest.mark.compliance

# The 9.* cases push large messages and many frames; each should be fast.
MAX_PERFORMANCE_CASE_MS = 10_000

# permessage-deflate: the full 12.* and 13.* take 10 to 20 minutes per role on
# 2 cores (run_server.py / run_client.py run them all). Here: every data set
# and every parameter set, with 1000 messages of 16 bytes (sent uncompressed,
# below tether's threshold) and of 1 KiB (compressed), and the 8 KiB messages
# fragmented into 256-byte frames for the parameter sets.
DEFLATE_SAMPLE = ("12.*.1", "12.*.4", "13.*.1", "13.*.4", "13.*.11")


def _assert_all_passed(run: ab.RunResult) -> None:
    problems: list[str] = []
    missing = run.missing()
    if missing:
        problems.append(f"no result for {len(missing)} case(s): {', '.join(missing)}")
    failures = run.failures
    if failures:
        problems.append(f"{len(failures)} case(s) not OK: {', '.join(o.case_id for o in failures)}")
        problems.extend(o.describe() for o in failures)
    if problems:
        problems.append(f"reports: {run.outdir}; tether's log: {run.log}")
        problems.append(ab.table(run.outcomes))
    assert not problems, "\n".join(problems)


def _assert_fast(run: ab.RunResult, prefix: str, limit_ms: int) -> None:
    cases = [o for o in run.outcomes if o.case_id.startswith(prefix)]
    assert cases, f"no {prefix}* case ran"
    slow = [o for o in cases if o.duration_ms >= limit_ms]
    assert not slow, f"{prefix}* cases slower than {limit_ms} ms: " + ", ".join(
        f"{o.case_id} ({o.duration_ms} ms)" for o in slow
    )


@pytest.fixture(scope="module")
def server_run(tmp_path_factory: pytest.TempPathFactory) -> ab.RunResult:
    outdir: Path = tmp_path_factory.mktemp("autobahn-server")
    run = ab.run_server_role(ab.BASE_CASES, parallelism=2, outdir=outdir)
    print(ab.report_text(run))
    return run


@pytest.fixture(scope="module")
def uvicorn_server_run(tmp_path_factory: pytest.TempPathFactory) -> ab.RunResult:
    pytest.importorskip("uvicorn", reason="uvicorn is in the test extra")
    pytest.importorskip("starlette", reason="starlette is in the test extra")
    outdir: Path = tmp_path_factory.mktemp("autobahn-uvicorn")
    run = ab.run_server_role(ab.BASE_CASES, parallelism=2, outdir=outdir, under_uvicorn=True)
    print(ab.report_text(run))
    return run


# The threaded tether.sync server: every RFC 6455 case but the 9.* performance
# ones (run_server.py --sync runs those too), and a permessage-deflate sample.
SYNC_CASES = (*(c for c in ab.BASE_CASES if c != "9.*"), "12.*.1", "13.*.1")


@pytest.fixture(scope="module")
def sync_server_run(tmp_path_factory: pytest.TempPathFactory) -> ab.RunResult:
    outdir: Path = tmp_path_factory.mktemp("autobahn-sync-server")
    run = ab.run_server_role(SYNC_CASES, parallelism=2, outdir=outdir, sync=True)
    print(ab.report_text(run))
    return run


@pytest.fixture(scope="module")
def client_run(tmp_path_factory: pytest.TempPathFactory) -> ab.RunResult:
    outdir: Path = tmp_path_factory.mktemp("autobahn-client")
    run = ab.run_client_role(ab.BASE_CASES, outdir=outdir, timeout=900)
    print(ab.report_text(run))
    return run


@pytest.fixture(scope="module")
def deflate_server_run(tmp_path_factory: pytest.TempPathFactory) -> ab.RunResult:
    status = ab.deflate_status()
    assert status is None, status
    outdir: Path = tmp_path_factory.mktemp("autobahn-server-deflate")
    run = ab.run_server_role(DEFLATE_SAMPLE, parallelism=2, outdir=outdir)
    print(ab.report_text(run))
    return run


@pytest.fixture(scope="module")
def deflate_client_run(tmp_path_factory: pytest.TempPathFactory) -> ab.RunResult:
    status = ab.deflate_status()
    assert status is None, status
    outdir: Path = tmp_path_factory.mktemp("autobahn-client-deflate")
    run = ab.run_client_role(DEFLATE_SAMPLE, outdir=outdir, timeout=900)
    print(ab.report_text(run))
    return run


def test_server_role_every_case_ok(server_run: ab.RunResult) -> None:
    _assert_all_passed(server_run)


def test_server_role_performance_cases_fast(server_run: ab.RunResult) -> None:
    _assert_fast(server_run, "9.", MAX_PERFORMANCE_CASE_MS)


def test_uvicorn_engine_every_case_ok(uvicorn_server_run: ab.RunResult) -> None:
    """A Starlette echo endpoint under uvicorn with --ws tether.uvicorn:WebSocketProtocol.

    1.* to 10.* here; ``run_server.py --uvicorn`` adds 12.* and 13.*.
    """
    _assert_all_passed(uvicorn_server_run)


def test_uvicorn_engine_performance_cases_fast(uvicorn_server_run: ab.RunResult) -> None:
    _assert_fast(uvicorn_server_run, "9.", MAX_PERFORMANCE_CASE_MS)


def test_sync_server_every_case_ok(sync_server_run: ab.RunResult) -> None:
    """The threaded tether.sync server (compliance/sync_echo_server.py)."""
    _assert_all_passed(sync_server_run)


def test_client_role_every_case_ok(client_run: ab.RunResult) -> None:
    _assert_all_passed(client_run)


def test_client_role_performance_cases_fast(client_run: ab.RunResult) -> None:
    _assert_fast(client_run, "9.", MAX_PERFORMANCE_CASE_MS)


def test_server_role_deflate_sample_ok(deflate_server_run: ab.RunResult) -> None:
    _assert_all_passed(deflate_server_run)


def test_client_role_deflate_sample_ok(deflate_client_run: ab.RunResult) -> None:
    _assert_all_passed(deflate_client_run)
