"""Status: one screen (or JSON) on sources, subscribers, alerts and the outbox, with a verdict."""

from __future__ import annotations

from dataclasses import asdict, dataclass, field
from datetime import UTC, datetime, timedelta
from typing import Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlalchemy.orm import aliased
from sqlmodel import Session, col, func, select

from alertd.config import Settings
from alertd.kinds import api_kinds
from alertd.kinds.feed_item import feed_source
from alertd.models import (
    UNSENT,
    Alert,
    ComposeFailure,
    DigestRun,
    Feed,
    FeedState,
    Hit,
    Item,
    Outbox,
    OutboxState,
    SourceState,
    Subscriber,
)
from alertd.redact import redact
from alertd.schedule import Frequency, next_period_start

ATTENTION_AFTER = timedelta(hours=1)


@dataclass(frozen=True)
class SourceStatus:
    name: str
    last_poll_at: datetime | None
    last_ok_at: datetime | None
    last_new_count: int
    last_error: str | None
    high_water: str | None


@dataclass(frozen=True)
class SkippedDigest:
    """A subscriber whose digest could not be built or rendered, with hits still waiting."""

    subscriber_id: int
    email: str
    error: str
    first_failed_at: datetime
    last_failed_at: datetime
    attempts: int


@dataclass
class Status:
    now: datetime
    sources: list[SourceStatus]
    items_stored: int
    subscribers: dict[str, int]
    alerts_by_frequency: dict[str, int]
    outbox: dict[str, int]
    oldest_pending_age_s: float | None
    last_digest_run: datetime | None
    next_runs: dict[str, datetime]
    skipped_digests: list[SkippedDigest] = field(default_factory=list)
    problems: list[str] = field(default_factory=list)

    def as_json(self) -> dict[str, Any]:
        def plain(value: Any) -> Any:
            if isinstance(value, datetime):
                return value.isoformat()
            if isinstance(value, dict):
                return {k: plain(v) for k, v in value.items()}
            if isinstance(value, list):
                return [plain(v) for v in value]
            return value

        data: dict[str, Any] = plain(asdict(self))
        data["healthy"] = not self.problems
        return data


def _count_by(session: Session, column: Any, *where: Any) -> dict[str, int]:
    rows = session.exec(select(column, func.count()).where(*where).group_by(column)).all()
    return {str(key): int(count) for key, count in rows}


def _subscriber_counts(session: Session) -> dict[str, int]:
    def has_alert(*where: Any) -> Any:
        return (
            select(Alert.id)
            .where(Alert.subscriber_id == Subscriber.id, col(Alert.unsubscribed_at).is_(None))
            .where(*where)
            .exists()
        )

    def count(*where: Any) -> int:
        return int(session.exec(select(func.count()).select_from(Subscriber).where(*where)).one())

    suspended = col(Subscriber.suspended_at).is_not(None)
    confirmed = has_alert(col(Alert.confirmed).is_(True))
    # Pending: waiting for a confirmation link to be followed; unsubscribed: every alert
    # stopped (kept on record for what was sent), so nothing is waiting for them.
    return {
        "confirmed": count(confirmed, ~suspended),
        "pending": count(~confirmed, has_alert(), ~suspended),
        "unsubscribed": count(~has_alert(), ~suspended),
        "suspended": count(suspended),
    }


def collect_status(engine: Engine, settings: Settings, *, now: datetime) -> Status:
    """Read everything an operator looks at first, and judge what needs attention."""
    with Session(engine) as session:
        # A removed or disabled feed, or a kind of Parliament's business switched off, is
        # not polled any more: its last error must not keep asking for attention.
        active = select(Feed.name).where(col(Feed.state) == FeedState.ACTIVE)
        live = {feed_source(name) for name in session.exec(active)}
        live.update(kind.source for kind in api_kinds() if kind.poll_settings(settings))
        sources = [
            SourceStatus(
                s.name,
                s.last_poll_at,
                s.last_ok_at,
                s.last_new_count,
                redact(s.last_error) if s.last_error else None,
                s.high_water.isoformat() if s.high_water else None,
            )
            for s in session.exec(select(SourceState).order_by(col(SourceState.name))).all()
            if s.name in live
        ]
        # Every source polled is listed, including one not polled yet.
        polled = {s.name for s in sources}
        sources += [SourceStatus(n, None, None, 0, None, None) for n in live - polled]
        sources.sort(key=lambda s: s.name)
        oldest = session.exec(
            select(func.min(Outbox.created_at)).where(col(Outbox.status).in_(UNSENT))
        ).one()
        last_run = _last_digest_run(session)
        status = Status(
            now=now,
            sources=sources,
            items_stored=int(session.exec(select(func.count()).select_from(Item)).one()),
            subscribers=_subscriber_counts(session),
            alerts_by_frequency=_count_by(
                session, Alert.frequency, col(Alert.unsubscribed_at).is_(None)
            ),
            outbox=_count_by(session, Outbox.status, sa.true()),
            oldest_pending_age_s=(now - _aware(oldest)).total_seconds() if oldest else None,
            last_digest_run=_aware(last_run) if last_run else None,
            next_runs=_next_runs(settings, sources, now),
            skipped_digests=_skipped_digests(session),
        )
    status.problems = _problems(status, settings)
    return status


def _last_digest_run(session: Session) -> Any:
    """When a daily or weekly period's digests were last composed, if ever."""
    # A frequency's first period is the mark a new database starts from (the period under
    # way when alertd first ran, its digests not composed): only the periods after it ran.
    first = aliased(DigestRun)
    first_start = (
        select(func.min(first.period_start))
        .where(first.frequency == DigestRun.frequency)
        .scalar_subquery()
    )
    return session.exec(
        select(func.max(DigestRun.completed_at)).where(DigestRun.period_start > first_start)
    ).one()


