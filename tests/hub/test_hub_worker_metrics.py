"""The merged ``/metrics`` of a ``--workers`` group: one family per metric, a label per worker."""

from __future__ import annotations

import pytest

from tether.cli.errors import CliError
from tether.cli.workers import count_from, require_shared_backplane
from tether.hub.worker_metrics import merge

WORKER_TEXT = """# HELP tether_connections Open client connections.
# TYPE tether_connections gauge
tether_connections {n}
# HELP tether_close_codes_total Client connections closed, by close code.
# TYPE tether_close_codes_total counter
tether_close_codes_total{{code="1000"}} {n}
"""


def test_samples_of_every_worker_stay_under_one_header_with_a_worker_label() -> None:
    text = merge({1: WORKER_TEXT.format(n=5), 0: WORKER_TEXT.format(n=3)})
    assert text.splitlines() == [
        "# HELP tether_connections Open client connections.",
        "# TYPE tether_connections gauge",
        'tether_connections{worker="0"} 3',
        'tether_connections{worker="1"} 5',
        "# HELP tether_close_codes_total Client connections closed, by close code.",
        "# TYPE tether_close_codes_total counter",
        'tether_close_codes_total{worker="0",code="1000"} 3',
        'tether_close_codes_total{worker="1",code="1000"} 5',
    ]


def test_worker_count_is_a_positive_number_or_auto() -> None:
    assert count_from("3") == 3
    assert count_from("auto") >= 1
    for bad in ("0", "-1", "many"):
        with pytest.raises(CliError, match="--workers"):
            count_from(bad)


def test_workers_refuse_any_role_left_in_memory() -> None:
    require_shared_backplane({"broker": "memory"}, 1)  # one worker: fine
    urls = {"broker": "nats://127.0.0.1:4222", "history": "memory", "presence": "memory"}
    with pytest.raises(CliError, match="the history and presence are in memory"):
        require_shared_backplane(urls, 2)
    require_shared_backplane({k: "redis://127.0.0.1:6379/0" for k in urls}, 2)
    on_disk = {"broker": "redis://127.0.0.1:6379/0", "history": "sqlite:/var/lib/tether"}
    with pytest.raises(CliError, match="history in SQLite"):
        require_shared_backplane({**on_disk, "presence": "redis://127.0.0.1:6379/0"}, 2)
