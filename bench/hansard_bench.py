"""A sitting day of debates (Hansard): ~1,500 spoken contributions polled over HTTP, stored
in SQLite and matched against the 1,000,000-alert bench population, in seconds and MiB.

The contributions are the recorded ones (tests/fixtures/hansard) varied: values of their
existing fields changed (ids, speaker, sitting day, House, debate), never new fields. They are
served by the Hansard stand-in (tests/standin_hansard.py) in a child process, so the CPU
measured here is the daemon's alone. The poll is the daemon's own (WindowSource.poll with
MemberNames, as alertd/pipeline.py builds it), the match is match_new_items with a LiveMatcher
loaded from the alerts in the same SQLite file.
"""

from __future__ import annotations

import argparse
import asyncio
import gc
import json
import os
import random
import re
import resource
import subprocess
import sys
import tempfile
import time
import uuid
from collections import Counter
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import UTC, date, datetime, timedelta
from pathlib import Path
from typing import Any, TypeVar

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from alertd.config import DatabaseSettings, Settings
from alertd.db import open_database
from alertd.kinds import kind_of
from alertd.kinds.spoken_contribution import SpokenContribution
from alertd.matching.analysis import analyse
from alertd.matching.hits import match_new_items
from alertd.matching.live import LiveMatcher, alerts_version, live_rows
from alertd.models import Alert, Hit, Item, Member, Subscriber
from alertd.sources.member_names import MemberNames
from alertd.sources.parliament import ParliamentApi, make_http_client
from alertd.sources.state import PollLease
from alertd.sources.window import WindowSource

ROOT = Path(__file__).resolve().parent.parent
sys.path.insert(0, str(ROOT / "tests"))
sys.path.insert(0, str(ROOT / "bench"))

from match_bench import (  # noqa: E402
    SEED,
    AlertGenerator,
    _alert_values,
    alert_rows,
    build_vocabulary,
    compile_alerts,
    recorded_records,
)

from standin_api import load_2021_answered, member_search_item  # noqa: E402
from standin_hansard import HansardStandin, load_lords, load_member185  # noqa: E402

RESULTS_MD = ROOT / "bench" / "RESULTS.md"
SECTION = "## A sitting day of debates (Hansard): poll, store, match"
COMMAND = ".venv/bin/python bench/hansard_bench.py"
# A Wednesday; the poll runs that evening (UK time), as a daemon's would after the sitting.
BENCH_DAY = date(2026, 7, 15)
POLL_AT = datetime(2026, 7, 15, 22, 30, tzinfo=UTC)
ALERTS_CREATED = datetime(2026, 1, 1, tzinfo=UTC)
KIND = SpokenContribution()
T = TypeVar("T")

# --- the sitting day's contributions ----------------------------------------------------------


@dataclass(frozen=True)
class Speaker:
    """A Member named in the recorded written questions, as Hansard attributes a speech."""

    id: int
    name: str
    attributed_to: str
    house: str
    member: Mapping[str, Any]


def speakers() -> dict[str, list[Speaker]]:
    """The askers and answerers of the recorded 2021 questions (with names, party, seat),
    by House: 205 Members of the Commons, 60 of the Lords."""
    found: dict[int, Speaker] = {}
    for record in load_2021_answered():
        for role in ("askingMember", "answeringMember"):
            member = record.get(role)
            if not member or member["id"] in found:
                continue
            house = record["house"]
            party = member.get("partyAbbreviation") or member.get("party") or ""
            seat = f" ({member['memberFrom']})" if house == "Commons" else ""
            found[member["id"]] = Speaker(
                member["id"], member["name"], f"{member['name']}{seat} ({party})", house, member
            )
    by_house: dict[str, list[Speaker]] = {"Commons": [], "Lords": []}
    for speaker in sorted(found.values(), key=lambda s: s.id):
        by_house[speaker.house].append(speaker)
    return by_house


def _guid(rng: random.Random) -> str:
    return str(uuid.UUID(int=rng.getrandbits(128), version=4)).upper()


