"""Run the shared comparison harness with both tether APIs as columns, in one run.

usage: NODE_PATH=VENV/node/node_modules VENV/bin/python bench/run_harness.py [peer ...]
(VENV from ../shared/bench/setup.sh, with tether installed into it:
``VENV/bin/pip install -e .[speed]``.) Peers: websockets aiohttp picows node-ws
tether tether-listener tether-pure. Environment variables as for the shared run.py
(WORKLOADS, REPEAT). The harness location defaults to ../shared/bench next to
this repository; set TETHER_SHARED_BENCH to override.
"""

from __future__ import annotations

import os
import sys

HERE = os.path.dirname(os.path.abspath(__file__))
SHARED = os.environ.get("TETHER_SHARED_BENCH", os.path.join(HERE, "..", "..", "shared", "bench"))
sys.path.insert(0, os.path.abspath(SHARED))

import run  # noqa: E402  (the shared harness, found at run time)

run.PEERS["tether"] = [sys.executable, os.path.join(HERE, "tether_peer.py")]
run.PEERS["tether-listener"] = [sys.executable, os.path.join(HERE, "tether_listener_peer.py")]
# The pure-Python fallback (no native speedups), same public API as "tether".
run.PEERS["tether-pure"] = [
    "env",
    "TETHER_NO_SPEEDUPS=1",
    sys.executable,
    os.path.join(HERE, "tether_peer.py"),
]

if __name__ == "__main__":
    run.main()
