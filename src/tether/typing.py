"""``tether.typing``: the type aliases websockets users annotate with."""

from __future__ import annotations

import http
import logging
from typing import Any, NewType

Data = str | bytes
"""A message: ``str`` for text, ``bytes`` for binary."""

BytesLike = bytes | bytearray | memoryview
DataLike = str | bytes | bytearray | memoryview

LoggerLike = logging.Logger | logging.LoggerAdapter[Any]
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
