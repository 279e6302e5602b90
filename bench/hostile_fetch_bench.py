"""Hostile feeds against the real fetch code: time and peak RSS of one fetch each, in a fresh
process per case (a dripping feed, a 200 MB feed, a 400 KB gzip bomb, a normal 1 MB feed).

Run: .venv/bin/python bench/hostile_fetch_bench.py
"""

from __future__ import annotations

import asyncio
import resource
import subprocess
import sys
import time
from pathlib import Path

sys.path.insert(0, str(Path(__file__).resolve().parent.parent / "tests"))

from alertd.errors import AlertdError
from alertd.sources import http

from feed_server import FeedServer, Route, gzip_bomb

CASES = {
    "drip (1 byte / 2 s)": lambda: Route(b"<rss>" + b" " * 1000, drip_s=2.0),
    "200 MB body": lambda: Route(b" " * (1 << 20), repeat=200),
    "200 MB body, no length": lambda: Route(b" " * (1 << 20), repeat=200, declare_length=False),
    "400 KB gzip bomb": lambda: Route(gzip_bomb(), content_encoding="gzip"),
    "1 MB feed (control)": lambda: Route(b" " * (1 << 20)),
}


async def _fetch(url: str) -> str:
    async with http.make_client("bench", 30.0) as client:
        try:
            response = await http.get(client, url)
        except AlertdError as exc:
            return f"error: {exc}".replace(url, "URL")
        return f"read {len(response.content):,} bytes"


def one(case: str) -> None:
    route = CASES[case]()
    with FeedServer() as server:
        server.serve("/f", route)
        started = time.monotonic()
        outcome = asyncio.run(_fetch(server.url("/f")))
        elapsed = time.monotonic() - started
    peak_mib = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024
    print(f"| {case} | {elapsed:.2f} s | {peak_mib:.0f} MiB | {outcome} |")


def main() -> None:
    print("| case | time | peak RSS (process) | outcome |")
    print("|---|---|---|---|")
    for case in CASES:
        subprocess.run([sys.executable, __file__, case], check=True)


if __name__ == "__main__":
    if len(sys.argv) > 1:
        one(sys.argv[1])
    else:
        main()