def sitting_day(commons: int, lords: int, seed: int) -> list[dict[str, Any]]:
    """``commons`` + ``lords`` contributions of one sitting day, in debates of 15-30.

    Each debate takes a recorded debate's title and section, then its contributions take
    the texts of that debate's recorded contributions first and of random recorded ones after,
    each said by one of a handful of Members of the House. Only values change.
    """
    rng = random.Random(seed)
    real = [*load_member185(), *load_lords()]
    by_debate: dict[str, list[dict[str, Any]]] = {}
    for record in real:
        by_debate.setdefault(record["DebateSectionExtId"], []).append(record)
    templates = {
        "Commons": [r for r in real if r["House"] == "Commons"],
        "Lords": [r for r in real if r["House"] == "Lords"] + real,
    }
    panel = speakers()
    day = BENCH_DAY.isoformat()
    out: list[dict[str, Any]] = []
    item_id = 60_000_000
    for house, wanted in (("Commons", commons), ("Lords", lords)):
        made, order = 0, 0
        clock = datetime.combine(BENCH_DAY, datetime.min.time()) + timedelta(hours=11, minutes=30)
        while made < wanted:
            order += 1
            size = min(rng.randint(15, 30), wanted - made)
            template = rng.choice(templates[house])
            texts = list(by_debate[template["DebateSectionExtId"]])
            rng.shuffle(texts)
            texts += rng.sample(real, size)
            members = rng.sample(panel[house], rng.randint(4, 10))
            debate_ext_id, debate_id = _guid(rng), 5_500_000 + len(out)
            in_debate = rng.randint(1, 20)
            for text in texts[:size]:
                speaker = rng.choice(members)
                item_id += rng.randint(1, 30)
                in_debate += rng.randint(1, 4)
                clock += timedelta(seconds=rng.randint(30, 600))
                record = dict(text)
                record.update(
                    MemberName=speaker.name,
                    MemberId=speaker.id,
                    AttributedTo=speaker.attributed_to,
                    ItemId=item_id,
                    ContributionExtId=_guid(rng),
                    DebateSection=template["DebateSection"],
                    DebateSectionId=debate_id,
                    DebateSectionExtId=debate_ext_id,
                    SittingDate=f"{day}T00:00:00",
                    Section=template["Section"] if house == "Commons" else "Lords Chamber",
                    House=house,
                    OrderInDebateSection=in_debate,
                    DebateSectionOrder=order,
                    Timecode=clock.isoformat() if house == "Commons" else None,
                )
                out.append(record)
            made += size
    return out


def standin_members() -> list[dict[str, Any]]:
    return [member_search_item(s.member, house) for house, ss in speakers().items() for s in ss]


def serve(commons: int, lords: int, seed: int) -> int:
    """The child process: the stand-in serving the day, until its stdin closes."""
    records = sitting_day(commons, lords, seed)
    with HansardStandin(records, members=standin_members(), hang_seconds=5.0) as api:
        print(json.dumps({"base_url": api.base_url, "records": len(records)}), flush=True)
        sys.stdin.read()
        cpu = time.process_time()
    print(json.dumps({"cpu": cpu}), flush=True)
    return 0


# --- measurements -----------------------------------------------------------------------------


def _status_kib(name: str) -> int:
    for line in Path("/proc/self/status").read_text().splitlines():
        if line.startswith(name + ":"):
            return int(line.split()[1])
    raise RuntimeError(f"{name} not in /proc/self/status")


class Memory:
    """RSS now (VmRSS) and the peak since the last reset (VmHWM, reset through clear_refs);
    the process's peak over the run is kept here, as a reset lowers ru_maxrss too."""

    def __init__(self) -> None:
        self.peak_kib = 0

    def rss(self) -> float:
        return _status_kib("VmRSS") / 1024

    def reset_peak(self) -> None:
        self.peak_kib = max(self.peak_kib, _status_kib("VmHWM"))
        Path("/proc/self/clear_refs").write_text("5")

    def peak_since_reset(self) -> float:
        return _status_kib("VmHWM") / 1024

    def run_peak(self) -> float:
        return max(self.peak_kib, _status_kib("VmHWM")) / 1024


