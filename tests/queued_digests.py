"""A digest queued in the outbox as composing queues one: an outbox row, its hit and ledger row."""

from __future__ import annotations

from datetime import datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, select

from alertd.db import transaction
from alertd.kinds.written_question import WrittenQuestion
from alertd.models import Alert, Hit, Item, Ledger, Outbox, OutboxState


def queue_digest(
    engine: Engine, alert: Alert, number: int, now: datetime, recipient: str = "reader@example.org"
) -> int:
    """A digest queued for the alert's owner, holding one hit of the alert (and its ledger
    row); its outbox id."""
    assert alert.id is not None
    message_id = f"<digest-{alert.id}-{number}@alertd.test>"
    message = (
        f"To: {recipient}\r\nSubject: 1 new answer\r\nMessage-ID: {message_id}\r\n\r\n"
        "School meals\r\n"
    ).encode()
    with transaction(engine) as session:
        item = Item(
            kind=WrittenQuestion.name,
            stage="answer",
            source="parliament",
            source_id=f"{alert.id}-{number}",
            version=1,
            version_key="1",
            title="School meals",
            url="https://questions.example/1",
            ingested_at=now,
            matched_at=now,
        )
        digest = Outbox(
            subscriber_id=alert.subscriber_id,
            recipient=recipient,
            message_id=message_id,
            message=message,
            created_at=now,
            next_attempt_at=now,
        )
        session.add_all([item, digest])
        session.flush()
        assert item.id is not None and digest.id is not None
        session.add(
            Hit(
                alert_id=alert.id,
                subscriber_id=alert.subscriber_id,
                item_id=item.id,
                created_at=now,
                outbox_id=digest.id,
            )
        )
        session.add(
            Ledger(
                subscriber_id=alert.subscriber_id,
                source=item.source,
                source_id=item.source_id,
                version=1,
                item_id=item.id,
                outbox_id=digest.id,
                created_at=now,
            )
        )
        return digest.id


def digest_state(engine: Engine, outbox_id: int) -> tuple[OutboxState, int]:
    """A queued message's state, and how many ledger rows still name it."""
    with Session(engine) as session:
        digest = session.get(Outbox, outbox_id)
        assert digest is not None
        ledger = session.exec(select(Ledger).where(Ledger.outbox_id == outbox_id)).all()
        return OutboxState(digest.status), len(ledger)


def pending_hits(engine: Engine, alert_id: int) -> int:
    """How many of the alert's hits wait for a digest (no outbox row)."""
    with Session(engine) as session:
        hits = session.exec(
            select(Hit.id).where(Hit.alert_id == alert_id, Hit.outbox_id == None)  # noqa: E711
        ).all()
        return len(hits)
