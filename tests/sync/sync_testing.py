"""Helpers for the sync API's tests (a module of its own: never import from conftest)."""

from __future__ import annotations

import base64
import hashlib
import socket

# A guard for waits that should end quickly; never a way to wait for something.
GUARD = 10.0


def read_request(sock: socket.socket) -> bytes:
    """Read an HTTP request head from ``sock`` (for raw servers)."""
    data = b""
    while b"\r\n\r\n" not in data:
        chunk = sock.recv(4096)
        if not chunk:
            break
        data += chunk
    return data


def accept_upgrade(sock: socket.socket) -> None:
    """Answer a WebSocket upgrade request with 101, no extension (for raw servers)."""
    head = read_request(sock).decode("latin-1")
    key = next(
        line.split(":", 1)[1].strip()
        for line in head.split("\r\n")
        if line.lower().startswith("sec-websocket-key:")
    )
    accept = base64.b64encode(
        hashlib.sha1(key.encode() + b"258EAFA5-E914-47DA-95CA-C5AB0DC85B11").digest()
    ).decode()
    sock.sendall(
        b"HTTP/1.1 101 Switching Protocols\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n"
        + f"Sec-WebSocket-Accept: {accept}\r\n\r\n".encode()
    )
