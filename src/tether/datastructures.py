"""``tether.datastructures``: the HTTP headers container, where websockets users look."""

from tether.protocol.headers import Headers, HeadersLike, MultipleValuesError

__all__ = ["Headers", "HeadersLike", "MultipleValuesError"]
