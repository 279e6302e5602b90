"""Whether POST /manage (email me my manage link) tells a known address from an unknown one
by its timing: the web app in process (httpx ASGI transport), SQLite, known and unknown
addresses alternated, each address asked for once (as a prober would), with mail working
(Maildir) and with the mail server down (SMTP to a closed port).

Run: .venv/bin/python bench/manage_link_bench.py [--requests 200]

Prints a Markdown section for bench/RESULTS.md: per case and mail state, the median and
90th percentile of the response time, and every status code and body size seen.
"""

from __future__ import annotations

import argparse
import asyncio
import logging
import socket
import statistics
import tempfile
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

import httpx

from alertd.config import Settings
from alertd.db import open_database
from alertd.subscriptions import lifecycle
from alertd.web import create_app


def _closed_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


def _settings(folder: Path, mail_down: bool) -> Settings:
    data: dict[str, Any] = {
        "database": {"url": f"sqlite:///{folder}/alertd.db"},
        "mail": {"maildir": str(folder / "mail"), "from": "alerts@bench.test"},
        "web": {
            "base_url": "http://localhost:8000",
            "secret_key": "bench-" + "k" * 32,
            "mails_per_ip_per_hour": 1_000_000,
            "mails_per_address_per_hour": 1_000_000,
        },
    }
    if mail_down:
        data["mail"]["delivery"] = "smtp"
        data["smtp"] = {"host": "127.0.0.1", "port": _closed_port(), "timeout_s": 1.0}
    return Settings.model_validate(data)


async def _run(requests: int, mail_down: bool) -> dict[str, tuple[list[float], set[str]]]:
    with tempfile.TemporaryDirectory() as name:
        folder = Path(name)
        settings = _settings(folder, mail_down)
        engine = open_database(settings.database)
        for n in range(requests):
            lifecycle.subscribe(
                engine,
                f"known{n}@example.org",
                '"special educational needs"',
                "daily",
                confirmed=True,
                now=datetime.now(UTC),
            )
        app = create_app(settings, engine)
        seen: dict[str, tuple[list[float], set[str]]] = {
            "known": ([], set()),
            "unknown": ([], set()),
        }
        async with app.router.lifespan_context(app):
            transport = httpx.ASGITransport(app=app, client=("198.51.100.1", 1234))
            async with httpx.AsyncClient(transport=transport, base_url="http://t") as client:
                for warm in range(5):
                    await client.post("/manage", data={"email": f"warm{warm}@example.org"})
                for n in range(requests):
                    for case in ("known", "unknown"):
                        email = f"{case}{n}@example.org"
                        started = time.perf_counter()
                        response = await client.post("/manage", data={"email": email})
                        elapsed = time.perf_counter() - started
                        times, shapes = seen[case]
                        times.append(elapsed)
                        body = response.text.replace(email, "ADDRESS")
                        shapes.add(f"{response.status_code}/{len(body)} bytes")
        engine.dispose()
        return seen


def _ms(values: list[float], q: float) -> str:
    ordered = sorted(values)
    return f"{ordered[min(len(ordered) - 1, int(q * len(ordered)))] * 1000:.2f}"


def main() -> None:
    parser = argparse.ArgumentParser()
    parser.add_argument("--requests", type=int, default=200)
    args = parser.parse_args()
    logging.disable(logging.WARNING)  # the refused SMTP connections, once per request
    print("## POST /manage: known vs unknown address\n")
    print(f"Command: `.venv/bin/python bench/manage_link_bench.py --requests {args.requests}`\n")
    print("| mail | address | median ms | p90 ms | responses (status/body) |")
    print("|---|---|---|---|---|")
    for mail_down in (False, True):
        seen = asyncio.run(_run(args.requests, mail_down))
        for case, (times, shapes) in seen.items():
            state = "down (SMTP refused)" if mail_down else "working (Maildir)"
            print(
                f"| {state} | {case} | {statistics.median(times) * 1000:.2f} | "
                f"{_ms(times, 0.9)} | {', '.join(sorted(shapes))} |"
            )


if __name__ == "__main__":
    main()
