"""What this installation of tether is: version, Python, native speedups, event loop.

``tether --version`` prints :func:`version_report`; the same facts are public
from Python (``tether.USING_SPEEDUPS``, ``tether.speedups_status()``,
``tether.version_report()``) because "is the fast path on, and if not why?"
is the first question of anyone measuring tether.
"""

from __future__ import annotations

import platform
import sys

from tether import _native


def speedups_status() -> str:
    """``"on"``, or ``"off (reason)"``: e.g. ``off (TETHER_NO_SPEEDUPS=1)``."""
    if _native.USING_SPEEDUPS:
        return "on"
    return f"off ({_native.SPEEDUPS_OFF_REASON or 'unknown reason'})"


def uvloop_version() -> str | None:
    """The installed uvloop's version, or None when it cannot be imported."""
    try:
        import uvloop
    except ImportError:
        return None
    return str(getattr(uvloop, "__version__", "?"))


def event_loop_status() -> str:
    """What ``tether serve`` runs on by default (``--loop auto``)."""
    version = uvloop_version()
    if version is not None:
        return f"uvloop {version}"
    if sys.platform == "win32":
        return "asyncio (uvloop does not support Windows)"
    return "asyncio (uvloop not installed: pip install 'tether[speed]')"


def version_report() -> str:
    """The text of ``tether --version``: one fact per line, the version first."""
    from tether import __version__

    return "\n".join(
        [
            f"tether {__version__}",
            f"python {platform.python_version()} ({platform.python_implementation()}, "
            f"{sys.platform})",
            f"native speedups: {speedups_status()}",
            f"event loop for tether serve: {event_loop_status()}",
        ]
    )
