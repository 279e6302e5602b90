"""Delivery benchmark: compose, SMTP delivery and end-to-end digests/s against a local sink."""

from __future__ import annotations

import argparse
import asyncio
import collections
import contextlib
import cProfile
import json
import logging
import multiprocessing
import os
import pstats
import re
import resource
import sqlite3
import sys
import tempfile
import time
from collections.abc import Iterator, Mapping
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from multiprocessing.connection import Connection
from multiprocessing.sharedctypes import Synchronized
from multiprocessing.synchronize import Event as MpEvent
from pathlib import Path
from typing import Any
from unittest import mock

import aiosmtplib
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from alertd import pipeline
from alertd.config import Settings
from alertd.db import open_database, transaction
from alertd.delivery import mailer_factory
from alertd.digests import compose_due_digests
from alertd.errors import SourceInvalid
from alertd.hits import match_new_answers, question_document
from alertd.ingest import store_items
from alertd.matching import AnalysedDocument, analyse, parse_query
from alertd.models import Alert, Hit, Outbox, Question, Subscriber
from alertd.outbox import DeliveryReport, drain_outbox
from alertd.pipeline import Runtime, run_once
from alertd.render import build_environment
from alertd.sources import AnswerItem, parse_item

ROOT = Path(__file__).resolve().parent.parent
FIXTURES = ROOT / "tests" / "fixtures"
ANSWERED_2021 = FIXTURES / "list_answered_2021-02-01_bicameral_expandMember.json"
RESULTS_2024 = FIXTURES / "results_tabled_2024-08_commons_mysociety.json"
LONGFORM_2024 = FIXTURES / "longform_detail_texts_2024-08_mysociety.sqlite"
RESULTS_MD = ROOT / "bench" / "RESULTS.md"
SECTION = "## Delivery"
COMMAND = ".venv/bin/python bench/delivery_bench.py"

TARGET_PER_S = 1000.0
TARGET_RATIO = 0.5
MAX_PER_DIGEST = 5
SENDER = "alerts@alertd.test"
# Alerts are confirmed before the answers arrive, so every stored answer is alertable.
CONFIRMED = datetime(2024, 9, 2, 8, 0, tzinfo=UTC)
INGESTED = CONFIRMED + timedelta(hours=1)
WORD = re.compile(r"[a-z]{5,}")


# ---------------------------------------------------------------------------------------------
# The SMTP sink: aiosmtpd in its own process (own GIL and event loop), counting messages


class _CountingHandler:
    def __init__(self, counter: Synchronized[int]) -> None:
        self.counter = counter

    async def handle_DATA(self, server: Any, session: Any, envelope: Any) -> str:
        self.counter.value += 1
        return "250 2.0.0 OK"


def _sink_main(counter: Synchronized[int], ready: Connection, stop: MpEvent) -> None:
    from aiosmtpd.smtp import SMTP

    async def serve() -> None:
        loop = asyncio.get_running_loop()
        handler = _CountingHandler(counter)
        server = await loop.create_server(
            lambda: SMTP(handler, hostname="sink.alertd.test"), "127.0.0.1", 0
        )
        ready.send(int(server.sockets[0].getsockname()[1]))
        await asyncio.to_thread(stop.wait)
        server.close()

    asyncio.run(serve())


class Sink:
    """A counting aiosmtpd server on 127.0.0.1 (free port) in a child process."""

    def __init__(self) -> None:
        ctx = multiprocessing.get_context("spawn")
        self._counter: Synchronized[int] = ctx.Value("q", 0)
        self._stop = ctx.Event()
        parent, child = ctx.Pipe(duplex=False)
        self._process = ctx.Process(
            target=_sink_main, args=(self._counter, child, self._stop), daemon=True
        )
        self._process.start()
        if not parent.poll(30):
            raise RuntimeError("the SMTP sink did not start")
        self.port: int = parent.recv()

    @property
    def received(self) -> int:
        return int(self._counter.value)

    def wait_for(self, count: int, timeout: float = 10.0) -> None:
        deadline = time.monotonic() + timeout
        while self.received < count:
            if time.monotonic() > deadline:
                raise RuntimeError(f"sink received {self.received} of {count} messages")
            time.sleep(0.01)

    def close(self) -> None:
        self._stop.set()
        self._process.join(10)
        if self._process.is_alive():
            self._process.terminate()
            self._process.join()


