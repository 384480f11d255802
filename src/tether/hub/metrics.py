"""Counters for /metrics, rendered in the Prometheus text exposition format (0.0.4)."""

from __future__ import annotations

import collections
from collections.abc import Mapping, Sequence
from typing import Any

CONTENT_TYPE = "text/plain; version=0.0.4; charset=utf-8"


class Metrics:
    """What a node counts. Gauges that can be read off live state are passed to render."""

    def __init__(self) -> None:
        self.connections_total = 0
        self.messages_in = 0
        self.bytes_in = 0
        self.messages_out = 0
        self.bytes_out = 0
        self.publications = 0
        self.slow_consumer_disconnects = 0
        self.backplane_reconnects = 0
        self.close_codes: collections.Counter[int] = collections.Counter()
        self.publish_errors: collections.Counter[int] = collections.Counter()
        self.api_requests: collections.Counter[str] = collections.Counter()
        # (via, error code) -> count: every command or API request refused.
        self.refusals: collections.Counter[tuple[str, int]] = collections.Counter()
        # Sessions opened and bytes written, by transport (websocket, sse, http_stream …).
        self.transport_sessions: collections.Counter[str] = collections.Counter()
        self.transport_bytes: collections.Counter[str] = collections.Counter()

    def refused(self, via: str, method: str, code: int) -> None:
        """Count a refusal: ``via`` is ``wire`` or ``api``; publishes also by code."""
        self.refusals[(via, int(code))] += 1
        if method in ("publish", "/api/publish", "/api/broadcast"):
            self.publish_errors[int(code)] += 1

    def sent(self, messages: int, size: int) -> None:
        self.messages_out += messages
        self.bytes_out += messages * size

    def render(
        self,
        gauges: Mapping[str, tuple[str, float]],
        by_transport: Mapping[str, int] | None = None,
    ) -> str:
        """``gauges``: name -> (help, value), e.g. live connections and subscriptions;
        ``by_transport``: open sessions per transport (websocket, sse, long_poll …)."""
        out: list[str] = []

        def metric(
            name: str, kind: str, help_text: str, samples: Sequence[tuple[str, float]]
        ) -> None:
            out.append(f"# HELP tether_{name} {help_text}")
            out.append(f"# TYPE tether_{name} {kind}")
            out.extend(f"tether_{name}{labels} {_number(value)}" for labels, value in samples)

        for name, (help_text, value) in gauges.items():
            metric(name, "gauge", help_text, [("", value)])
        if by_transport is not None:
            metric(
                "transport_sessions",
                "gauge",
                "Open client sessions, by transport.",
                [(f'{{transport="{t}"}}', n) for t, n in sorted(by_transport.items())],
            )
        counters = [
            ("connections_total", "Client connections accepted.", self.connections_total),
            ("messages_in_total", "Messages received from clients.", self.messages_in),
            ("messages_out_total", "Messages sent to clients.", self.messages_out),
            ("bytes_in_total", "Bytes of messages received from clients.", self.bytes_in),
            ("bytes_out_total", "Bytes of messages sent to clients.", self.bytes_out),
            ("publications_total", "Publications accepted.", self.publications),
            (
                "slow_consumer_disconnects_total",
                "Clients disconnected because their send queue overflowed.",
                self.slow_consumer_disconnects,
            ),
            (
                "backplane_reconnects_total",
                "Reconnections of the node's broker connection (Redis, NATS).",
                self.backplane_reconnects,
            ),
        ]
        for name, help_text, value in counters:
            metric(name, "counter", help_text, [("", value)])
        labelled: list[tuple[str, str, str, Mapping[Any, int]]] = [
            (
                "close_codes_total",
                "Client connections closed, by close code.",
                "code",
                self.close_codes,
            ),
            (
                "publish_errors_total",
                "Publishes refused, by error code.",
                "code",
                self.publish_errors,
            ),
            ("api_requests_total", "HTTP API requests, by path.", "path", self.api_requests),
            (
                "transport_sessions_total",
                "Client sessions opened, by transport.",
                "transport",
                self.transport_sessions,
            ),
            (
                "transport_bytes_total",
                "Bytes written to clients over HTTP fallbacks, by transport.",
                "transport",
                self.transport_bytes,
            ),
        ]
        for name, help_text, label, counter in labelled:
            samples = [(f'{{{label}="{key}"}}', n) for key, n in sorted(counter.items())]
            metric(name, "counter", help_text, samples)
        metric(
            "refusals_total",
            "counter",
            "Commands and HTTP API requests refused, by route (wire, api) and error code.",
            [(f'{{via="{v}",code="{c}"}}', n) for (v, c), n in sorted(self.refusals.items())],
        )
        return "\n".join(out) + "\n"


def _number(value: float) -> str:
    return str(int(value)) if float(value).is_integer() else repr(float(value))
