"""Tests that reach into internals on purpose: statement counts, private functions patched.

They pin how the code works, not only what it does (few SQL statements per chunk of
subscribers; a race or a bug injected by replacing a private step), so a refactor may have to
rewrite them although behaviour is unchanged. Everything else in tests/ drives the public
surface.
"""

from __future__ import annotations

import asyncio
import dataclasses
import logging
from collections import Counter
from collections.abc import Callable, Iterator, Sequence
from typing import Any, Self

import pytest
import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alertd.config import DatabaseSettings, Settings
from alertd.db import open_database, transaction
from alertd.digests import compose as digests
from alertd.digests.compose import compose_due_digests
from alertd.digests.render import build_environment, startup_sample
from alertd.digests.render_pool import RenderJob, RenderPool, render_here
from alertd.kinds.kind import CardContext
from alertd.kinds.written_question import WrittenQuestion
from alertd.mail import outbox
from alertd.mail.outbox import Claimed, wall_clock
from alertd.mail.sender import drain_outbox
from alertd.models import Hit, Item, Ledger, Outbox, OutboxState

from smtp_server import SmtpSink
from test_digests import (
    NOW,
    ZAHAWI,
    _compose,
    _outboxes,
    _render_batch,
    _sent_before,
    _subscribers,
    _text,
)
from test_outbox import NOW as OUTBOX_NOW
from test_outbox import _drain, _options, _queue, _statuses

# The fixtures of test_digests.py and test_outbox.py that these tests use.


@pytest.fixture
def settings(make_settings: Callable[..., Settings]) -> Settings:
    return make_settings()


@pytest.fixture
def render_pool(settings: Settings) -> Iterator[RenderPool]:
    pool = RenderPool(settings, 2)
    yield pool
    pool.close()


@pytest.fixture
def engine(database_url: str) -> Iterator[Engine]:
    engine = open_database(DatabaseSettings(url=database_url))
    yield engine
    engine.dispose()


# ---------------------------------------------------------------------------------------------
# Composing digests (alertd/digests/compose.py)


@pytest.fixture
def statements(db_engine: Engine) -> Iterator[list[str]]:
    """The SQL statements run on the engine (an executemany counts once)."""
    seen: list[str] = []

    def record(*args: Any) -> None:
        seen.append(args[2])

    sa.event.listen(db_engine, "before_cursor_execute", record)
    yield seen
    sa.event.remove(db_engine, "before_cursor_execute", record)


@pytest.mark.slow
def test_chunks_queue_every_subscriber_once_with_few_queries_and_shared_items(
    db_engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    statements: list[str],
) -> None:
    monkeypatch.setattr(digests, "CHUNK_SIZE", 200)
    chunks: list[int] = []
    compose_locked = digests._compose_locked

    def spy_chunks(session: Session, run: Any, subscriber_ids: list[int]) -> int:
        chunks.append(len(subscriber_ids))
        return compose_locked(session, run, subscriber_ids)

    monkeypatch.setattr(digests, "_compose_locked", spy_chunks)
    built = Counter[int]()
    make_card = WrittenQuestion.card

    def spy_cards(kind: WrittenQuestion, question: Item, context: CardContext) -> Any:
        built[int(question.source_id)] += 1
        return make_card(kind, question, context)

    monkeypatch.setattr(WrittenQuestion, "card", spy_cards)
    readers = _subscribers(db_engine, 450, {"schools": [1, 2], f"member:{ZAHAWI}": [3]})
    earlier = _sent_before(db_engine, readers[7], 2)
    statements.clear()

    assert _compose(db_engine, settings) == 450

    assert chunks == [200, 200, 50]
    # Statements per chunk, not per subscriber (one per subscriber would be thousands).
    assert len(statements) < 12 * len(chunks) + 10, statements
    # Every subscriber shares the queries and answers: each item is excerpted once.
    assert built == {1: 1, 2: 1, 3: 1}
    sent = _outboxes(db_engine)
    assert sorted(len(boxes) for boxes in sent.values()) == [1] * 449 + [2]
    queued = [boxes[-1] for boxes in sent.values()]
    assert all(box.status == OutboxState.PENDING and box.attempts == 0 for box in queued)
    assert "Nadhim Zahawi" in _text(sent["reader0@example.org"][0])
    seventh = _text(sent[readers[7].email][1])
    assert "Heading 1" in seventh and "Heading 2" not in seventh
    with Session(db_engine) as session:
        hits = session.exec(select(Hit)).all()
        assert all(hit.outbox_id is not None for hit in hits)
        of_seventh = {h.item_id: h.outbox_id for h in hits if h.subscriber_id == readers[7].id}
        assert list(of_seventh.values()).count(earlier) == 1
        assert len(session.exec(select(Ledger)).all()) == 450 * 3
    assert _compose(db_engine, settings) == 0


def _hide_ledger(monkeypatch: pytest.MonkeyPatch, *, times: int) -> None:
    """The chunk does not see the ledger ``times`` times: a racing worker's row, written
    after the chunk looked, so that only its claim runs into it."""
    ledger_for = digests._ledger_for
    hidden = [times]

    def late(session: Session, subscriber_ids: Sequence[int]) -> dict[tuple[int, int], int]:
        found = ledger_for(session, subscriber_ids)
        if hidden[0] > 0:
            hidden[0] -= 1
            return {}
        return found

    monkeypatch.setattr(digests, "_ledger_for", late)


