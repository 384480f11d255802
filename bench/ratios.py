"""Add ratio columns to the shared harness's table: each tether column against the best peer.

usage: python bench/ratios.py HARNESS_OUTPUT
Reads the markdown table that run.py / run_harness.py prints last and prints it
again with, for each tether column, its ratio to the best of the other peers on
that row (>= 1.0 means tether is at least as good; on memory and CPU rows,
lower is better, so the ratio is best / tether).
"""

from __future__ import annotations

import sys

PEERS = ("picows", "node-ws", "websockets", "aiohttp")


def main() -> None:
    with open(sys.argv[1]) as f:
        lines = f.read().splitlines()
    header_at = max(i for i, line in enumerate(lines) if line.startswith("| workload |"))
    names = [c.strip() for c in lines[header_at].strip("|").split("|")][1:]
    ours = [n for n in names if n.startswith("tether")]
    print(
        "| workload | "
        + " | ".join(names)
        + " | best peer | "
        + " | ".join(f"{n} ratio" for n in ours)
        + " |"
    )
    print("|---" * (len(names) + 2 + len(ours)) + "|")
    for line in lines[header_at + 2 :]:
        if not line.startswith("|"):
            break
        cells = [c.strip() for c in line.strip("|").split("|")]
        label, values = cells[0], dict(zip(names, cells[1:], strict=True))
        lower_is_better = "CPU" in label or "KiB/conn" in label
        peers = {n: float(values[n]) for n in PEERS if n in values}
        pick = min if lower_is_better else max
        best_name = pick(peers, key=peers.__getitem__)
        best = peers[best_name]
        ratios = []
        for n in ours:
            value = float(values[n])
            ratios.append(f"{(best / value if lower_is_better else value / best):.2f}")
        print(
            f"| {label} | "
            + " | ".join(cells[1:])
            + f" | {best_name} | "
            + " | ".join(ratios)
            + " |"
        )


if __name__ == "__main__":
    main()
