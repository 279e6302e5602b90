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
import subprocess
import sys
import tempfile
import time
from collections.abc import Iterator
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
from alertd.digests.compose import compose_due_digests
from alertd.digests.render import build_environment
from alertd.digests.render_pool import RenderPool
from alertd.errors import SourceInvalid
from alertd.items import add_items
from alertd.kinds import kind_of, written_question
from alertd.kinds.kind import NewItem
from alertd.mail import sender as mail_sender
from alertd.mail.sender import DeliveryReport, drain_outbox
from alertd.mail.transports import mailer_factory
from alertd.matching.analysis import AnalysedDocument, analyse, parse_query
from alertd.matching.hits import match_new_items
from alertd.models import Alert, Hit, Item, Ledger, Outbox, OutboxState, Subscriber
from alertd.pipeline import Runtime, run_once

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


def _load_items() -> list[NewItem]:
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
            item = written_question.parse(value)
            if item.day is not None:
                items.append(item)
    return items


def _candidate_queries(engine: Engine) -> list[str]:
    """Member follows and heading words that each match 1-5 alertable answers, interleaved."""
    with Session(engine) as session:
        questions = session.exec(
            select(Item).where(col(Item.matched_at).is_(None), col(Item.never_alert).is_(False))
        ).all()
    documents = [kind_of(q).document(q) for q in questions]
    members: collections.Counter[int] = collections.Counter()
    words: set[str] = set()
    for document in documents:
        members.update(document.member_ids())
        words.update(WORD.findall(document.title.lower()))
    follows = [f"member:{m}" for m, n in sorted(members.items()) if n <= MAX_PER_DIGEST]
    docs: list[AnalysedDocument] = [analyse(document) for document in documents]
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
                }
            )
        session.execute(sa.insert(Alert), alerts)


def build_population(engine: Engine, count: int) -> Population:
    started = time.monotonic()
    answers = add_items(
        engine, written_question.SOURCE, _load_items(), now=INGESTED, today=INGESTED.date()
    )
    queries = _candidate_queries(engine)
    _subscribe_all(engine, count, queries)
    hits = match_new_items(engine, now=INGESTED + timedelta(minutes=1))
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