def _skipped_digests(session: Session) -> list[SkippedDigest]:
    # Only those still waiting: a subscriber who since unsubscribed has nothing to send.
    waiting = (
        select(Hit.id)
        .join(Alert, col(Alert.id) == col(Hit.alert_id))
        .where(
            Hit.subscriber_id == ComposeFailure.subscriber_id,
            col(Hit.outbox_id).is_(None),
            col(Alert.unsubscribed_at).is_(None),
        )
        .exists()
    )
    rows = session.exec(
        select(ComposeFailure, Subscriber.email)
        .join(Subscriber, col(Subscriber.id) == col(ComposeFailure.subscriber_id))
        .where(waiting)
        .order_by(col(ComposeFailure.subscriber_id))
    ).all()
    return [
        SkippedDigest(
            failure.subscriber_id,
            email,
            failure.error,
            failure.first_failed_at,
            failure.last_failed_at,
            failure.attempts,
        )
        for failure, email in rows
    ]


def _aware(value: Any) -> datetime:
    # Aggregates bypass the column type, so SQLite hands back naive UTC (or even text).
    moment = datetime.fromisoformat(value) if isinstance(value, str) else value
    assert isinstance(moment, datetime)
    return moment if moment.tzinfo else moment.replace(tzinfo=UTC)


def _next_runs(
    settings: Settings, sources: list[SourceStatus], now: datetime
) -> dict[str, datetime]:
    runs: dict[str, datetime] = {}
    last_polls = {s.name: s.last_poll_at for s in sources if s.last_poll_at}
    # The next poll of Parliament's business: the soonest any of its kinds is due.
    due = [
        last_polls[kind.source] + timedelta(minutes=polled.interval_minutes)
        for kind in api_kinds()
        if (polled := kind.poll_settings(settings)) and kind.source in last_polls
    ]
    runs["poll"] = max(min(due), now) if due else now
    for frequency in (Frequency.DAILY, Frequency.WEEKLY):
        next_due = next_period_start(frequency, now, settings.digest)
        assert next_due is not None
        runs[frequency] = next_due.astimezone(UTC)
    return runs


def _problems(status: Status, settings: Settings) -> list[str]:
    problems = []
    for source in status.sources:
        if source.last_error and source.last_ok_at is None:
            # Never polled successfully: there is no grace period to wait out.
            problems.append(
                f"source {source.name} has never polled successfully: {source.last_error}"
            )
            continue
        failing_since = source.last_ok_at or source.last_poll_at
        if source.last_error and failing_since and status.now - failing_since > ATTENTION_AFTER:
            problems.append(
                f"source {source.name} failing since {failing_since:%Y-%m-%d %H:%M}Z: "
                f"{source.last_error}"
            )
    for skipped in status.skipped_digests:
        problems.append(
            f"the digest of subscriber {skipped.subscriber_id} ({skipped.email}) cannot be "
            f"composed, skipped {skipped.attempts} times since "
            f"{skipped.first_failed_at:%Y-%m-%d %H:%M}Z (its hits wait): {skipped.error}"
        )
    dead = status.outbox.get(OutboxState.DEAD, 0)
    if dead:
        problems.append(f"{dead} digests are dead letters (see alertd list / the outbox)")
    age = status.oldest_pending_age_s
    if age is not None and age > ATTENTION_AFTER.total_seconds():
        problems.append(f"the oldest unsent digest has waited {age / 3600:.1f} h")
    return problems


def format_status(status: Status) -> str:
    """The one-screen text form."""
    lines = [f"alertd status at {status.now:%Y-%m-%d %H:%M:%S}Z"]
    for s in status.sources:
        polled = f"{s.last_poll_at:%Y-%m-%d %H:%M}Z" if s.last_poll_at else "never"
        if s.last_error:
            good = f"{s.last_ok_at:%Y-%m-%d %H:%M}Z" if s.last_ok_at else "never"
            outcome = f"error: {s.last_error} (last good poll {good})"
        else:
            outcome = f"{s.last_new_count} new" if s.last_poll_at else "not polled yet"
        lines.append(f"  source {s.name}: last poll {polled}, {outcome}")
    if not status.sources:
        lines.append("  no source polled yet")
    subs = status.subscribers
    lines.append(f"  items stored: {status.items_stored}")
    lines.append(
        f"  subscribers: {subs['confirmed']} confirmed, {subs['pending']} pending, "
        f"{subs['unsubscribed']} unsubscribed, {subs['suspended']} suspended"
    )
    alerts = ", ".join(f"{k} {v}" for k, v in sorted(status.alerts_by_frequency.items()))
    lines.append(f"  alerts: {alerts or 'none'}")
    outbox = ", ".join(f"{k} {v}" for k, v in sorted(status.outbox.items()))
    lines.append(f"  outbox: {outbox or 'empty'}")
    if status.oldest_pending_age_s is not None:
        lines.append(f"  oldest unsent digest: {status.oldest_pending_age_s / 60:.0f} min")
    last = f"{status.last_digest_run:%Y-%m-%d %H:%M}Z" if status.last_digest_run else "none yet"
    lines.append(f"  last daily/weekly digest run: {last}")
    for name, moment in status.next_runs.items():
        lines.append(f"  next {name}: {moment:%Y-%m-%d %H:%M}Z")
    lines.extend(f"  ATTENTION: {problem}" for problem in status.problems)
    lines.append("  healthy" if not status.problems else "  needs attention")
    return "\n".join(lines)
