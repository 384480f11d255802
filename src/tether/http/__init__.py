"""HTTP/1.1 with keep-alive and streaming responses, parsed by h11.

The WebSocket server answers one request per connection from
``process_request``. This package serves plain HTTP beside it: many requests
per connection (keep-alive), responses written whole or streamed (chunked,
for as long as the handler likes), request bodies read with a size limit,
and timeouts for clients that send slowly or sit idle.

- :mod:`tether.http.messages`: requests, limits and chunk framing (no h11);
- :mod:`tether.http.server`: the connection, with h11 (the ``hub`` extra);
- :mod:`tether.http.router`: one listening socket for WebSocket and HTTP.
"""

from tether.http.messages import HttpLimits, HttpRequest, chunk

__all__ = ["HttpLimits", "HttpRequest", "chunk"]
