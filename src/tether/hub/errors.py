"""The hub's error codes and close codes, as specified in docs/wire-protocol.md."""

from __future__ import annotations

import enum


class ErrorCode(enum.IntEnum):
    """``error.code`` in a command reply."""

    INTERNAL = 100
    UNAUTHORIZED = 101
    UNKNOWN_NAMESPACE = 102
    PERMISSION_DENIED = 103
    METHOD_NOT_FOUND = 104
    ALREADY_SUBSCRIBED = 105
    LIMIT_EXCEEDED = 106
    BAD_REQUEST = 107
    NOT_AVAILABLE = 108
    TOKEN_EXPIRED = 109
    PAYLOAD_TOO_LARGE = 110
    TOO_MANY_REQUESTS = 111
    BROKER_UNAVAILABLE = 112
    APP_TIMEOUT = 113
    """An application hook or proxy backend did not answer in time (docs/hooks.md)."""
    APP_ERROR = 114
    """An application hook raised, or a proxy backend answered an error or garbage."""
    APP_UNAVAILABLE = 115
    """A proxy backend could not be reached (connection refused, reset, DNS)."""
    OVERLOADED = 116
    """The backplane is up but every pooled connection stayed busy for the pool timeout."""
    MISSING_PARAMETER = 117
    """A required parameter (``channel``, ``data``, ``token`` …) is absent."""
    INVALID_STRING = 118
    """A string holds a lone surrogate (``"\\ud800"``): valid JSON, not valid Unicode."""
    INVALID_JSON = 119
    """HTTP API: the body is not UTF-8 JSON, not an object, or nested too deeply."""
    OUT_OF_RANGE = 120
    """A number beyond what the hub can store exactly (offsets above 2**53 - 1)."""
    HTTP_METHOD_NOT_ALLOWED = 121
    """HTTP API: a method other than POST (status 405)."""
    LENGTH_REQUIRED = 122
    """HTTP API: a body without Content-Length (status 411), or a malformed one (400)."""
    HOST_NOT_ALLOWED = 123
    """HTTP: a Host or Origin outside the hub's allow-list (development mode: loopback)."""
    NOT_FOUND = 124
    """HTTP: no such path (status 404)."""
    SESSION_NOT_FOUND = 125
    """HTTP fallbacks: unknown, forged, expired or ended session key (404): reconnect."""
    TOO_MANY_STREAMS = 126
    """HTTP fallbacks: too many streams or waiting polls, per IP or in total (429)."""
    HISTORY_UNAVAILABLE = 127
    """The history store cannot write or read now (a full disk, a read-only or damaged
    file): nothing was stored or published (docs/hub.md, "Durable history")."""


# Codes an application may choose for its own refusals and RPC errors (docs/hooks.md).
APP_CODES = range(1000, 2000)


# Temporary errors: the same command may succeed if retried later.
TEMPORARY = frozenset(
    {
        ErrorCode.INTERNAL,
        ErrorCode.TOO_MANY_REQUESTS,
        ErrorCode.BROKER_UNAVAILABLE,
        ErrorCode.APP_TIMEOUT,
        ErrorCode.APP_ERROR,
        ErrorCode.APP_UNAVAILABLE,
        ErrorCode.OVERLOADED,
        ErrorCode.HISTORY_UNAVAILABLE,
        ErrorCode.TOO_MANY_STREAMS,
    }
)

_MESSAGES: dict[int, str] = {
    ErrorCode.INTERNAL: "internal error",
    ErrorCode.UNAUTHORIZED: "unauthorized",
    ErrorCode.UNKNOWN_NAMESPACE: "unknown channel namespace",
    ErrorCode.PERMISSION_DENIED: "permission denied",
    ErrorCode.METHOD_NOT_FOUND: "method not found",
    ErrorCode.ALREADY_SUBSCRIBED: "already subscribed",
    ErrorCode.LIMIT_EXCEEDED: "limit exceeded",
    ErrorCode.BAD_REQUEST: "bad request",
    ErrorCode.NOT_AVAILABLE: "not available",
    ErrorCode.TOKEN_EXPIRED: "token expired",
    ErrorCode.PAYLOAD_TOO_LARGE: "payload too large",
    ErrorCode.TOO_MANY_REQUESTS: "too many requests",
    ErrorCode.BROKER_UNAVAILABLE: "broker unavailable",
    ErrorCode.APP_TIMEOUT: "application timeout",
    ErrorCode.APP_ERROR: "application error",
    ErrorCode.APP_UNAVAILABLE: "application unavailable",
    ErrorCode.OVERLOADED: "overloaded, retry later",
    ErrorCode.MISSING_PARAMETER: "missing parameter",
    ErrorCode.INVALID_STRING: "string is not valid Unicode",
    ErrorCode.INVALID_JSON: "invalid JSON",
    ErrorCode.OUT_OF_RANGE: "number out of range",
    ErrorCode.HTTP_METHOD_NOT_ALLOWED: "method not allowed",
    ErrorCode.LENGTH_REQUIRED: "length required",
    ErrorCode.HOST_NOT_ALLOWED: "host not allowed",
    ErrorCode.NOT_FOUND: "not found",
    ErrorCode.HISTORY_UNAVAILABLE: "history storage unavailable",
    ErrorCode.SESSION_NOT_FOUND: "session not found",
    ErrorCode.TOO_MANY_STREAMS: "too many streams",
}


class HubCloseCode(enum.IntEnum):
    """WebSocket close codes the hub sends (besides RFC 6455's 1000/1001/1011/1012)."""

    TOKEN_EXPIRED = 3000
    BAD_REQUEST = 4001
    FORBIDDEN = 4003
    DISCONNECTED = 4005
    SLOW_CONSUMER = 4010
    PUBLISH_FLOOD = 4011
    KEEPALIVE_TIMEOUT = 4012
    BACKPLANE_RESET = 4013
    """Publications may have been missed while the node's backplane was down."""


def should_reconnect(code: int) -> bool:
    """The spec's rule for clients: which close codes mean "connect again"."""
    if code in (1001, 1006, 1011, 1012, 1013, 3000):
        return True
    return 4010 <= code <= 4499


class HubError(Exception):
    """A command failed; carried back to the client as ``{"error": {...}}``.

    ``code`` is an :class:`ErrorCode`, or one of :data:`APP_CODES` chosen by the
    application (a hook's refusal, an RPC error); ``temporary`` defaults to the
    code's entry in the spec's table.
    """

    def __init__(
        self, code: int, message: str | None = None, *, temporary: bool | None = None
    ) -> None:
        self.code = code
        self.message = message or _MESSAGES.get(code, "refused")
        self._temporary = temporary
        super().__init__(f"{int(code)} {self.message}")

    @property
    def temporary(self) -> bool:
        if self._temporary is not None:
            return self._temporary
        return self.code in TEMPORARY

    def to_json(self) -> dict[str, object]:
        return {"code": int(self.code), "message": self.message, "temporary": self.temporary}
