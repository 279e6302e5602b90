"""The digest schedule: an alert's frequencies and when a period starts (standard library only)."""

from __future__ import annotations

from datetime import datetime, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING

from alertd.errors import UsageError

if TYPE_CHECKING:
    from alertd.config import DigestSettings


class Frequency(StrEnum):
    """How often an alert is mailed (Alert.frequency holds the value)."""

    # A digest of its own within minutes of a match.
    IMMEDIATE = "immediate"
    # In the digest of each day at digest.daily_at.
    DAILY = "daily"
    # In the digest of each digest.weekly_day at digest.daily_at.
    WEEKLY = "weekly"


FREQUENCIES: tuple[Frequency, ...] = tuple(Frequency)
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")
_PERIODS = {Frequency.DAILY: timedelta(days=1), Frequency.WEEKLY: timedelta(days=7)}


def parse_frequency(value: str) -> Frequency:
    """The frequency a person typed.

    Raises:
        UsageError: it is none of FREQUENCIES.
    """
    try:
        return Frequency(value)
    except ValueError:
        raise UsageError(
            f"unknown frequency {value!r}: use one of {', '.join(FREQUENCIES)}"
        ) from None


def period_start(frequency: Frequency, now: datetime, settings: DigestSettings) -> datetime | None:
    """The start of the daily or weekly period ``now`` falls in, in digest.timezone; None for
    immediate alerts."""
    if frequency == Frequency.IMMEDIATE:
        return None
    local = now.astimezone(settings.zone)
    start = local.replace(
        hour=settings.daily_at.hour, minute=settings.daily_at.minute, second=0, microsecond=0
    )
    if start > local:
        start -= timedelta(days=1)
    if frequency == Frequency.WEEKLY:
        start -= timedelta(days=(start.weekday() - WEEKDAYS.index(settings.weekly_day)) % 7)
    # Aware arithmetic with a ZoneInfo keeps the wall-clock time across a DST change.
    return start


def next_period_start(
    frequency: Frequency, now: datetime, settings: DigestSettings
) -> datetime | None:
    """When the daily or weekly period after the one ``now`` falls in starts (its digests are
    due then), in digest.timezone; None for immediate alerts."""
    start = period_start(frequency, now, settings)
    return None if start is None else start + _PERIODS[frequency]
