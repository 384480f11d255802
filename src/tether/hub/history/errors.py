"""How a history store says it cannot do its job (error 127 to clients, 503 to the API)."""

from __future__ import annotations

from tether.hub.brokers.base import BrokerUnavailable
from tether.hub.errors import ErrorCode, HubError


class HistoryUnavailable(BrokerUnavailable):
    """The history store cannot read or write now: a full disk, a read-only or damaged file.

    Nothing was stored (so nothing was published either): the publish is
    refused with error 127, which clients treat as temporary. A subclass of
    :class:`BrokerUnavailable`, so code that handles a backplane that is down
    handles this too.
    """


def unavailable_error(exc: BrokerUnavailable) -> HubError:
    """The command error for a backend that cannot serve: 127 for history storage, else 112."""
    code = (
        ErrorCode.HISTORY_UNAVAILABLE
        if isinstance(exc, HistoryUnavailable)
        else ErrorCode.BROKER_UNAVAILABLE
    )
    return HubError(code, str(exc) or None)
