"""Client-side proxies: HTTP ``CONNECT`` (RFC 9110 §9.3.6) and SOCKS4/SOCKS5 tunnels.

- :func:`parse_proxy` and :class:`Proxy`: a proxy URL, checked.
- :func:`get_proxy`: the proxy the environment (``https_proxy``,
  ``no_proxy`` …) sets for a WebSocket URI.
- :func:`open_tunnel` (asyncio) and :func:`open_tunnel_sync` (blocking):
  a connection to the server through the proxy, ready for TLS or the
  upgrade request. Both share the CONNECT request and answer
  (:mod:`tether.proxy.http_connect`) and the SOCKS mapping
  (:mod:`tether.proxy.socks`, over python-socks: ``pip install 'tether[socks]'``).
"""

from __future__ import annotations

from tether.proxy.address import Proxy, get_proxy, parse_proxy
from tether.proxy.aio import open_tunnel
from tether.proxy.blocking import open_tunnel_sync

__all__ = ["Proxy", "get_proxy", "open_tunnel", "open_tunnel_sync", "parse_proxy"]
