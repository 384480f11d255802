"""Two builds of tether side by side in the shared harness: did a change slow any row?

usage: NODE_PATH=... BENCH_VENV/bin/python bench/old_vs_new.py \
           --harness ../shared/bench/run.py \
           --old OLD_VENV/bin/python:OLD_CLONE --new NEW_VENV/bin/python:NEW_CLONE [peer ...]

Each build is a clone (a ``git worktree`` at the commit) with tether installed
in its own virtualenv (``pip install -e 'CLONE[speed]'``). The harness is
imported, its peer table gets ``tether-old`` and ``tether-new`` (each running
its own clone's bench/tether_peer.py), and its ``main`` runs as usual: rows
interleaved across peers, medians of ``REPEAT`` runs, one table. Extra peer
names (``websockets``, ``picows``...) join the same run as a reference.
"""

from __future__ import annotations

import argparse
import importlib.util
import os
import sys


def peer_command(spec: str) -> list[str]:
    python, clone = spec.split(":", 1)
    return [python, os.path.join(clone, "bench", "tether_peer.py")]


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.splitlines()[0])
    parser.add_argument("--harness", required=True, help="path of the shared run.py")
    parser.add_argument("--old", required=True, help="PYTHON:CLONE of the old build")
    parser.add_argument("--new", required=True, help="PYTHON:CLONE of the new build")
    parser.add_argument("peers", nargs="*", help="reference peers from the harness")
    args = parser.parse_args()

    spec = importlib.util.spec_from_file_location("shared_harness", args.harness)
    assert spec is not None and spec.loader is not None
    harness = importlib.util.module_from_spec(spec)
    spec.loader.exec_module(harness)
    harness.PEERS["tether-old"] = peer_command(args.old)
    harness.PEERS["tether-new"] = peer_command(args.new)
    sys.argv = [args.harness, "tether-old", "tether-new", *args.peers]
    harness.main()


if __name__ == "__main__":
    main()
