"""The subscription rules: what confirming lifts, which operations cancel queued digests, and
the words every interface uses for an alert."""

from __future__ import annotations

import re
from collections.abc import Callable
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from sqlalchemy.engine import Engine
from sqlmodel import Session

from alertd.errors import NotYours, UsageError
from alertd.matching import MemberFollow, followed_member
from alertd.models import (
    Alert,
    OutboxState,
    Subscriber,
)
from alertd.schedule import Frequency
from alertd.subscriptions import lifecycle
from alertd.subscriptions.vocabulary import AlertState, NotifyOn, alert_state

from queued_digests import digest_state, pending_hits, queue_digest

NOW = datetime(2026, 5, 4, 9, 0, tzinfo=UTC)
MAX_BOUNCES = 3


def _subscribe(engine: Engine, email: str, query: str = "school meals", **kwargs: Any) -> Alert:
    kwargs.setdefault("confirmed", True)
    return lifecycle.subscribe(engine, email, query, "daily", now=NOW, **kwargs)


def _queue_digest(engine: Engine, alert: Alert, number: int) -> int:
    return queue_digest(engine, alert, number, NOW)


def _state(engine: Engine, outbox_id: int) -> tuple[OutboxState, int]:
    return digest_state(engine, outbox_id)


def _subscriber(engine: Engine, subscriber_id: int) -> Subscriber:
    with Session(engine) as session:
        subscriber = session.get(Subscriber, subscriber_id)
        assert subscriber is not None
        return subscriber


def _stop_one(engine: Engine, alert: Alert) -> None:
    assert alert.id is not None
    lifecycle.stop_alert(engine, alert.id, NOW, subscriber_id=alert.subscriber_id)


def _stop_all(engine: Engine, alert: Alert) -> None:
    assert lifecycle.stop_all(engine, alert.subscriber_id, NOW) == 1


def _complaint(engine: Engine, alert: Alert) -> None:
    assert lifecycle.suspend(engine, alert.subscriber_id, NOW)


def _pause(engine: Engine, alert: Alert) -> None:
    assert alert.id is not None
    lifecycle.change_alert(engine, alert.id, NOW, subscriber_id=alert.subscriber_id, paused=True)


def _bounces(engine: Engine, alert: Alert) -> None:
    counts = [
        lifecycle.record_bounce(engine, alert.subscriber_id, MAX_BOUNCES, NOW)
        for _ in range(MAX_BOUNCES)
    ]
    assert counts == [1, 2, 3]


@pytest.mark.parametrize("kill", [_stop_one, _stop_all, _pause, _complaint, _bounces])
def test_every_operation_that_leaves_a_digest_unwanted_cancels_it(
    db_engine: Engine, kill: Callable[[Engine, Alert], None]
) -> None:
    alert = _subscribe(db_engine, "reader@example.org")
    digest = _queue_digest(db_engine, alert, 1)
    other = _subscribe(db_engine, "other@example.org")
    untouched = _queue_digest(db_engine, other, 2)
    kill(db_engine, alert)
    assert _state(db_engine, digest) == (OutboxState.CANCELLED, 0)  # never sent: no ledger
    assert _state(db_engine, untouched) == (OutboxState.PENDING, 1)


def test_a_digest_of_a_live_alert_stays_queued(db_engine: Engine) -> None:
    alert = _subscribe(db_engine, "reader@example.org")
    second = _subscribe(db_engine, "reader@example.org", "free school meals")
    assert alert.id is not None and second.id is not None
    digest = _queue_digest(db_engine, alert, 1)
    lifecycle.stop_alert(db_engine, second.id, NOW)  # the reader's other alert
    counts = [
        lifecycle.record_bounce(db_engine, alert.subscriber_id, MAX_BOUNCES, NOW) for _ in range(2)
    ]
    assert counts == [1, 2] and _subscriber(db_engine, alert.subscriber_id).suspended_at is None
    assert _state(db_engine, digest) == (OutboxState.PENDING, 1)


def test_pausing_cancels_the_queued_digest_and_its_answers_wait_for_the_resume(
    db_engine: Engine,
) -> None:
    # The manage page says a paused alert "sends nothing until you resume it".
    alert = _subscribe(db_engine, "reader@example.org")
    assert alert.id is not None
    digest = _queue_digest(db_engine, alert, 1)
    _pause(db_engine, alert)
    assert _state(db_engine, digest) == (OutboxState.CANCELLED, 0)
    # Not lost: its answer waits for the alert's first digest after it is resumed.
    assert pending_hits(db_engine, alert.id) == 1
    # A stopped alert's answers are not kept waiting: they would never go.
    stopped = _subscribe(db_engine, "other@example.org")
    assert stopped.id is not None
    _queue_digest(db_engine, stopped, 2)
    _stop_one(db_engine, stopped)
    assert pending_hits(db_engine, stopped.id) == 0


