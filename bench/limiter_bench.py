"""The web rate limiter (alertd/web/limits.py SlidingWindow) with many clients held: the
time of one allow() call with 10,000 and 50,000 keys inside the window, and the amortised
cost of calls while a whole table of keys goes idle.

Run: .venv/bin/python bench/limiter_bench.py [--calls 2000] [--limits-file PATH]
(--limits-file: another limits.py to measure, e.g. the one before a change.)

Prints a Markdown section for bench/RESULTS.md. Times are per call (process CPU time, the
limiter is single-threaded), the median of 5 rounds of --calls calls each.
"""

from __future__ import annotations

import argparse
import importlib.util
import statistics
import sys
import time
from collections import deque
from types import ModuleType
from typing import Any

import alertd.web.limits

SlidingWindow: Any = alertd.web.limits.SlidingWindow

WINDOW_S = 3600.0  # signups_per_ip_per_hour, mails_per_ip_per_hour


def _load(path: str) -> ModuleType:
    spec = importlib.util.spec_from_file_location("limits_under_test", path)
    assert spec is not None and spec.loader is not None
    module = importlib.util.module_from_spec(spec)
    sys.modules[spec.name] = module  # dataclasses look their module up there
    spec.loader.exec_module(module)
    return module


def _filled(keys: int) -> Any:
    """A window holding ``keys`` clients, each with one event in the last ``keys`` ms.

    Filled directly (both designs keep ``_events``: key -> deque of times, oldest key
    first), as filling through allow() costs the prune-all design minutes."""
    window = SlidingWindow(20, WINDOW_S)
    for n in range(keys):
        window._events[f"k{n}"] = deque([n / 1000])
    return window


def _per_call_us(window: Any, calls: int, start: float, step: float) -> float:
    """Mean CPU µs of ``calls`` allow() calls from new clients, time moving by ``step``."""
    began = time.process_time()
    for n in range(calls):
        window.allow(f"new{start}-{n}", start + n * step)
    return (time.process_time() - began) / calls * 1e6


def _median(measure: list[float]) -> float:
    return statistics.median(measure)


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--calls", type=int, default=2000)
    parser.add_argument("--limits-file", help="measure this limits.py instead")
    args = parser.parse_args()
    global SlidingWindow
    limits = _load(args.limits_file) if args.limits_file else alertd.web.limits
    SlidingWindow = limits.SlidingWindow
    rows = []
    for keys in (1_000, 10_000, 50_000):
        # Every held key is live (inside the window): nothing may be dropped.
        live = [_per_call_us(_filled(keys), args.calls, keys / 1000, 0.0) for _ in range(5)]
        rows.append((f"{keys:,} live keys: one allow()", _median(live)))
    # 50,000 keys that all go idle while 5 × --calls calls come in, from new clients, over
    # the 50 s in which they do: every key is dropped once, however the calls fall.
    idle = []
    for _ in range(5):
        calls = 5 * args.calls
        start = 50.0 + WINDOW_S - 50.0
        idle.append(_per_call_us(_filled(50_000), calls, start, 50.0 / calls))
    rows.append(("50,000 keys going idle: allow(), amortised", _median(idle)))
    source = "prune-all-above-10,000" if hasattr(limits, "_PRUNE_ABOVE_KEYS") else "ordered"
    print(f"### Rate limiter ({source})\n")
    extra = f" --limits-file {args.limits_file}" if args.limits_file else ""
    print(f"Command: `.venv/bin/python bench/limiter_bench.py --calls {args.calls}{extra}`\n")
    print("| measure | CPU time per call |")
    print("|---|---|")
    for name, us in rows:
        print(f"| {name} | {us:,.1f} µs |")


if __name__ == "__main__":
    main()