@dataclass
class Phase:
    cpu: float
    wall: float
    rss_before: float
    rss_after: float
    peak: float


def measured(memory: Memory, action: Callable[[], T]) -> tuple[T, Phase]:
    gc.collect()
    before = memory.rss()
    memory.reset_peak()
    cpu, wall = time.process_time(), time.perf_counter()
    result = action()
    cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return result, Phase(cpu, wall, before, memory.rss(), memory.peak_since_reset())


def db_mib(engine: Engine) -> float:
    """The SQLite file's size once its write-ahead log is checkpointed into it."""
    with engine.connect() as connection:
        connection.exec_driver_sql("PRAGMA wal_checkpoint(TRUNCATE)")
        pages = connection.exec_driver_sql("PRAGMA page_count").scalar_one()
        size = connection.exec_driver_sql("PRAGMA page_size").scalar_one()
        free = connection.exec_driver_sql("PRAGMA freelist_count").scalar_one()
    return float((pages - free) * size) / 2**20


# --- the run ----------------------------------------------------------------------------------


def write_alerts(engine: Engine, count: int) -> tuple[int, int]:
    """The match bench's population (same generator, same seed): one subscriber per alert,
    each confirmed before the day. Returns (alerts, distinct queries)."""
    rng = random.Random(SEED)
    generate = AlertGenerator(build_vocabulary(recorded_records()), rng)
    alerts = compile_alerts([generate() for _ in range(count)])
    rows = alert_rows(alerts)
    for at in range(0, len(rows), 50_000):
        chunk = rows[at : at + 50_000]
        with engine.begin() as connection:
            connection.execute(
                sa.insert(Subscriber),
                [
                    {"id": r.alert.subscriber_id, "email": f"{r.alert.id}@x.test"}
                    | {"created_at": ALERTS_CREATED}
                    for r in chunk
                ],
            )
            connection.execute(sa.insert(Alert), [_alert_values(r, ALERTS_CREATED) for r in chunk])
    return alerts.alerts, len(alerts.queries)


def bench_settings(base_url: str, **members: Any) -> Settings:
    return Settings.model_validate(
        {
            "parliament": {"base_url": base_url},
            "hansard": {"enabled": True, "base_url": base_url},
            "members": {"base_url": base_url, **members},
        }
    )


async def name_speakers(engine: Engine, base_url: str, ids: list[int]) -> int:
    """A daemon that has polled before knows the day's speakers: the Member table is filled
    through MemberNames from the stand-in's Members API before the timed poll."""
    settings = bench_settings(base_url, lookups_per_poll=1000)
    async with make_http_client(settings.parliament) as client:
        names = MemberNames(engine, settings.members, client)
        return len(await names.names(ids, now=POLL_AT - timedelta(days=1)))


async def poll(engine: Engine, base_url: str) -> tuple[int, int, float, float]:
    """One poll of the Hansard source as the daemon builds it (alertd/pipeline.py _sources).
    Returns (listed, new, CPU s, wall s) of the poll alone, not the HTTP client's set-up."""
    settings = bench_settings(base_url)
    async with make_http_client(settings.parliament) as client:
        polled = KIND.poll_settings(settings)
        assert polled is not None
        source = WindowSource(
            engine,
            ParliamentApi(settings.parliament, client, KIND.api, KIND.api.base_url(settings)),
            KIND,
            settings,
            zone=settings.digest.zone,
            lookback_days=polled.lookback_days,
            lease=PollLease("bench", settings.delivery.lease_s, timedelta(0)),
            member_names=MemberNames(engine, settings.members, client),
        )
        cpu, wall = time.process_time(), time.perf_counter()
        result = await source.poll(POLL_AT)
        cpu, wall = time.process_time() - cpu, time.perf_counter() - wall
    return result.fetched, result.new_items, cpu, wall


@dataclass
class EngineMatch:
    analyse: float
    engine: float
    walk: float
    pairs: int
    alerts_hit: int
    queries_hit: int
    items_hit: int


