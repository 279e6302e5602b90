"""The live matcher: one engine over the live alerts, kept current by the alerts version."""

from __future__ import annotations

import gc
import logging
import threading
from collections.abc import Iterable, Iterator, Sequence
from datetime import datetime
from operator import mul
from typing import NamedTuple

import sqlalchemy as sa
from sqlmodel import Session, col, select

from alertd.errors import QueryError
from alertd.matching.analysis import AnalysedDocument
from alertd.matching.engine import Mask, MatchEngine, _collector_paused, indexes_of
from alertd.models import Alert, AlertsVersion, Subscriber

log = logging.getLogger("alertd.matching.live")
# A load of this many alerts is a daemon's start at scale (see `load`), not a test's.
_FREEZE_FROM = 100_000


class LiveAlert(NamedTuple):
    """What recording a hit needs of an alert."""

    id: int
    subscriber_id: int
    confirmed_at: datetime | None
    # Alert.notify_on: the question stages it hears about.
    notify_on: str = "answered"


class AlertRow(NamedTuple):
    """An alert as the database has it now, and whether it matches (`live`)."""

    alert: LiveAlert
    canonical: str
    live: bool


_COLUMNS = (
    col(Alert.id),
    col(Alert.subscriber_id),
    col(Alert.confirmed_at),
    col(Alert.canonical),
    col(Alert.notify_on),
)
# Confirmed, active alerts of subscribers not suspended.
_LIVE = sa.and_(
    col(Alert.confirmed).is_(True),
    col(Alert.unsubscribed_at).is_(None),
    col(Alert.paused_at).is_(None),
    col(Subscriber.suspended_at).is_(None),
)


def live_rows(session: Session) -> Iterator[AlertRow]:
    """Every live alert."""
    statement = (
        sa.select(*_COLUMNS)
        .join(Subscriber, col(Subscriber.id) == col(Alert.subscriber_id))
        .where(_LIVE)
    )
    for alert_id, subscriber_id, confirmed_at, canonical, on in session.execute(statement):
        yield AlertRow(LiveAlert(alert_id, subscriber_id, confirmed_at, on), canonical, True)


def rows_changed_since(session: Session, version: int) -> Iterator[AlertRow]:
    """The alerts (live or not) changed, or whose subscriber was, after alerts `version`."""
    changed_ids = sa.union(
        sa.select(col(Alert.id)).where(col(Alert.changed_version) > version),
        sa.select(col(Alert.id))
        .join(Subscriber, col(Subscriber.id) == col(Alert.subscriber_id))
        .where(col(Subscriber.changed_version) > version),
    )
    statement = (
        sa.select(*_COLUMNS, sa.case((_LIVE, True), else_=False))
        .join(Subscriber, col(Subscriber.id) == col(Alert.subscriber_id))
        .where(col(Alert.id).in_(changed_ids))
    )
    for alert_id, subscriber_id, confirmed_at, canonical, on, live in session.execute(statement):
        alert = LiveAlert(alert_id, subscriber_id, confirmed_at, on)
        yield AlertRow(alert, canonical, bool(live))


def alerts_version(session: Session) -> int:
    version = session.exec(select(AlertsVersion.version).where(AlertsVersion.id == 1)).first()
    return version or 0


