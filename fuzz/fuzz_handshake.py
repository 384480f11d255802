"""Coverage-guided fuzzing of the HTTP/1.1 upgrade request parser (RFC 6455 section 4.2.1).

The contract: ``receive_data`` never raises for any bytes before the
handshake; the server either waits for more, has a complete request (which
``accept`` answers with 101 or a 4xx, never an exception), or has already
written a 4xx/5xx answer and closed.

    python fuzz/fuzz_handshake.py -max_total_time=600 fuzz/corpus/handshake
"""

from __future__ import annotations

import re
import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import instrumented, main

with instrumented():  # type: ignore[attr-defined]
    from tether.protocol import ServerProtocol, State
    from tether.protocol.events import RequestReceived
    from tether.protocol.extensions.permessage_deflate import ServerPerMessageDeflateFactory

# A valid request to mutate from, so the fuzzer starts deep in the parser.
SEED = (
    b"GET /connection/websocket HTTP/1.1\r\nHost: example.com:80\r\nUpgrade: websocket\r\n"
    b"Connection: keep-alive, Upgrade\r\nSec-WebSocket-Key: dGhlIHNhbXBsZSBub25jZQ==\r\n"
    b"Sec-WebSocket-Version: 13\r\nSec-WebSocket-Protocol: tether.v1, chat\r\n"
    b"Sec-WebSocket-Extensions: permessage-deflate; client_max_window_bits\r\n"
    b"Origin: http://example.com\r\n\r\n"
)
ANSWER = re.compile(rb"HTTP/1\.1 (101|[45]\d\d) ")


def test_one_input(data: bytes) -> None:
    server = ServerProtocol(
        subprotocols=["tether.v1"],
        extensions=[ServerPerMessageDeflateFactory()],
        origins=["http://example.com", None],
    )
    step = max(1, data[0]) if data else 1
    for pos in range(1, len(data), step):
        server.receive_data(data[pos : pos + step])
        if server.state is not State.CONNECTING:
            break
    events = server.events_received()
    if server.state is State.CLOSED:
        out = b"".join(server.data_to_send())
        assert ANSWER.match(out) and not out.startswith(b"HTTP/1.1 101"), out[:80]
        return
    requests = [e for e in events if isinstance(e, RequestReceived)]
    if requests:
        response = server.accept(requests[0].request)
        assert response.status_code == 101 or 400 <= response.status_code < 600, response
        server.send_response(response)
        assert ANSWER.match(b"".join(server.data_to_send()))


if __name__ == "__main__":
    if len(sys.argv) == 1 or all(a.startswith("-") for a in sys.argv[1:]):
        test_one_input(b"\x40" + SEED)  # the seed itself must pass
    main(test_one_input)
