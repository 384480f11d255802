"""Fixtures shared by every test folder; the helpers live in :mod:`tether_testing`.

Helpers are imported from ``tether_testing`` (a uniquely named module), never
from ``conftest``: several folders have a conftest.py, and under pytest's
default import mode they would shadow each other as the module ``conftest``.
"""

from tether_testing import native_speedups_fixture, raw_client, require_fixture, start_server

__all__ = ["native_speedups_fixture", "raw_client", "require_fixture", "start_server"]
