"""The hub's transports, one module each, all behind :mod:`tether.hub.transport`'s seam.

- :mod:`~tether.hub.transports.websocket`: a tether WebSocket connection.
- :mod:`~tether.hub.transports.http_stream`: an HTTP response that stays open,
  as NDJSON lines (``POST /connection/stream``) or server-sent events
  (``GET /connection/eventsource``).
- :mod:`~tether.hub.transports.long_poll`: frames kept until the client polls.
- :mod:`~tether.hub.transports.sse`: plain server-sent events for ``EventSource``
  and ``curl -N`` (``GET /connection/sse``), one-way.
"""
