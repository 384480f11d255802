"""Benchmark tether's native hot path against the pure-Python twins.

    python bench/bench_mask.py [--quick]

Masking: ``tether._speedups.apply_mask`` vs the pure-Python ``tether._mask``
vs ``websockets.speedups.apply_mask`` (when websockets is installed).
UTF-8: ``tether._speedups.utf8_valid`` vs ``bytes.decode("utf-8")`` vs the
pure-Python twin ``tether._utf8.utf8_valid``, on ASCII and on mixed text.

Each cell is the best of several timing runs, as time per call and
throughput; the ratio columns say how many times faster the native code is.
"""

from __future__ import annotations

import argparse
import importlib
import random
import sys
import timeit
from collections.abc import Callable
from types import ModuleType
from typing import Any

from tether import _mask, _utf8

native: ModuleType | None
try:
    native = importlib.import_module("tether._speedups")
except ImportError:  # not built: the table says so
    native = None

ws_apply_mask: Callable[[bytes, bytes], bytes] | None
try:
    from websockets.speedups import apply_mask as _ws_apply_mask
except ImportError:
    ws_apply_mask = None
else:
    ws_apply_mask = _ws_apply_mask

SIZES = [("64 B", 64), ("4 KiB", 4 << 10), ("256 KiB", 256 << 10), ("4 MiB", 4 << 20)]
MASK = b"\x37\xfa\x21\x3d"


def best_time(func: Callable[..., Any], *args: Any, budget: float) -> float:
    """Best time per call in seconds, spending roughly ``budget`` seconds.

    Many short runs and the minimum, rather than a few long ones, so that a
    busy machine disturbs the result as little as possible.
    """
    timer = timeit.Timer(lambda: func(*args))
    number = 1
    while True:  # calls per run: enough for a run of about 10 ms
        elapsed = timer.timeit(number)
        if elapsed >= 0.01:
            break
        number *= 10 if elapsed < 0.001 else 2
    repeat = max(5, round(budget / elapsed))
    return min(timer.repeat(repeat=repeat, number=number)) / number


def fmt_time(seconds: float) -> str:
    if seconds < 1e-6:
        return f"{seconds * 1e9:7.0f} ns"
    if seconds < 1e-3:
        return f"{seconds * 1e6:7.2f} us"
    return f"{seconds * 1e3:7.2f} ms"


def fmt_rate(nbytes: int, seconds: float) -> str:
    return f"{nbytes / seconds / 1e9:6.2f} GB/s"


def fmt_ratio(slow: float | None, fast: float | None) -> str:
    if slow is None or fast is None:
        return "n/a"
    return f"{slow / fast:.1f}x"


def cell(nbytes: int, seconds: float | None) -> str:
    if seconds is None:
        return "n/a"
    return f"{fmt_time(seconds)} {fmt_rate(nbytes, seconds)}"


def print_table(title: str, header: list[str], rows: list[list[str]]) -> None:
    widths = [max(len(r[i]) for r in [header, *rows]) for i in range(len(header))]
    print(f"\n{title}\n")
    print("| " + " | ".join(h.ljust(w) for h, w in zip(header, widths, strict=True)) + " |")
    print("|" + "|".join("-" * (w + 2) for w in widths) + "|")
    for row in rows:
        print("| " + " | ".join(c.rjust(w) for c, w in zip(row, widths, strict=True)) + " |")


def bench_mask(budget: float) -> None:
    rows = []
    for label, n in SIZES:
        data = random.Random(n).randbytes(n)
        t_native = best_time(native.apply_mask, data, MASK, budget=budget) if native else None
        t_pure = best_time(_mask.apply_mask, data, MASK, budget=budget)
        t_ws = best_time(ws_apply_mask, data, MASK, budget=budget) if ws_apply_mask else None
        rows.append(
            [
                label,
                cell(n, t_native),
                cell(n, t_pure),
                cell(n, t_ws),
                fmt_ratio(t_pure, t_native),
                fmt_ratio(t_ws, t_native),
            ]
        )
    print_table(
        "apply_mask(data, mask) -> bytes",
        ["size", "tether native", "tether pure", "websockets", "native/pure", "native/ws"],
        rows,
    )


def make_text(n: int, kind: str) -> bytes:
    if kind == "ascii":
        unit = b"The quick brown fox jumps over the lazy dog. 0123456789\n"
    else:
        # Mostly non-ASCII: Greek, CJK, accents and emoji between words.
        unit = "κόσμε 世界 déjà vu 😀 Привет, мир! ".encode()
    text = (unit * (n // len(unit) + 1))[:n]
    while True:  # do not end in the middle of a character
        try:
            text.decode()
        except UnicodeDecodeError:
            text = text[:-1]
        else:
            return text


def bench_utf8(budget: float) -> None:
    rows = []
    for kind in ("ascii", "mixed"):
        for label, n in SIZES:
            data = make_text(n, kind)
            assert _utf8.utf8_valid(data)
            t_native = best_time(native.utf8_valid, data, budget=budget) if native else None
            t_decode = best_time(data.decode, "utf-8", budget=budget)
            t_pure = best_time(_utf8.utf8_valid, data, budget=budget)
            rows.append(
                [
                    f"{kind} {label}",
                    cell(len(data), t_native),
                    cell(len(data), t_decode),
                    cell(len(data), t_pure),
                    fmt_ratio(t_decode, t_native),
                ]
            )
    print_table(
        "utf8_valid(data) -> bool",
        ["input", "tether native", "bytes.decode", "tether pure", "native/decode"],
        rows,
    )


def main() -> None:
    parser = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    parser.add_argument("--quick", action="store_true", help="shorter timing runs")
    args = parser.parse_args()
    budget = 0.3 if args.quick else 1.0

    kernel = native.KERNEL if native is not None else "not built"
    print(f"Python {sys.version.split()[0]}, tether._speedups kernel: {kernel}")
    if ws_apply_mask is None:
        print("websockets is not installed: its column is n/a")
    bench_mask(budget)
    bench_utf8(budget)


if __name__ == "__main__":
    main()