def test_a_ledger_conflict_redoes_the_chunk_one_by_one(
    db_engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    readers = _subscribers(db_engine, 5, {"schools": [1]})
    earlier = _sent_before(db_engine, readers[2], 1)
    _hide_ledger(monkeypatch, times=1)

    with caplog.at_level(logging.INFO, logger="alertd.digests.compose"):
        assert _compose(db_engine, settings) == 4

    assert any("one by one" in record.getMessage() for record in caplog.records)
    sent = _outboxes(db_engine)
    assert sorted(len(boxes) for boxes in sent.values()) == [1] * 5
    assert sent[readers[2].email][0].id == earlier  # nothing new for the one already sent it
    with Session(db_engine) as session:
        hit = session.exec(select(Hit).where(Hit.subscriber_id == readers[2].id)).one()
        assert hit.outbox_id == earlier
        assert len(session.exec(select(Ledger)).all()) == 5


def test_a_conflict_that_persists_skips_only_that_subscriber(
    db_engine: Engine,
    settings: Settings,
    monkeypatch: pytest.MonkeyPatch,
    caplog: pytest.LogCaptureFixture,
) -> None:
    readers = _subscribers(db_engine, 5, {"schools": [1]})
    _sent_before(db_engine, readers[2], 1)
    _hide_ledger(monkeypatch, times=1_000)

    with caplog.at_level(logging.WARNING, logger="alertd.digests.compose"):
        assert _compose(db_engine, settings) == 4

    skipped = [r.getMessage() for r in caplog.records if "skipped" in r.getMessage()]
    assert len(skipped) == 1 and f"subscriber {readers[2].id} " in skipped[0]
    with Session(db_engine) as session:
        hit = session.exec(select(Hit).where(Hit.subscriber_id == readers[2].id)).one()
        assert hit.outbox_id is None
        assert len(session.exec(select(Outbox)).all()) == 5
    monkeypatch.undo()
    assert _compose(db_engine, settings) == 0  # the next run settles it without mailing


@pytest.mark.slow
def test_dead_render_workers_are_replaced_and_nothing_is_lost(
    db_engine: Engine,
    settings: Settings,
    render_pool: RenderPool,
    caplog: pytest.LogCaptureFixture,
) -> None:
    _subscribers(db_engine, 5, {"schools": [1]})
    env = build_environment(settings)
    jobs = [RenderJob(startup_sample(settings), f"<m{n}@x>", NOW) for n in range(3)]
    assert len(_render_batch(render_pool, settings, jobs)) == 3  # the workers are up
    workers = list(render_pool._executor._processes.values())
    assert workers
    for process in workers:
        process.kill()
        process.join()
    assert compose_due_digests(db_engine, settings, env, now=NOW, pool=render_pool) == 5
    assert len(_outboxes(db_engine)) == 5
    assert "render workers died" in caplog.text
    # The replacement workers render the next batch.
    assert _render_batch(render_pool, settings, jobs) == render_here(jobs, settings, env)


# ---------------------------------------------------------------------------------------------
# Sending the outbox (alertd/mail/outbox.py)


async def test_a_row_whose_lease_was_taken_over_is_not_sent(
    engine: Engine, smtp_sink: SmtpSink, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Half the lease has passed before the send, and meanwhile another worker took the row:
    # the renewal fails and the row is left to it.
    _queue(engine, "a@example.org", "b@example.org")
    real_claim = outbox.claim_due

    def stale_claim(*args: Any, **kwargs: Any) -> list[Claimed]:
        rows = real_claim(*args, **kwargs)
        with transaction(engine) as session:
            taken = session.exec(select(Outbox).where(Outbox.recipient == "a@example.org")).one()
            taken.lease_owner = "other-worker"
            session.add(taken)
        return [dataclasses.replace(row, lease_until=wall_clock()) for row in rows]

    monkeypatch.setattr(outbox, "claim_due", stale_claim)
    report = await _drain(engine, smtp_sink)
    assert report.sent == 1 and [m.rcpt_tos for m in smtp_sink.messages] == [["b@example.org"]]
    assert _statuses(engine) == {
        "a@example.org": OutboxState.SENDING,
        "b@example.org": OutboxState.SENT,
    }


class _SlowMailer:
    """Records when it sends and closes; each send takes a little while."""

    def __init__(self, events: list[str]) -> None:
        self.events = events

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(self, *exc_info: object) -> None:
        self.events.append("close")

    async def send(self, sender: str, recipient: str, message: bytes) -> None:
        self.events.append("send")
        await asyncio.sleep(0.05 if recipient == "slow@example.org" else 0.01)
        self.events.append(OutboxState.SENT)


async def test_a_failing_worker_stops_the_others_before_mailers_close(
    engine: Engine, monkeypatch: pytest.MonkeyPatch
) -> None:
    _queue(engine, "fast@example.org", "slow@example.org", "c@example.org", "d@example.org")
    record_sent = outbox.record_sent

    def failing_once(engine: Engine, outbox_id: int, *args: Any) -> None:
        monkeypatch.setattr(outbox, "record_sent", record_sent)
        raise RuntimeError("bug")

    monkeypatch.setattr(outbox, "record_sent", failing_once)
    events: list[str] = []
    with pytest.raises(RuntimeError, match="bug"):
        await drain_outbox(
            engine, lambda: _SlowMailer(events), _options(connections=2), now=OUTBOX_NOW
        )
    # The slow send in flight finished; nothing was sent after; then both mailers closed.
    assert events == ["send", "send", OutboxState.SENT, OutboxState.SENT, "close", "close"]
    # As after a crash: the rows not recorded wait for their lease to run out.
    assert _statuses(engine) == {
        "fast@example.org": OutboxState.SENDING,
        "slow@example.org": OutboxState.SENT,
        "c@example.org": OutboxState.SENDING,
        "d@example.org": OutboxState.SENDING,
    }
