"""Autobahn TestSuite, server role: kosoku's fuzzing client against ``tether echo``.

Usage: ``python compliance/run_server.py [-i CASE ...] [-x CASE ...] [-p 2] [--no-compression]``.
Prints the per-category table; exits 1 unless every case is OK or INFORMATIONAL.
"""

from __future__ import annotations

import sys

from ab_harness import cli

if __name__ == "__main__":
    sys.exit(cli("server"))
