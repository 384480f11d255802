"""HTTP/1.1 with keep-alive and streaming responses, parsed by h11.

The WebSocket server answers one request per connection from
``process_request``. This layer serves plain HTTP beside it: many requests
per connection (keep-alive), responses written whole or streamed (chunked,
for as long as the handler likes), request bodies read with a size limit,
and timeouts for clients that send slowly or sit idle. h11 (the ``hub``
extra) parses and frames; this package only pumps bytes and enforces limits.
"""

from tether.http.server import (
    HttpConnection,
    HttpExchange,
    HttpLimits,
    HttpRequest,
    RequestBodyError,
    ResponseStream,
)

__all__ = [
    "HttpConnection",
    "HttpExchange",
    "HttpLimits",
    "HttpRequest",
    "RequestBodyError",
    "ResponseStream",
]
