"""The digest schedule: periods start at digest.daily_at local time, weekly ones on weekly_day."""

from __future__ import annotations

from datetime import UTC, datetime, time, timedelta

import pytest

from alertd.config import DigestSettings
from alertd.errors import UsageError
from alertd.schedule import Frequency, next_period_start, parse_frequency, period_start

LONDON = DigestSettings(daily_at=time(7, 0), weekly_day="monday", timezone="Europe/London")


def test_the_next_digest_is_the_next_scheduled_time_across_a_clock_change() -> None:
    # Saturday 28 March 2026, noon; the clocks go forward at 01:00 UTC on Sunday 29 March.
    now = datetime(2026, 3, 28, 12, 0, tzinfo=UTC)
    daily = next_period_start(Frequency.DAILY, now, LONDON)
    weekly = next_period_start(Frequency.WEEKLY, now, LONDON)
    assert daily is not None and weekly is not None
    assert daily.astimezone(UTC) == datetime(2026, 3, 29, 6, 0, tzinfo=UTC)  # 07:00 BST
    assert weekly.astimezone(UTC) == datetime(2026, 3, 30, 6, 0, tzinfo=UTC)  # Monday
    assert next_period_start(Frequency.IMMEDIATE, now, LONDON) is None
    assert period_start(Frequency.IMMEDIATE, now, LONDON) is None


@pytest.mark.parametrize("frequency", [Frequency.DAILY, Frequency.WEEKLY])
def test_every_moment_falls_between_a_period_start_and_the_next(frequency: Frequency) -> None:
    moment = datetime(2026, 3, 23, 0, 0, tzinfo=UTC)
    while moment < datetime(2026, 4, 6, tzinfo=UTC):
        start = period_start(frequency, moment, LONDON)
        due = next_period_start(frequency, moment, LONDON)
        assert start is not None and due is not None
        assert start <= moment < due, moment
        assert period_start(frequency, due, LONDON) == due
        assert (due.hour, due.minute) == (7, 0)
        if frequency == Frequency.WEEKLY:
            assert due.weekday() == 0
        moment += timedelta(minutes=30)


def test_a_digest_due_now_is_this_period_not_the_next() -> None:
    now = datetime(2026, 1, 5, 7, 0, tzinfo=UTC)  # 07:00 GMT, a Monday
    assert period_start(Frequency.WEEKLY, now, LONDON) == now
    assert next_period_start(Frequency.DAILY, now, LONDON) == now + timedelta(days=1)


def test_parse_frequency_names_the_choices() -> None:
    assert parse_frequency("weekly") is Frequency.WEEKLY
    with pytest.raises(UsageError, match="use one of immediate, daily, weekly"):
        parse_frequency("hourly")
