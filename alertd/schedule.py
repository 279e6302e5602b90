"""The digest schedule: an alert's frequencies and when a period starts (standard library only)."""

from __future__ import annotations

from datetime import datetime, timedelta
from typing import TYPE_CHECKING, Literal

from alertd.errors import UsageError

if TYPE_CHECKING:
    from alertd.config import DigestSettings

Frequency = Literal["immediate", "daily", "weekly"]
FREQUENCIES: tuple[Frequency, ...] = ("immediate", "daily", "weekly")
WEEKDAYS = ("monday", "tuesday", "wednesday", "thursday", "friday", "saturday", "sunday")


def period_start(frequency: str, now: datetime, settings: DigestSettings) -> datetime | None:
    """The start of the daily or weekly period ``now`` falls in; None for immediate alerts."""
    if frequency == "immediate":
        return None
    local = now.astimezone(settings.zone)
    start = local.replace(
        hour=settings.daily_at.hour, minute=settings.daily_at.minute, second=0, microsecond=0
    )
    if start > local:
        start -= timedelta(days=1)
    if frequency == "weekly":
        start -= timedelta(days=(start.weekday() - WEEKDAYS.index(settings.weekly_day)) % 7)
    # Aware arithmetic with a ZoneInfo keeps the wall-clock time across a DST change.
    return start


def parse_frequency(value: str) -> Frequency:
    for frequency in FREQUENCIES:
        if value == frequency:
            return frequency
    raise UsageError(f"unknown frequency {value!r}: use one of {', '.join(FREQUENCIES)}")