# ---------------------------------------------------------------------------------------------
# The database: recorded answers, one immediate alert per subscriber, 1-5 hits each


def _load_items() -> list[AnswerItem]:
    """The recorded answers: 1 Feb 2021 (Members expanded) and Aug 2024 (full texts merged)."""
    values = [r["value"] for r in json.loads(ANSWERED_2021.read_bytes())["results"]]
    longform: dict[int, tuple[str, str]] = {}
    uri = f"{LONGFORM_2024.as_uri()}?mode=ro&immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        for key, value in connection.execute("SELECT key, value FROM Dict"):
            data = json.loads(value)
            longform[int(key)] = (data["question_text"], data["answer_text"])
    for record in json.loads(RESULTS_2024.read_bytes()):
        value = dict(record["value"])
        if int(value["id"]) in longform:
            value["questionText"], value["answerText"] = longform[int(value["id"])]
        values.append(value)
    items = []
    for value in values:
        with contextlib.suppress(SourceInvalid):
            item = parse_item(value)
            if item.date_answered is not None:
                items.append(item)
    return items


def _candidate_queries(engine: Engine) -> list[str]:
    """Member follows and heading words that each match 1-5 alertable answers, interleaved."""
    with Session(engine) as session:
        questions = session.exec(select(Question).where(col(Question.matched_at).is_(None))).all()
    members: collections.Counter[int] = collections.Counter()
    words: set[str] = set()
    for q in questions:
        members.update({m for m in (q.asking_member_id, q.answering_member_id) if m is not None})
        words.update(WORD.findall(q.heading.lower()))
    follows = [f"member:{m}" for m, n in sorted(members.items()) if n <= MAX_PER_DIGEST]
    docs: list[AnalysedDocument] = [analyse(question_document(q)) for q in questions]
    topics = []
    for word in sorted(words):
        query = parse_query(word)
        found = sum(1 for doc in docs if query.matches(doc))
        if 1 <= found <= MAX_PER_DIGEST:
            topics.append(word)
    mixed = [q for pair in zip(follows, topics, strict=False) for q in pair]
    longer = follows if len(follows) > len(topics) else topics
    return mixed + longer[len(mixed) // 2 :]


@dataclass(frozen=True)
class Population:
    answers: int
    queries: int
    hits: int
    hits_min: int
    hits_max: int
    setup_s: float


def _subscribe_all(engine: Engine, count: int, queries: list[str]) -> None:
    canonical = {q: parse_query(q).canonical for q in queries}
    with transaction(engine) as session:
        session.execute(
            sa.insert(Subscriber),
            [
                {"email": f"reader{i:06d}@example.org", "created_at": CONFIRMED}
                for i in range(count)
            ],
        )
        ids = session.exec(select(Subscriber.id).order_by(col(Subscriber.id))).all()
        alerts = []
        for i, subscriber_id in enumerate(ids):
            query = queries[i % len(queries)]
            alerts.append(
                {
                    "subscriber_id": subscriber_id,
                    "query": query,
                    "canonical": canonical[query],
                    "frequency": "immediate",
                    "confirmed": True,
                    "confirmed_at": CONFIRMED,
                    "created_at": CONFIRMED,
                    "last_digest_at": CONFIRMED,
                }
            )
        session.execute(sa.insert(Alert), alerts)


def build_population(engine: Engine, count: int) -> Population:
    started = time.monotonic()
    answers = store_items(engine, _load_items(), now=INGESTED)
    queries = _candidate_queries(engine)
    _subscribe_all(engine, count, queries)
    hits = match_new_answers(engine, now=INGESTED + timedelta(minutes=1))
    with Session(engine) as session:
        per = (
            select(Hit.subscriber_id, func.count().label("n"))
            .group_by(col(Hit.subscriber_id))
            .subquery()
        )
        low, high, subscribers = session.exec(
            select(func.min(per.c.n), func.max(per.c.n), func.count())
        ).one()
    if subscribers != count or low < 1 or high > MAX_PER_DIGEST:
        raise RuntimeError(f"{subscribers} subscribers with hits, {low}-{high} hits each")
    return Population(answers, len(queries), hits, low, high, time.monotonic() - started)


def reset_outbox(engine: Engine, now: datetime) -> None:
    """Make every digest due again, as if freshly queued."""
    with transaction(engine) as session:
        session.execute(
            sa.update(Outbox).values(
                status="pending",
                attempts=0,
                sent_at=None,
                lease_owner=None,
                lease_until=None,
                next_attempt_at=now,
            )
        )


# ---------------------------------------------------------------------------------------------
# Measurements


@dataclass(frozen=True)
class Row:
    phase: str
    connections: int | None
    digests: int
    seconds: float
    rss_mb: float

    @property
    def rate(self) -> float:
        return self.digests / self.seconds


def peak_rss_mb() -> float:
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024


class Profiler:
    """cProfile around chosen phases when --profile DIR is given; otherwise a no-op."""

    def __init__(self, directory: Path | None) -> None:
        self.directory = directory

    @contextlib.contextmanager
    def __call__(self, name: str) -> Iterator[None]:
        if self.directory is None:
            yield
            return
        profile = cProfile.Profile()
        profile.enable()
        try:
            yield
        finally:
            profile.disable()
            self.directory.mkdir(parents=True, exist_ok=True)
            path = self.directory / f"{name}.prof"
            profile.dump_stats(path)
            print(f"\n-- profile {name} ({path}), top by own time --")
            pstats.Stats(profile).sort_stats("tottime").print_stats(20)


def measured(phase: str, connections: int | None, expected: int, done: int, seconds: float) -> Row:
    if done != expected:
        raise RuntimeError(f"{phase}: {done} of {expected} digests")
    row = Row(phase, connections, done, seconds, peak_rss_mb())
    print(f"  {phase:<26} c={connections or '-'} {row.rate:9.0f}/s  {seconds:7.1f}s", flush=True)
    return row


class StageClock:
    """Times (and optionally profiles) the compose and drain stages inside ``run_once``.

    run_once looks both up in ``alertd.pipeline`` at call time, so wrapping them there
    measures the real cycle, thread hop included, without a second compose pass.
    """

    def __init__(self, profile: Profiler) -> None:
        self.profile = profile
        self.seconds: dict[str, float] = {}

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        def timed_compose(*args: Any, **kwargs: Any) -> int:
            started = time.perf_counter()
            with self.profile("compose"):  # runs in run_once's worker thread
                queued = compose_due_digests(*args, **kwargs)
            self.seconds["compose"] = time.perf_counter() - started
            return queued

        async def timed_drain(*args: Any, **kwargs: Any) -> DeliveryReport:
            started = time.perf_counter()
            with self.profile("deliver"):
                report = await drain_outbox(*args, **kwargs)
            self.seconds["deliver"] = time.perf_counter() - started
            return report

        with (
            mock.patch.object(pipeline, "compose_due_digests", timed_compose),
            mock.patch.object(pipeline, "drain_outbox", timed_drain),
        ):
            yield


async def bare_send(port: int, messages: list[tuple[str, bytes]], connections: int) -> int:
    """The ceiling: aiosmtplib alone, one reused connection per worker, pre-rendered bytes."""
    queue = collections.deque(messages)
    sent = 0

    async def worker() -> None:
        nonlocal sent
        smtp = aiosmtplib.SMTP(hostname="127.0.0.1", port=port, timeout=30)
        await smtp.connect()
        while queue:
            recipient, message = queue.popleft()
            await smtp.sendmail(SENDER, [recipient], message)
            sent += 1
        await smtp.quit()

    await asyncio.gather(*(worker() for _ in range(connections)))
    return sent


def make_settings(directory: Path, port: int, connections: int, count: int) -> Settings:
    return Settings.model_validate(
        {
            "database": {"url": f"sqlite:///{directory}/alertd.db"},
            "mail": {"from": SENDER, "delivery": "smtp"},
            "smtp": {"host": "127.0.0.1", "port": port, "connections": connections},
            "web": {"base_url": "http://localhost:8000", "secret_key": "bench-secret"},
            # One drain takes every digest; leases outlast the run.
            "delivery": {"batch_size": count, "lease_s": 3600},
        }
    )


def make_runtime(settings: Settings, engine: Engine, connections: int) -> Runtime:
    smtp = settings.smtp.model_copy(update={"connections": connections})
    settings = settings.model_copy(update={"smtp": smtp})
    return Runtime(settings, engine, mailer_factory("smtp", Path("."), smtp), build_environment())


def run_bench(count: int, connections: list[int], profile: Profiler) -> tuple[list[Row], str]:
    """Every measurement in one process against one database and one sink."""
    sink = Sink()
    try:
        with tempfile.TemporaryDirectory(prefix="alertd-bench-") as tmp:
            pool = max(connections)
            settings = make_settings(Path(tmp), sink.port, pool, count)
            engine = open_database(settings.database)
            print(f"building {count:,} subscribers in {tmp} ...", flush=True)
            population = build_population(engine, count)
            print(
                f"  {population.answers} answers, {population.queries} distinct alert queries, "
                f"{population.hits:,} hits ({population.hits_min}-{population.hits_max} per "
                f"subscriber), {population.setup_s:.1f}s",
                flush=True,
            )
            now = INGESTED + timedelta(minutes=2)
            rows = _cycle(sink, make_runtime(settings, engine, pool), count, now, profile)
            with Session(engine) as session:
                outbox = session.exec(
                    select(Outbox.recipient, Outbox.message).order_by(col(Outbox.id))
                ).all()
            messages = [(recipient, bytes(message)) for recipient, message in outbox]
            size = sum(len(m) for _, m in messages) / len(messages)
            for n in connections:
                rows.append(_ceiling(sink, messages, n))
                if n != pool:
                    rows.append(_deliver(sink, make_runtime(settings, engine, n), count, now))
            engine.dispose()
    finally:
        sink.close()
    about = (
        f"{population.answers} recorded answers, {population.queries} distinct alert queries "
        f"(member follows and heading words), {population.hits:,} hits, "
        f"{population.hits_min}-{population.hits_max} questions per digest, "
        f"mean message {size / 1024:.1f} KiB"
    )
    order = ("compose", "ceiling", "deliver", "render")
    return sorted(
        rows, key=lambda r: (order.index(r.phase.split()[0].split("+")[0]), r.connections or 0)
    ), about


def _cycle(sink: Sink, runtime: Runtime, count: int, now: datetime, profile: Profiler) -> list[Row]:
    """The pipeline from pending hits to sent mail: ``run_once(poll=False)``, stages timed."""
    clock = StageClock(profile)
    connections = runtime.settings.smtp.connections
    before = sink.received
    with clock.installed():
        started = time.perf_counter()
        report = asyncio.run(run_once(runtime, now=now, poll=False))
        total = time.perf_counter() - started
    sink.wait_for(before + report.sent)
    compose_s, deliver_s = clock.seconds["compose"], clock.seconds["deliver"]
    return [
        measured("compose+render", None, count, report.digests_queued, compose_s),
        measured("deliver (drain_outbox)", connections, count, report.sent, deliver_s),
        measured("render+deliver (run_once)", connections, count, report.sent, total),
    ]


def _ceiling(sink: Sink, messages: list[tuple[str, bytes]], connections: int) -> Row:
    before = sink.received
    started = time.perf_counter()
    sent = asyncio.run(bare_send(sink.port, messages, connections))
    seconds = time.perf_counter() - started
    sink.wait_for(before + sent)
    return measured("ceiling (bare aiosmtplib)", connections, len(messages), sent, seconds)


def _deliver(sink: Sink, runtime: Runtime, count: int, now: datetime) -> Row:
    """``drain_outbox`` alone over the already rendered digests, made due again."""
    reset_outbox(runtime.engine, now)
    before = sink.received
    started = time.perf_counter()
    report = asyncio.run(
        drain_outbox(runtime.engine, runtime.make_mailer, runtime.drain_options(), now=now)
    )
    seconds = time.perf_counter() - started
    sink.wait_for(before + report.sent)
    connections = runtime.settings.smtp.connections
    return measured("deliver (drain_outbox)", connections, count, report.sent, seconds)


# ---------------------------------------------------------------------------------------------
# Report


def _by(rows: list[Row], phase: str) -> dict[int | None, Row]:
    return {row.connections: row for row in rows if row.phase.startswith(phase)}


def table(rows: list[Row]) -> str:
    ceilings = _by(rows, "ceiling")
    lines = [
        "| phase | connections | digests | seconds | digests/s | of ceiling | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|",
    ]
    for row in rows:
        ceiling = ceilings.get(row.connections)
        ratio = (
            f"{row.rate / ceiling.rate:.0%}"
            if ceiling is not None and row.phase != ceiling.phase
            else "—"
        )
        lines.append(
            f"| {row.phase} | {row.connections or '—'} | {row.digests:,} | {row.seconds:.1f} "
            f"| {row.rate:,.0f} | {ratio} | {row.rss_mb:,.0f} |"
        )
    return "\n".join(lines)


def verdict(rows: list[Row]) -> list[str]:
    ceilings = _by(rows, "ceiling")
    lines = []
    for phase in ("deliver", "render+deliver", "compose"):
        for connections, row in sorted(_by(rows, phase).items(), key=lambda kv: kv[0] or 0):
            checks = [f"{row.rate:,.0f}/s {'≥' if row.rate >= TARGET_PER_S else '<'} 1,000/s"]
            ceiling = ceilings.get(connections)
            if ceiling is not None:
                ratio = row.rate / ceiling.rate
                checks.append(f"{ratio:.0%} of ceiling {'≥' if ratio >= TARGET_RATIO else '<'} 50%")
            met = row.rate >= TARGET_PER_S and (
                ceiling is None or row.rate / ceiling.rate >= TARGET_RATIO
            )
            where = f", {connections} connection(s)" if connections else ""
            lines.append(
                f"- {row.phase}{where}: {'MET' if met else 'MISSED'} ({'; '.join(checks)})"
            )
    return lines


def write_section(text: str, path: Path = RESULTS_MD) -> None:
    """Replace (or append) the Delivery section, leaving every other section as it is."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    body = text.rstrip() + "\n"
    if pattern.search(current):
        updated = pattern.sub(lambda _: body + "\n", current, count=1).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + body
    path.write_text(updated)


def section(rows: list[Row], about: str, count: int, argv: Mapping[str, Any]) -> str:
    extra = "" if argv["digests"] == 50_000 else f" --digests {count}"
    return "\n".join(
        [
            SECTION,
            "",
            f"Command: `{COMMAND}{extra}` (one run: builds the database, measures every row).",
            "",
            f"Machine: {os.cpu_count()} cores, shared and noisy; Python "
            f"{sys.version.split()[0]}, SQLite (WAL, synchronous=NORMAL) in a temp dir, "
            "aiosmtpd sink in a separate process on 127.0.0.1 counting every message. "
            "One run: compare the ratios, not the absolute numbers.",
            "",
            f"Data: {count:,} subscribers, one confirmed immediate alert each; {about}.",
            "",
            table(rows),
            "",
            "Rows: *compose+render* is `compose_due_digests` (ledger rows + rendered outbox "
            "row per subscriber); *deliver* is `drain_outbox` with the real `SmtpMailer` pool; "
            "*render+deliver* is `run_once(poll=False)` from hits to sent; *ceiling* sends the "
            "same outbox bytes with bare aiosmtplib, one reused connection per worker. "
            "Peak RSS is the bench process's high-water mark after each row.",
            "",
            "Verdict against the targets (≥ 1,000 digests/s and ≥ 50 % of the ceiling):",
            "",
            *verdict(rows),
        ]
    )


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--digests", type=int, default=50_000, help="subscribers/digests")
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[1, 4], help="SMTP pool sizes"
    )
    parser.add_argument("--profile", type=Path, help="write cProfile stats of phases here")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    rows, about = run_bench(args.digests, sorted(set(args.connections)), Profiler(args.profile))
    text = section(rows, about, args.digests, vars(args))
    print()
    print(text)
    if not args.no_write:
        write_section(text)
        print(f"\nupdated {RESULTS_MD.relative_to(ROOT)} in {time.monotonic() - started:.0f}s")
    return 0


if __name__ == "__main__":
    sys.exit(main())