def engine_match(engine: Engine, matcher: LiveMatcher) -> EngineMatch:
    """The unmatched items analysed and matched as hits.py does (`_match_fresh`), the walk
    over every matching alert included, without recording the hits; CPU seconds of each."""
    with Session(engine) as session:
        items = session.exec(
            select(Item).where(col(Item.matched_at).is_(None)).order_by(col(Item.id))
        ).all()
    cpu = time.process_time()
    documents = [analyse(kind_of(item).document(item)) for item in items]
    analysed = time.process_time()
    masks = matcher.match_masks(documents)
    matched = time.process_time()
    pairs = alerts_hit = 0
    hit_items: set[int] = set()
    for _, indexes in matcher.match(documents):
        pairs += len(indexes)
        alerts_hit += 1
        hit_items.update(indexes)
    walked = time.process_time()
    return EngineMatch(
        analyse=analysed - cpu,
        engine=matched - analysed,
        walk=walked - matched,
        pairs=pairs,
        alerts_hit=alerts_hit,
        queries_hit=len(masks),
        items_hit=len(hit_items),
    )


@dataclass
class Report:
    alerts: int
    distinct: int
    setup_seconds: float
    contributions: int
    houses: Counter[str]
    debates: int
    pages: int
    page_size: int
    speakers: int
    listed: int
    new: int
    poll: Phase
    poll_cpu: float
    poll_wall: float
    load: Phase
    full: EngineMatch
    full_phase: Phase
    sample_alerts: int
    match: Phase
    hits: int
    hit_rows: int
    items_hit: int
    alerts_hit: int
    db_empty: float
    db_alerts: float
    db_items: float
    db_hits: float
    peak_rss: float
    ru_maxrss: float
    standin_cpu: float
    seconds: float
    load_average: str
    commit: str
    top_queries: list[tuple[str, int]] = field(default_factory=list)


def hit_stats(engine: Engine) -> tuple[int, int, int, list[tuple[str, int]]]:
    with Session(engine) as session:
        rows = session.exec(select(func.count()).select_from(Hit)).one()
        items = session.exec(select(func.count(func.distinct(Hit.item_id)))).one()
        alerts = session.exec(select(func.count(func.distinct(Hit.alert_id)))).one()
        top = session.exec(
            select(Alert.canonical, func.count())
            .join(Hit, col(Hit.alert_id) == col(Alert.id))
            .group_by(col(Alert.canonical))
            .order_by(func.count().desc())
            .limit(8)
        ).all()
    return rows, items, alerts, [(canonical, count) for canonical, count in top]


