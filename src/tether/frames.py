"""``tether.frames``: opcodes, close codes, Close and Frame, where websockets users look."""

from tether.protocol.frames import (
    CLOSE_CODE_EXPLANATIONS,
    Close,
    CloseCode,
    Frame,
    Opcode,
)

# websockets' module-level opcode names.
OP_CONT = Opcode.CONT
OP_TEXT = Opcode.TEXT
OP_BINARY = Opcode.BINARY
OP_CLOSE = Opcode.CLOSE
OP_PING = Opcode.PING
OP_PONG = Opcode.PONG

DATA_OPCODES = (OP_CONT, OP_TEXT, OP_BINARY)
CTRL_OPCODES = (OP_CLOSE, OP_PING, OP_PONG)

__all__ = [
    "CLOSE_CODE_EXPLANATIONS",
    "CTRL_OPCODES",
    "DATA_OPCODES",
    "OP_BINARY",
    "OP_CLOSE",
    "OP_CONT",
    "OP_PING",
    "OP_PONG",
    "OP_TEXT",
    "Close",
    "CloseCode",
    "Frame",
    "Opcode",
]
