"""Small value types shared by the hub's interfaces, the node and the wire format."""

from __future__ import annotations

from dataclasses import dataclass
from typing import Any

# Any value that json.dumps accepts.
JSON = Any

# Node-to-node messages (e.g. "disconnect this user everywhere") travel on
# broker channels under this prefix; client channel names may not start with
# it. Here, not in node.py, so that the modules around the node (the
# backplane watcher) need not import it.
RESERVED_PREFIX = "__tether."


@dataclass(frozen=True, slots=True)
class StreamPosition:
    """Where a channel's stream is: the last offset and the stream's epoch."""

    offset: int
    epoch: str

    def to_json(self) -> dict[str, JSON]:
        return {"offset": self.offset, "epoch": self.epoch}


@dataclass(frozen=True, slots=True)
class ClientInfo:
    """Who a client is: its connection id, its verified user id, its small info."""

    client: str
    user: str
    info: JSON = None

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"client": self.client, "user": self.user}
        if self.info is not None:
            out["info"] = self.info
        return out

    @classmethod
    def from_json(cls, data: dict[str, JSON]) -> ClientInfo:
        return cls(str(data["client"]), str(data["user"]), data.get("info"))


@dataclass(frozen=True, slots=True)
class Publication:
    """A message in a channel; ``offset`` is 0 until history assigns one."""

    data: JSON
    info: ClientInfo | None = None
    offset: int = 0

    def to_json(self) -> dict[str, JSON]:
        out: dict[str, JSON] = {"data": self.data}
        if self.offset:
            out["offset"] = self.offset
        if self.info is not None:
            out["info"] = self.info.to_json()
        return out
