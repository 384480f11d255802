"""Autobahn TestSuite, client role: ``client_agent.py`` against kosoku's fuzzing server.

Usage: ``python compliance/run_client.py [-i CASE ...] [-x CASE ...] [--no-compression]``.
Prints the per-category table; exits 1 unless every case is OK or INFORMATIONAL.
"""

from __future__ import annotations

import sys

from ab_harness import cli

if __name__ == "__main__":
    sys.exit(cli("client"))
