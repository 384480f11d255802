"""Coverage-guided fuzzing of the RFC 6455 / 7692 frame parser (server side, after the handshake).

The contract (RFC 6455 section 7.1.7, "Fail the WebSocket Connection"):
``receive_data`` never raises, whatever bytes arrive in whatever chunks; the
connection is either still usable, closing on a valid Close frame, or failed
with 1002 (protocol error), 1007 (invalid UTF-8 or bad compressed data) or
1009 (too big).

    python fuzz/fuzz_frames.py -max_total_time=600 fuzz/corpus/frames
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import instrumented, main

with instrumented():  # type: ignore[attr-defined]
    from tether.protocol import ServerProtocol, State
    from tether.protocol.extensions.permessage_deflate import ServerPerMessageDeflateFactory

ALLOWED_FAILURES = {1002, 1007, 1009}
REQUEST = (
    b"GET /chat HTTP/1.1\r\nHost: example.com\r\nUpgrade: websocket\r\n"
    b"Connection: Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\n"
)
DEFLATE = b"Sec-WebSocket-Extensions: permessage-deflate\r\n"


def open_server(options: int) -> ServerProtocol:
    compress = bool(options & 1)
    server = ServerProtocol(
        extensions=[ServerPerMessageDeflateFactory()] if compress else [],
        max_size=(None, 1000, 2**20)[(options >> 1) % 3],
        stream_fragments=bool(options & 8),
    )
    server.receive_data(REQUEST + (DEFLATE if compress else b"") + b"\r\n")
    (event,) = server.events_received()
    response = server.accept(event.request)  # type: ignore[attr-defined]
    assert response.status_code == 101, response
    server.send_response(response)
    server.data_to_send()
    return server


def test_one_input(data: bytes) -> None:
    if len(data) < 2:
        return
    server = open_server(data[0])
    step, stream = max(1, data[1]), data[2:]
    for pos in range(0, len(stream), step):
        if server.close_transport:
            break
        server.receive_data(stream[pos : pos + step])
    if server.failure is None:
        assert server.state in (State.OPEN, State.CLOSING), server.state
        if server.state is State.CLOSING:
            assert server.close_rcvd is not None
    else:
        assert server.failure.code in ALLOWED_FAILURES, server.failure
        assert server.close_transport
    server.events_received()
    server.data_to_send()


if __name__ == "__main__":
    main(test_one_input)