def run(args: argparse.Namespace) -> Report:
    started = time.monotonic()
    memory = Memory()
    child = subprocess.Popen(
        [sys.executable, __file__, "--serve", "--commons", str(args.commons)]
        + ["--lords", str(args.lords), "--seed", str(args.seed)],
        stdin=subprocess.PIPE,
        stdout=subprocess.PIPE,
        text=True,
    )
    assert child.stdin is not None and child.stdout is not None
    served = json.loads(child.stdout.readline())
    base_url = served["base_url"]
    records = sitting_day(args.commons, args.lords, args.seed)  # the child's, for counting
    with tempfile.TemporaryDirectory() as folder:
        engine = open_database(DatabaseSettings(url=f"sqlite:///{folder}/alertd.db"))
        db_empty = db_mib(engine)
        setup = time.monotonic()
        alerts, distinct = write_alerts(engine, args.alerts)
        setup_seconds = time.monotonic() - setup
        print(f"{alerts:,} alerts written in {setup_seconds:.0f} s", flush=True)
        gc.collect()
        speaker_ids = sorted({r["MemberId"] for r in records})
        asyncio.run(name_speakers(engine, base_url, speaker_ids))
        db_alerts_members = db_mib(engine)

        # The daemon's start: the matcher read and built from the live alerts, once.
        matcher = LiveMatcher()

        def load() -> int:
            with Session(engine) as session:
                return matcher.refresh(session)

        _, load_phase = measured(memory, load)
        print(f"matcher loaded: {load_phase.cpu:.1f} s CPU", flush=True)

        (listed, new, poll_cpu, poll_wall), poll_phase = measured(
            memory, lambda: asyncio.run(poll(engine, base_url))
        )
        print(f"poll: {listed} listed, {new} new, {poll_cpu:.2f} s CPU", flush=True)
        db_items = db_mib(engine)

        # The matching at the full population: what match_new_items computes before it
        # records a hit (analyse, engine, the walk over every matching alert).
        full, full_phase = measured(memory, lambda: engine_match(engine, matcher))
        print(f"engine: {full.pairs:,} (alert, item) pairs, {full_phase.cpu:.2f} s CPU", flush=True)

        # match_new_items for real, hits recorded, with a matcher of a uniform sample of the
        # alerts (every n-th): at the full population the hits do not fit (see the section).
        sample = LiveMatcher()
        with Session(engine) as session:
            sample.load(r for r in live_rows(session) if r.alert.id % args.sample_every == 0)
            sample.version = alerts_version(session)
        hits, match_phase = measured(
            memory, lambda: match_new_items(engine, now=POLL_AT, matcher=sample)
        )
        print(f"match: {hits:,} hits, {match_phase.cpu:.2f} s CPU", flush=True)
        db_hits = db_mib(engine)
        hit_rows, items_hit, alerts_hit, top = hit_stats(engine)
        with Session(engine) as session:
            stored = session.exec(select(func.count()).select_from(Item)).one()
            named = session.exec(select(func.count()).select_from(Member)).one()
        assert stored == new and named >= len(speaker_ids) and hit_rows == hits
        engine.dispose()
    child.stdin.close()
    standin_cpu = json.loads(child.stdout.readline())["cpu"]
    child.wait()
    settings = bench_settings(base_url)
    pages = sum(
        -(-n // settings.parliament.page_size) or 1
        for n in Counter(r["House"] for r in records).values()
    )
    return Report(
        alerts=alerts,
        distinct=distinct,
        setup_seconds=setup_seconds,
        contributions=len(records),
        houses=Counter(r["House"] for r in records),
        debates=len({r["DebateSectionExtId"] for r in records}),
        pages=pages,
        page_size=settings.parliament.page_size,
        speakers=len(speaker_ids),
        listed=listed,
        new=new,
        poll=poll_phase,
        poll_cpu=poll_cpu,
        poll_wall=poll_wall,
        load=load_phase,
        full=full,
        full_phase=full_phase,
        sample_alerts=len(sample),
        match=match_phase,
        hits=hits,
        hit_rows=hit_rows,
        items_hit=items_hit,
        alerts_hit=alerts_hit,
        db_empty=db_empty,
        db_alerts=db_alerts_members,
        db_items=db_items,
        db_hits=db_hits,
        peak_rss=memory.run_peak(),
        ru_maxrss=resource.getrusage(resource.RUSAGE_SELF).ru_maxrss / 1024,
        standin_cpu=standin_cpu,
        seconds=time.monotonic() - started,
        load_average=" ".join(Path("/proc/loadavg").read_text().split()[:3]),
        commit=subprocess.run(
            ["git", "rev-parse", "--short", "HEAD"],
            cwd=ROOT,
            capture_output=True,
            text=True,
            check=False,
        ).stdout.strip(),
        top_queries=top,
    )


# --- the section ------------------------------------------------------------------------------


def _table(rows: list[tuple[str, str]]) -> list[str]:
    return ["| measure | value |", "|---|---|", *(f"| {a} | {b} |" for a, b in rows)]


def section(report: Report, command: str, load_before: str) -> str:
    r = report
    f = r.full
    per_item_kib = (r.db_items - r.db_alerts) * 1024 / max(r.new, 1)
    per_hit = r.match.cpu / max(r.hit_rows, 1)
    per_hit_kib = (r.match.peak - r.match.rss_before) * 1024 / max(r.hit_rows, 1)
    db_per_hit = (r.db_hits - r.db_items) * 2**20 / max(r.hit_rows, 1)
    sample_every = r.alerts // max(r.sample_alerts, 1)
    rows = [
        (
            f"**poll: list {r.listed:,} contributions ({r.pages} pages of {r.page_size}, both "
            "Houses) over HTTP, parse, name Members, store** (`WindowSource.poll`)",
            f"**{r.poll_wall:.2f} s wall**, {r.poll_cpu:.2f} s CPU",
        ),
        ("versions stored by the poll", f"{r.new:,}"),
        (
            "RSS across the poll (before → after; peak during it)",
            f"{r.poll.rss_before:,.0f} → {r.poll.rss_after:,.0f} MiB "
            f"(+{r.poll.rss_after - r.poll.rss_before:,.0f}); peak {r.poll.peak:,.0f} MiB "
            f"(+{r.poll.peak - r.poll.rss_before:,.0f})",
        ),
        (
            f"**DB growth for the {r.new:,} items** (SQLite, checkpointed, free pages excluded)",
            f"**{r.db_items - r.db_alerts:.1f} MiB** ({per_item_kib:.1f} KiB an item)",
        ),
        (
            f"daemon start, once: read {r.alerts:,} live alerts from SQLite and build the "
            f"LiveMatcher ({r.distinct:,} distinct queries)",
            f"{r.load.wall:.1f} s wall, {r.load.cpu:.1f} s CPU; RSS "
            f"+{r.load.rss_after - r.load.rss_before:,.0f} MiB",
        ),
        (
            f"**match at {r.alerts:,} alerts, without recording hits**: analyse the "
            f"{r.new:,} items / `match_masks` / `LiveMatcher.match` + the walk over every "
            "matching alert (as `_match_fresh` iterates; its own engine pass included)",
            f"**{f.analyse + f.engine:.2f} s CPU** to the matches ({f.analyse:.2f} + "
            f"{f.engine:.2f}); walk {f.walk:.2f} s; all {r.full_phase.wall:.2f} s wall",
        ),
        (
            f"(alert, item) pairs at {r.alerts:,} alerts = the hits `match_new_items` would "
            "record / alerts with a match / distinct queries / items",
            f"**{f.pairs:,}** / {f.alerts_hit:,} / {f.queries_hit:,} / {f.items_hit:,}",
        ),
        (
            f"**`match_new_items` for real, hits recorded, with every {sample_every}th alert "
            f"({r.sample_alerts:,} alerts)**",
            f"**{r.match.wall:.2f} s wall**, {r.match.cpu:.2f} s CPU; {r.hit_rows:,} hits "
            f"({per_hit * 1e6:.0f} µs CPU a hit)",
        ),
        (
            "RSS across it (before → after; peak during it)",
            f"{r.match.rss_before:,.0f} → {r.match.rss_after:,.0f} MiB; peak "
            f"{r.match.peak:,.0f} MiB (+{r.match.peak - r.match.rss_before:,.0f}: "
            f"{per_hit_kib:.1f} KiB a hit)",
        ),
        (
            "DB growth for those hits",
            f"{r.db_hits - r.db_items:.1f} MiB ({db_per_hit:.0f} B a hit)",
        ),
        (
            f"**`match_new_items` at {r.alerts:,} alerts, extrapolated** (pairs × the "
            "sample's cost a hit; not run: it does not fit this machine)",
            f"**≈ {f.pairs * per_hit / 60:,.0f} min CPU, ≈ {f.pairs * per_hit_kib / 2**20:,.0f}"
            f" GiB peak RSS, ≈ {f.pairs * db_per_hit / 2**30:,.1f} GiB of hit rows**",
        ),
        (
            f"**poll + the matching to pairs at {r.alerts:,} alerts** (matcher loaded; hits "
            "not recorded)",
            f"**{r.poll_cpu + f.analyse + f.engine:.2f} s CPU**",
        ),
        (
            "**peak RSS of the process** (VmHWM over the run; ru_maxrss)",
            f"**{r.peak_rss:,.0f} MiB** ({r.ru_maxrss:,.0f})",
        ),
        (
            f"DB: empty → {r.alerts:,} alerts and subscribers (+ {r.speakers} Members) → items "
            "→ hits",
            f"{r.db_empty:.1f} → {r.db_alerts:.1f} → {r.db_items:.1f} → {r.db_hits:.1f} MiB",
        ),
    ]
    top = ", ".join(f"`{q}` {n:,}" for q, n in r.top_queries)
    return "\n".join(
        [
            SECTION,
            "",
            f"Command: `{command}` at commit {r.commit} (the whole run took {r.seconds:.0f} s, "
            f"{r.setup_seconds:.0f} s of it writing the alert population); every number below "
            "is from that one run.",
            "",
            f"Machine: `nproc` {os.cpu_count()}, shared with other work; load average "
            f"{load_before} at the start, {r.load_average} at the end. Python "
            f"{sys.version.split()[0]}; SQLite file in a temp dir (WAL). CPU is "
            "`time.process_time` of the bench process (all its threads: the poll stores in "
            "worker threads); the stand-in serving the API runs in a child process, so its "
            f"{r.standin_cpu:.2f} s of CPU are not counted. Wall is `perf_counter`.",
            "",
            f"Data: one sitting day ({BENCH_DAY}), {r.contributions:,} spoken contributions "
            f"({r.houses['Commons']:,} Commons, {r.houses['Lords']:,} Lords) in {r.debates} "
            "debates of 15–30, varied from the 308 recorded ones (tests/fixtures/hansard): "
            "each debate takes a recorded debate's title and section, its contributions the "
            "texts of recorded ones, new GUIDs, one of 4–10 speakers of the House from the "
            f"Members named in the recorded written questions ({r.speakers} speakers in all), "
            "the bench day, increasing order; only values of the recorded fields change. "
            "Served by tests/standin_hansard.py, paged as the API pages (take = "
            f"parliament.page_size, {r.page_size}), one search per House. The poll is "
            "`WindowSource.poll` with `MemberNames` as alertd/pipeline.py builds it; the "
            "Member table already names the speakers (a daemon that has polled before), so "
            "the poll asks the Members API nothing. Alerts: the match bench's population "
            f"(`match_bench.AlertGenerator`, same seed: {r.alerts:,} alerts, {r.distinct:,} "
            "distinct queries, vocabulary from the recorded written questions, one "
            "subscriber each, confirmed before the day) written to the same SQLite file; "
            "the LiveMatcher is loaded from there once (the daemon's start), then "
            "`match_new_items` runs with it as the daemon runs it after a poll.",
            "",
            *_table(rows),
            "",
            f"Most hit queries: {top}.",
        ]
    )


def write_section(text: str, path: Path = RESULTS_MD) -> None:
    """Replace (or append) this section, leaving every other section as it is."""
    current = path.read_text()
    pattern = re.compile(rf"^{re.escape(SECTION)}\n.*?(?=^## |\Z)", re.MULTILINE | re.DOTALL)
    body = text.rstrip() + "\n"
    if pattern.search(current):
        updated = pattern.sub(lambda _: body + "\n", current, count=1).rstrip() + "\n"
    else:
        updated = current.rstrip() + "\n\n" + body
    path.write_text(updated)


def main() -> int:
    parser = argparse.ArgumentParser(description=__doc__)
    parser.add_argument("--alerts", type=int, default=1_000_000)
    parser.add_argument("--commons", type=int, default=1_100, help="Commons contributions")
    parser.add_argument("--lords", type=int, default=400, help="Lords contributions")
    parser.add_argument("--seed", type=int, default=20260715)
    parser.add_argument(
        "--sample-every", type=int, default=100, help="match_new_items with every n-th alert"
    )
    parser.add_argument("--no-write", action="store_true", help="do not update RESULTS.md")
    parser.add_argument("--serve", action="store_true", help=argparse.SUPPRESS)
    args = parser.parse_args()
    if args.serve:
        return serve(args.commons, args.lords, args.seed)
    load_before = " ".join(Path("/proc/loadavg").read_text().split()[:3])
    report = run(args)
    text = section(report, " ".join([COMMAND, *sys.argv[1:]]), load_before)
    print(text)
    if not args.no_write:
        write_section(text)
    return 0


if __name__ == "__main__":
    raise SystemExit(main())
