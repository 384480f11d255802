"""Coverage-guided fuzzing of the hub's JSON command decoder and its inbound checks.

The contract (docs/wire-protocol.md): any text is either a command (with a
positive integer id, a string method, object params, and, when a string in
it is not valid Unicode, a refusal with code 101 or 118) or a
``ProtocolViolation`` (close 4001); nothing else is raised, nesting is
bounded (no RecursionError), and every reply the hub could build for it
encodes as UTF-8.

    python fuzz/fuzz_commands.py -max_total_time=600 fuzz/corpus/commands
"""

from __future__ import annotations

import sys
from pathlib import Path

sys.path.insert(0, str(Path(__file__).parent))

from harness import instrumented, main

with instrumented():  # type: ignore[attr-defined]
    from tether.hub import jsonlimits
    from tether.hub.errors import ErrorCode
    from tether.hub.wire import ProtocolViolation, dumps, error_reply, parse_command, reply


def test_one_input(data: bytes) -> None:
    try:
        text = data.decode("utf-8")  # WebSocket text frames are valid UTF-8
    except UnicodeDecodeError:
        return
    try:
        command = parse_command(text)
    except ProtocolViolation:
        return
    assert type(command.id) is int and command.id > 0
    assert isinstance(command.method, str) and isinstance(command.params, dict)
    if command.refusal is not None:
        assert command.refusal.code in (ErrorCode.UNAUTHORIZED, ErrorCode.INVALID_STRING)
        error_reply(command.id, command.refusal).encode()
        return
    # Accepted params hold only valid Unicode: echoing them back must encode.
    reply(command.id, {"params": command.params}).encode()
    assert jsonlimits.nesting_depth(dumps(command.params)) <= jsonlimits.MAX_DEPTH


if __name__ == "__main__":
    main(test_one_input)
