"""What every interface calls an alert's state and what it hears of (standard library only)."""

from __future__ import annotations

from collections.abc import Iterable
from enum import StrEnum
from typing import Literal, TypeAlias

from alertd.errors import UsageError

Stage: TypeAlias = Literal["tabled", "answered"]


class Hearing(StrEnum):
    """What an alert can hear of (Alert.notify_on): a question as it is tabled, or the
    business itself (an answer, a statement, a feed item)."""

    TABLED = "tabled"
    ANSWERED = "answered"


class NotifyOn(StrEnum):
    """What an alert hears of; Alert.notify_on holds the value, its stages comma-separated.

    Told of a question as tabled, a reader is always told of its answer: no "tabled" alone.
    """

    ANSWERED = "answered"
    # Questions as they are tabled, then again when answered.
    TABLED_AND_ANSWERED = "tabled,answered"

    @property
    def stages(self) -> tuple[Stage, ...]:
        """Its stages in the order they happen, as the API and exports list them."""
        return _STAGES[self]

    def hears(self, stage: Hearing | Stage) -> bool:
        return stage in _STAGES[self]

    @classmethod
    def parse(cls, value: str | Iterable[str]) -> NotifyOn:
        """What a person chose: stages as "tabled,answered" or a list, in any order and case.

        Raises:
            UsageError: anything but answers, or questions as tabled and their answers.
        """
        words = value.split(",") if isinstance(value, str) else list(value)
        chosen = {word.strip().lower() for word in words if word.strip()}
        for notify_on, stages in _STAGES.items():
            if chosen == set(stages):
                return notify_on
        shown = ",".join(sorted(chosen)) or "nothing"
        raise UsageError(f"--on {shown!r}: use answered, or tabled,answered")


_STAGES: dict[NotifyOn, tuple[Stage, ...]] = {
    NotifyOn.ANSWERED: ("answered",),
    NotifyOn.TABLED_AND_ANSWERED: ("tabled", "answered"),
}


class AlertState(StrEnum):
    """Where an alert stands, as the manage page, the API and `alertd list` show it."""

    # Its confirmation link has not been followed yet: it mails nothing.
    PENDING = "pending"
    # Confirmed: mailed as it matches.
    ACTIVE = "active"
    # Paused by its owner: matches nothing until resumed.
    PAUSED = "paused"
    # Its owner is suspended (mail to them bounced, or they complained): nothing is mailed.
    SUSPENDED = "suspended"

    @property
    def listed(self) -> str:
        """The word `alertd list` prints: "confirmed" for ACTIVE, as it did before the web
        app named the state (scripts read its columns)."""
        return "confirmed" if self is AlertState.ACTIVE else self.value


def alert_state(*, confirmed: bool, paused: bool, suspended: bool) -> AlertState:
    """The state of an alert: its owner's suspension first, then its own."""
    if suspended:
        return AlertState.SUSPENDED
    if not confirmed:
        return AlertState.PENDING
    return AlertState.PAUSED if paused else AlertState.ACTIVE