class LiveMatcher:
    """The live alerts filed by canonical query in one MatchEngine, built once and then
    changed alert by alert: `refresh` applies what changed in the database since it last
    looked, whichever process changed it (the alerts version says whether anything did).

    Each canonical query is parsed once; alerts sharing it share its place in the engine.
    """

    def __init__(self) -> None:
        self._engine: MatchEngine[str] = MatchEngine()
        self._alerts: dict[str, dict[int, LiveAlert]] = {}
        # How many live alerts share each canonical query (what a fan-out count multiplies
        # by, kept apart so counting reads one small int per query, not each query's dict).
        self._sharing: dict[str, int] = {}
        self._canonical_of: dict[int, str] = {}
        # The alerts version this matcher reflects; None until the first load.
        self.version: int | None = None
        # One refresh-and-match at a time (runs are threads).
        self.lock = threading.Lock()

    def __len__(self) -> int:
        """The number of live alerts."""
        return len(self._canonical_of)

    @property
    def queries(self) -> int:
        """The number of distinct queries in the engine."""
        return len(self._engine)

    def refresh(self, session: Session) -> int:
        """Bring the matcher up to date with the database; the number of alert rows read."""
        # The version first: every change numbered up to it is committed (see AlertsVersion),
        # so the rows read next hold all of them; later ones are read again next time.
        version = alerts_version(session)
        if self.version is None:
            rows = list(live_rows(session))
            self.load(rows)
        elif version == self.version:
            return 0
        else:
            rows = list(rows_changed_since(session, self.version))
            for row in rows:
                self.apply(row)
        self.version = version
        return len(rows)

    def load(self, rows: Iterable[AlertRow]) -> None:
        """Add many live alerts at once (the start of a daemon)."""
        with _collector_paused():
            grouped: dict[str, dict[int, LiveAlert]] = {}
            for row in rows:
                grouped.setdefault(row.canonical, {})[row.alert.id] = row.alert
            for canonical, alerts in grouped.items():
                self._place(canonical, alerts)
            if len(self._canonical_of) >= _FREEZE_FROM:
                # What was just built lives as long as the daemon: out of the collector's
                # reach, no full collection ever walks these millions of objects again.
                gc.freeze()

    def apply(self, row: AlertRow) -> None:
        """Take one alert's current state: file it under its query if live, else drop it."""
        alert_id = row.alert.id
        before = self._canonical_of.pop(alert_id, None)
        if before is not None:
            sharing = self._alerts[before]
            del sharing[alert_id]
            self._sharing[before] = len(sharing)
            if not sharing:
                del self._alerts[before], self._sharing[before]
                if before in self._engine:
                    self._engine.remove(before)
        if row.live:
            self._place(row.canonical, {alert_id: row.alert})

    def _place(self, canonical: str, alerts: dict[int, LiveAlert]) -> None:
        sharing = self._alerts.get(canonical)
        if sharing is None:
            sharing = self._alerts[canonical] = {}
            # Parsed (compiled) once per canonical form while any alert has it.
            try:
                self._engine.add_canonical(canonical, canonical)
            except QueryError as exc:
                # Saved queries were valid when saved; one that no longer parses is skipped
                # loudly.
                log.error("alert query %r no longer parses: %s", canonical, exc)
        sharing.update(alerts)
        self._sharing[canonical] = len(sharing)
        self._canonical_of.update(dict.fromkeys(alerts, canonical))

    def match(self, documents: Sequence[AnalysedDocument]) -> Iterator[tuple[LiveAlert, list[int]]]:
        """Each live alert matching some documents, with the indexes of those documents."""
        for canonical, mask in self.match_masks(documents).items():
            indexes = indexes_of(mask)
            for alert in self._alerts[canonical].values():
                yield alert, indexes

    def match_queries(self, documents: Sequence[AnalysedDocument]) -> dict[str, list[int]]:
        """The indexes of the documents each matching canonical query matches."""
        return self._engine.match(documents)

    def match_masks(self, documents: Sequence[AnalysedDocument]) -> dict[str, Mask]:
        """The documents each matching canonical query matches, as a mask (bit i: the i-th)."""
        return self._engine.match_masks(documents)

    def fan_out_count(self, documents: Sequence[AnalysedDocument]) -> int:
        """(alert, document) pairs matching: a count per distinct query, times its alerts."""
        # Counted in C: per query, its mask's documents times its alerts; per group sharing
        # a mask, the mask's documents times the alerts of all its queries.
        sharing = self._sharing.__getitem__
        each, shared = self._engine.match_groups(documents)
        total: int = sum(map(mul, map(int.bit_count, each.values()), map(sharing, each)))
        for mask, canonicals in shared:
            total += mask.bit_count() * sum(map(sharing, canonicals))
        return total

    def sharing(self, canonical: str) -> int:
        """How many live alerts have this canonical query."""
        return self._sharing.get(canonical, 0)