def test_confirming_lifts_a_suspension_in_every_flow(db_engine: Engine) -> None:
    pending = _subscribe(db_engine, "reader@example.org", confirmed=False)
    assert pending.id is not None
    _bounces(db_engine, pending)
    assert _subscriber(db_engine, pending.subscriber_id).suspended_at is not None
    # A followed confirmation link (the web).
    assert lifecycle.confirm(db_engine, pending.id, NOW + timedelta(hours=1))
    lifted = _subscriber(db_engine, pending.subscriber_id)
    assert (lifted.suspended_at, lifted.consecutive_bounces) == (None, 0)
    assert not lifecycle.confirm(db_engine, pending.id, NOW)  # a link works once
    # An alert saved confirmed (`alertd subscribe --confirmed`).
    assert lifecycle.suspend(db_engine, pending.subscriber_id, NOW)
    assert not lifecycle.suspend(db_engine, pending.subscriber_id, NOW)
    added = _subscribe(db_engine, "Reader@Example.org", "pupil premium")
    assert added.subscriber_id == pending.subscriber_id and added.confirmed_at == NOW
    assert _subscriber(db_engine, pending.subscriber_id).suspended_at is None


def test_a_stopped_alert_is_never_confirmed(db_engine: Engine) -> None:
    pending = _subscribe(db_engine, "reader@example.org", confirmed=False)
    assert pending.id is not None
    lifecycle.stop_alert(db_engine, pending.id, NOW)
    assert not lifecycle.confirm(db_engine, pending.id, NOW)
    with pytest.raises(NotYours, match=f"no active alert with id {pending.id}"):
        lifecycle.stop_alert(db_engine, pending.id, NOW)


def test_an_alert_is_changed_or_stopped_only_by_its_owner(db_engine: Engine) -> None:
    alert = _subscribe(db_engine, "reader@example.org")
    other = _subscribe(db_engine, "other@example.org")
    assert alert.id is not None
    for change in (
        lambda: lifecycle.stop_alert(
            db_engine, alert.id or 0, NOW, subscriber_id=other.subscriber_id
        ),
        lambda: lifecycle.change_alert(
            db_engine, alert.id or 0, NOW, subscriber_id=other.subscriber_id, paused=True
        ),
    ):
        with pytest.raises(NotYours):
            change()
    changed = lifecycle.change_alert(
        db_engine, alert.id, NOW, subscriber_id=alert.subscriber_id, frequency=Frequency.WEEKLY
    )
    assert (changed.frequency, changed.paused_at, changed.unsubscribed_at) == ("weekly", None, None)


@pytest.mark.parametrize(
    ("query", "hears"),
    [
        ("member:4138", NotifyOn.TABLED_AND_ANSWERED),
        ("asker:4138", NotifyOn.TABLED_AND_ANSWERED),
        ("answerer:4138", NotifyOn.ANSWERED),
        ("member:4138 schools", NotifyOn.ANSWERED),
        ("schools", NotifyOn.ANSWERED),
    ],
)
def test_a_plain_follow_of_an_asking_member_hears_of_tabled_questions_too(
    db_engine: Engine, query: str, hears: NotifyOn
) -> None:
    alert = _subscribe(db_engine, "reader@example.org", query)
    assert alert.notify_on == hears
    chosen = next(other for other in NotifyOn if other != hears)
    assert _subscribe(db_engine, "two@example.org", query, notify_on=chosen).notify_on == chosen


# The expression the digests and the sign-up default used before the parsed query answered.
_MEMBER_ONLY = re.compile(r"(member|asker|answerer):(\d+)")


@pytest.mark.parametrize(
    "canonical",
    [
        "member:4138",
        "asker:12",
        "answerer:999999",
        "department:17",
        "member:4138 school",
        "-member:1 school",
        "member:1 OR member:2",
        "house:commons",
        "school",
        '"member:1"',
        "not a ( query",
    ],
)
def test_which_member_a_query_follows_as_the_expression_said(canonical: str) -> None:
    found = _MEMBER_ONLY.fullmatch(canonical)
    expected = None if found is None else MemberFollow(found[1], int(found[2]))  # type: ignore[arg-type]
    assert followed_member(canonical) == expected


def test_what_an_alert_hears_of_is_parsed_in_one_place() -> None:
    assert NotifyOn.parse(" Answered , TABLED") is NotifyOn.TABLED_AND_ANSWERED
    assert NotifyOn.parse(["answered"]) is NotifyOn.ANSWERED
    assert NotifyOn.TABLED_AND_ANSWERED.stages == ("tabled", "answered")
    assert NotifyOn.ANSWERED.hears("answered") and not NotifyOn.ANSWERED.hears("tabled")
    for refused in ("tabled", "", "soon", ["answered", "soon"]):
        with pytest.raises(UsageError, match="use answered, or tabled,answered"):
            NotifyOn.parse(refused)


def test_an_alert_state_is_its_owner_suspension_first() -> None:
    assert alert_state(confirmed=False, paused=True, suspended=True) is AlertState.SUSPENDED
    assert alert_state(confirmed=False, paused=True, suspended=False) is AlertState.PENDING
    assert alert_state(confirmed=True, paused=True, suspended=False) is AlertState.PAUSED
    assert alert_state(confirmed=True, paused=False, suspended=False) is AlertState.ACTIVE
    assert [state.listed for state in AlertState] == ["pending", "confirmed", "paused", "suspended"]