def reset_outbox(engine: Engine, now: datetime, count: int) -> None:
    """Make the first ``count`` digests due again, as if freshly queued (ids ascend)."""
    with transaction(engine) as session:
        last = session.exec(
            select(Outbox.id).order_by(col(Outbox.id)).offset(count - 1).limit(1)
        ).one()
        assert last is not None
        session.execute(
            sa.update(Outbox)
            .where(col(Outbox.id) <= last)
            .values(
                status=OutboxState.PENDING,
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
    cpu_s: float  # this process, all threads (the sink runs in its own process)
    rss_mb: float

    @property
    def rate(self) -> float:
        return self.digests / self.seconds

    @property
    def cpu_ms(self) -> float:
        return self.cpu_s / self.digests * 1000


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
            print(f"\n-- profile {name} ({path}), top by cumulative time --")
            pstats.Stats(profile).sort_stats("cumulative").print_stats(25)


@dataclass
class Clock:
    """Wall and CPU time of one measured stretch."""

    wall: float = 0.0
    cpu: float = 0.0

    @contextlib.contextmanager
    def running(self) -> Iterator[None]:
        wall, cpu = time.perf_counter(), time.process_time()
        try:
            yield
        finally:
            self.wall, self.cpu = time.perf_counter() - wall, time.process_time() - cpu


def measured(phase: str, connections: int | None, expected: int, done: int, clock: Clock) -> Row:
    if done != expected:
        raise RuntimeError(f"{phase}: {done} of {expected} digests")
    row = Row(phase, connections, done, clock.wall, clock.cpu, peak_rss_mb())
    print(
        f"  {phase:<26} c={connections or '-'} {done:7,} {row.rate:8.0f}/s {clock.wall:7.1f}s "
        f"{row.cpu_ms:6.2f} CPU ms/digest",
        flush=True,
    )
    return row


class StageClock:
    """Times (and optionally profiles) the compose and drain stages inside ``run_once``.

    run_once looks compose up in ``alertd.pipeline`` and its sender looks the drain up in
    ``alertd.mail.sender``, at call time, so wrapping them there measures the real cycle,
    thread hop included, without a second compose pass.
    """

    def __init__(self, profile: Profiler) -> None:
        self.profile = profile
        self.compose = Clock()
        self.deliver = Clock()

    @contextlib.contextmanager
    def installed(self) -> Iterator[None]:
        def timed_compose(*args: Any, **kwargs: Any) -> int:
            # Runs in run_once's worker thread; the event loop waits meanwhile.
            with self.compose.running(), self.profile("compose"):
                return compose_due_digests(*args, **kwargs)

        async def timed_drain(*args: Any, **kwargs: Any) -> DeliveryReport:
            with self.deliver.running(), self.profile("deliver"):
                return await drain_outbox(*args, **kwargs)

        with (
            mock.patch.object(pipeline, "compose_due_digests", timed_compose),
            mock.patch.object(mail_sender, "drain_outbox", timed_drain),
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


@dataclass(frozen=True)
class Outcome:
    rows: list[Row]
    population: Population
    mean_kib: float


def reset_composed(engine: Engine) -> None:
    """Undo composing: no outbox or ledger rows, every hit pending again."""
    with transaction(engine) as session:
        session.execute(sa.update(Hit).values(outbox_id=None))
        session.execute(sa.delete(Ledger))
        session.execute(sa.delete(Outbox))


def run_bench(
    count: int, sample: int, connections: list[int], processes: int, profile: Profiler
) -> Outcome:
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
                    select(Outbox.recipient, Outbox.message).order_by(col(Outbox.id)).limit(sample)
                ).all()
            messages = [(recipient, bytes(message)) for recipient, message in outbox]
            mean_kib = sum(len(m) for _, m in messages) / len(messages) / 1024
            for n in connections:
                rows.append(_ceiling(sink, messages, n))
                if n != pool:
                    rows.append(_deliver(sink, make_runtime(settings, engine, n), sample, now))
            if processes:
                # The same cycle again, rendering in worker processes.
                reset_composed(engine)
                runtime = make_runtime(settings, engine, pool)
                runtime.render_pool = RenderPool(runtime.settings, processes)
                try:
                    label = f", {processes} render processes"
                    rows += _cycle(sink, runtime, count, now, Profiler(None), label)
                finally:
                    runtime.render_pool.close()
            engine.dispose()
    finally:
        sink.close()
    return Outcome(rows, population, mean_kib)


def _cycle(
    sink: Sink, runtime: Runtime, count: int, now: datetime, profile: Profiler, label: str = ""
) -> list[Row]:
    """The pipeline from pending hits to sent mail: ``run_once(poll=False)``, stages timed."""
    stages = StageClock(profile)
    connections = runtime.settings.smtp.connections
    before = sink.received
    total = Clock()
    with stages.installed(), total.running():
        report = asyncio.run(run_once(runtime, now=now, poll=False))
    sink.wait_for(before + report.sent)
    return [
        measured(f"compose+render{label}", None, count, report.digests_queued, stages.compose),
        measured(f"deliver (drain_outbox){label}", connections, count, report.sent, stages.deliver),
        measured(f"render+deliver (run_once){label}", connections, count, report.sent, total),
    ]


def _ceiling(sink: Sink, messages: list[tuple[str, bytes]], connections: int) -> Row:
    before = sink.received
    clock = Clock()
    with clock.running():
        sent = asyncio.run(bare_send(sink.port, messages, connections))
    sink.wait_for(before + sent)
    return measured("ceiling (bare aiosmtplib)", connections, len(messages), sent, clock)


def _deliver(sink: Sink, runtime: Runtime, count: int, now: datetime) -> Row:
    """``drain_outbox`` alone over the first ``count`` rendered digests, made due again."""
    reset_outbox(runtime.engine, now, count)
    before = sink.received
    clock = Clock()
    with clock.running():
        report = asyncio.run(
            drain_outbox(runtime.engine, runtime.make_mailer, runtime.drain_options(), now=now)
        )
    sink.wait_for(before + report.sent)
    connections = runtime.settings.smtp.connections
    return measured("deliver (drain_outbox)", connections, count, report.sent, clock)


# ---------------------------------------------------------------------------------------------
# Report

BEGIN = "<!-- generated by bench/delivery_bench.py: replaced on every run -->"
END = "<!-- end of generated part; notes below are kept across runs -->"
ORDER = ("compose", "ceiling", "deliver", "render")


def _ordered(rows: list[Row]) -> list[Row]:
    return sorted(rows, key=lambda r: (r.connections or 0, ORDER.index(r.phase[:7].rstrip(" +("))))


def _ceilings(rows: list[Row]) -> dict[int | None, Row]:
    return {row.connections: row for row in rows if row.phase.startswith("ceiling")}


def table(rows: list[Row]) -> str:
    ceilings = _ceilings(rows)
    lines = [
        "| phase | connections | digests | seconds | digests/s | of ceiling "
        "| client CPU ms/digest | peak RSS MiB |",
        "|---|---:|---:|---:|---:|---:|---:|---:|",
    ]
    for row in _ordered(rows):
        ceiling = ceilings.get(row.connections)
        ratio = (
            f"**{row.rate / ceiling.rate:.0%}**"
            if ceiling is not None and row is not ceiling
            else "—"
        )
        lines.append(
            f"| {row.phase} | {row.connections or '—'} | {row.digests:,} | {row.seconds:.1f} "
            f"| **{row.rate:,.0f}** | {ratio} | {row.cpu_ms:.2f} | {row.rss_mb:,.0f} |"
        )
    return "\n".join(lines)


def verdict(rows: list[Row]) -> list[str]:
    ceilings = _ceilings(rows)
    lines = []
    for row in _ordered(rows):
        if row.phase.startswith("ceiling"):
            continue
        checks = [f"{row.rate:,.0f}/s {'≥' if row.rate >= TARGET_PER_S else '<'} 1,000/s"]
        ceiling = ceilings.get(row.connections)
        met = row.rate >= TARGET_PER_S
        if ceiling is not None:
            ratio = row.rate / ceiling.rate
            checks.append(f"{ratio:.0%} of ceiling {'≥' if ratio >= TARGET_RATIO else '<'} 50 %")
            met = met and ratio >= TARGET_RATIO
        where = f", {row.connections} connection{'s' if row.connections != 1 else ''}"
        lines.append(
            f"- **{'MET' if met else 'MISSED'}** {row.phase}"
            f"{where if row.connections else ''}: {'; '.join(checks)}"
        )
    return lines


def tree_state() -> str:
    """The commit measured, and whether alertd/ or templates/ had uncommitted changes."""
    try:
        commit = subprocess.run(
            ["git", "-C", str(ROOT), "rev-parse", "--short", "HEAD"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
        dirty = subprocess.run(
            ["git", "-C", str(ROOT), "status", "--porcelain", "--", "alertd", "templates"],
            capture_output=True,
            text=True,
            check=True,
        ).stdout.strip()
    except (OSError, subprocess.CalledProcessError):
        return "unknown commit"
    return f"commit {commit}" + (
        " plus uncommitted changes in alertd/ or templates/" if dirty else ""
    )


def generated(outcome: Outcome, count: int, sample: int, command: str, took_s: float) -> str:
    population = outcome.population
    return "\n".join(
        [
            BEGIN,
            "",
            f"Command: `{command}` — one run, {took_s / 60:.1f} min, every row below from it; "
            f"measured on {tree_state()} ({datetime.now(UTC):%Y-%m-%d %H:%M} UTC).",
            "",
            f"Machine: {os.cpu_count()} cores, shared with other work and noisy; Python "
            f"{sys.version.split()[0]}; SQLite (WAL, synchronous=NORMAL) in a temp dir; the SMTP "
            "sink is aiosmtpd in a separate process on 127.0.0.1, counting every message (each "
            "row checks that all arrived). One run: compare the ratios and the CPU per digest "
            "(robust to the noise), not absolute rates across runs.",
            "",
            f"Data: {count:,} subscribers, one confirmed immediate alert each (member follows of "
            f"the recorded Members and heading words, {population.queries} distinct queries, each "
            f"matching 1–5 answers) over the {population.answers} recorded answers of "
            f"`tests/fixtures`; {population.hits:,} hits, {population.hits_min}–"
            f"{population.hits_max} questions per digest; mean message {outcome.mean_kib:.1f} KiB. "
            "Settings: defaults (no DKIM, no VERP), `delivery.batch_size` = all digests.",
            "",
            table(outcome.rows),
            "",
            f"- *compose+render*, *deliver* at {max(r.connections or 0 for r in outcome.rows)} "
            "connections and *render+deliver* come from one `run_once(poll=False)` over all "
            "digests (the stages timed inside it): `compose_due_digests` (200 subscribers a "
            "transaction: ledger rows + rendered outbox rows), then `drain_outbox` with the "
            "real `SmtpMailer` pool.",
            f"- *ceiling* sends the first {sample:,} outbox rows' bytes with bare aiosmtplib, one "
            "reused connection per worker; the other pool size's *deliver* drains those same "
            f"{sample:,} rows made due again (steady-state rates; a sample keeps the run short).",
            "- rows ending *N render processes* repeat that whole cycle from the same pending "
            "hits (outbox and ledger emptied) with `digest.render_processes` = N, the workers "
            "started beforehand as the daemon starts them; their CPU is not in the client CPU "
            "column (it is this process's only).",
            "- client CPU is this process's CPU time (all threads) per digest; the sink's is not "
            "in it. Peak RSS is the process's high-water mark when the row finished.",
            "",
            "Verdict against the targets (≥ 1,000 digests/s and ≥ 50 % of the ceiling):",
            "",
            *verdict(outcome.rows),
            "",
            END,
        ]
    )


def write_section(block: str, path: Path = RESULTS_MD) -> None:
    """Replace the generated block of the Delivery section; keep every other line of the file."""
    current = path.read_text() if path.exists() else "# Benchmarks\n"
    found = re.search(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", current, re.MULTILINE | re.DOTALL)
    if found is None:
        path.write_text(current.rstrip() + f"\n\n{SECTION}\n\n{block}\n")
        return
    old = found.group(0)
    if BEGIN in old and END in old:
        start, stop = old.index(BEGIN), old.index(END) + len(END)
        new = old[:start] + block + old[stop:]
    else:
        new = f"{SECTION}\n\n{block}\n\n"
    path.write_text(current[: found.start()] + new + current[found.end() :])


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--digests", type=int, default=50_000, help="subscribers = digests")
    parser.add_argument(
        "--sample", type=int, default=10_000, help="digests for the ceilings and other pool sizes"
    )
    parser.add_argument(
        "--connections", type=int, nargs="+", default=[1, 4], help="SMTP pool sizes"
    )
    parser.add_argument(
        "--render-processes",
        type=int,
        default=os.cpu_count() or 1,
        help="worker processes for the second cycle (digest.render_processes); 0 skips it",
    )
    parser.add_argument("--profile", type=Path, help="write cProfile stats of the stages here")
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    args = parser.parse_args()
    logging.basicConfig(level=logging.WARNING, format="%(levelname)s %(name)s: %(message)s")
    started = time.monotonic()
    sample = min(args.sample, args.digests)
    outcome = run_bench(
        args.digests,
        sample,
        sorted(set(args.connections)),
        args.render_processes,
        Profiler(args.profile),
    )
    command = " ".join([COMMAND, *sys.argv[1:]])
    block = generated(outcome, args.digests, sample, command, time.monotonic() - started)
    print()
    print(block)
    if not args.no_write:
        write_section(block)
        print(f"\nupdated {RESULTS_MD.relative_to(ROOT)}")
    return 0


if __name__ == "__main__":
    sys.exit(main())
