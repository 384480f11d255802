"""``tether.typing``: the type aliases websockets users annotate with."""

from __future__ import annotations

import http
import logging
from typing import TYPE_CHECKING, Any, NewType

Data = str | bytes
"""A message: ``str`` for text, ``bytes`` for binary."""

BytesLike = bytes | bytearray | memoryview
DataLike = str | bytes | bytearray | memoryview

if TYPE_CHECKING:
    LoggerLike = logging.Logger | logging.LoggerAdapter[Any]
else:  # LoggerAdapter takes a type parameter at run time from Python 3.11 on
    LoggerLike = logging.Logger | logging.LoggerAdapter
"""What ``logger=`` accepts."""

StatusLike = http.HTTPStatus | int
"""An HTTP status, as ``respond()`` takes it."""

Origin = NewType("Origin", str)
Subprotocol = NewType("Subprotocol", str)
ExtensionName = NewType("ExtensionName", str)
ExtensionParameter = tuple[str, str | None]

__all__ = [
    "BytesLike",
    "Data",
    "DataLike",
    "ExtensionName",
    "ExtensionParameter",
    "LoggerLike",
    "Origin",
    "StatusLike",
    "Subprotocol",
]
