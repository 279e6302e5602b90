"""Subscribers and their alerts as JSON lines, out and in: backups, moves, other systems."""

from __future__ import annotations

import json
import re
from collections.abc import Iterable, Iterator
from dataclasses import dataclass
from datetime import UTC, datetime
from typing import IO, Any

import sqlalchemy as sa
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.addresses import email_key, normalise_email
from alertd.db import is_postgres, transaction
from alertd.errors import QueryError, UsageError
from alertd.matching import Query, parse_canonical, parse_query
from alertd.matching.query import ID_FIELDS
from alertd.models import Alert, Subscriber, bump_alerts_version
from alertd.queries import check_query, compile_query
from alertd.schedule import Frequency, parse_frequency
from alertd.subscriptions.lifecycle import default_notify_on
from alertd.subscriptions.vocabulary import NotifyOn
from alertd.tokens import new_link_secret

# The first line of every export; an import refuses a file without it only when the file
# says it is an alertd export of another version (a list from another system has none).
FORMAT_NAME = "alertd-export"
FORMAT_VERSION = 1

# Optional fields of a subscriber line besides "email" and "alerts", and of an alert
# besides "query": their states, so that a restore is the same set of alerts.
_SUBSCRIBER_TIMES = ("created_at", "suspended_at")
_ALERT_TIMES = ("created_at", "confirmed_at", "paused_at", "unsubscribed_at")
_SUBSCRIBER_FIELDS = frozenset(
    {"id", "email", "consecutive_bounces", "link_secret", "alerts", *_SUBSCRIBER_TIMES}
)
_ALERT_FIELDS = frozenset(
    {"id", "query", "canonical", "frequency", "on", "confirmed", *_ALERT_TIMES}
)
# Rows written per flush: bounded memory for a million alerts.
_CHUNK = 1000
# Ids kept from an export stay far below the ids a database can give (2^31 - 1 on
# PostgreSQL's integer columns): a line with id 2^63 - 1 would leave no id for any later
# sign-up. A real export's ids are nowhere near.
MAX_IMPORTED_ID = 1_000_000_000
MAX_BOUNCES = 10_000
# A subscriber line with every alert it may hold is a few tens of KB: a longer line is not
# an export (and json.loads is not asked to read megabytes of it).
MAX_LINE_CHARS = 1_000_000
# The bad lines an import names, each on its own line; past these, how many more.
MAX_LINES_REPORTED = 20
# A Member's or department's id in a canonical form.
_NAMED_ID = re.compile(rf"\b({'|'.join(ID_FIELDS)}):[0-9]+")


@dataclass(frozen=True)
class ImportReport:
    """What an import did."""

    subscribers_added: int
    alerts_added: int
    # Alerts already present (same address, query and frequency): an import run twice adds
    # nothing the second time.
    alerts_present: int
    # Whether the rows kept the ids of the export (a restore into an empty database), so
    # links in mail sent before the move still work.
    kept_ids: bool


def _time(value: datetime | None) -> str | None:
    return None if value is None else value.astimezone(UTC).isoformat()


def export_lines(engine: Engine, now: datetime) -> Iterator[str]:
    """The export of every subscriber with all their alerts (stopped ones too), one JSON
    document a line, the header first; read in chunks, so memory stays flat."""
    yield json.dumps({"format": FORMAT_NAME, "version": FORMAT_VERSION, "exported_at": _time(now)})
    with Session(engine) as session:
        subscribers = session.exec(select(Subscriber).order_by(col(Subscriber.id)))
        pending: list[Subscriber] = []
        for subscriber in subscribers.yield_per(_CHUNK):
            pending.append(subscriber)
            if len(pending) == _CHUNK:
                yield from _subscriber_lines(session, pending)
                pending = []
        yield from _subscriber_lines(session, pending)


def _subscriber_lines(session: Session, subscribers: list[Subscriber]) -> Iterator[str]:
    ids = [s.id for s in subscribers]
    alerts: dict[int | None, list[dict[str, Any]]] = {i: [] for i in ids}
    statement = select(Alert).where(col(Alert.subscriber_id).in_(ids)).order_by(col(Alert.id))
    for alert in session.exec(statement):
        alerts[alert.subscriber_id].append(
            {
                "id": alert.id,
                "query": alert.query,
                "canonical": alert.canonical,
                "frequency": alert.frequency,
                # What it hears about, as the JSON API names it.
                "on": list(NotifyOn(alert.notify_on).stages),
                "confirmed": alert.confirmed,
                **{name: _time(getattr(alert, name)) for name in _ALERT_TIMES},
            }
        )
    for subscriber in subscribers:
        yield json.dumps(
            {
                "id": subscriber.id,
                "email": subscriber.email,
                "consecutive_bounces": subscriber.consecutive_bounces,
                # With the ids, it keeps the links in mail already sent working after a move.
                "link_secret": subscriber.link_secret,
                **{name: _time(getattr(subscriber, name)) for name in _SUBSCRIBER_TIMES},
                "alerts": alerts[subscriber.id],
            },
            ensure_ascii=False,
        )


@dataclass(frozen=True)
class _AlertIn:
    id: int | None
    query: str
    canonical: str
    frequency: Frequency
    notify_on: NotifyOn
    confirmed: bool
    times: dict[str, datetime | None]


@dataclass(frozen=True)
class _SubscriberIn:
    id: int | None
    email: str
    consecutive_bounces: int
    link_secret: str | None
    times: dict[str, datetime | None]
    alerts: list[_AlertIn]


class _LineError(Exception):
    pass


def _parse_time(document: dict[str, Any], name: str) -> datetime | None:
    value = document.get(name)
    if value is None:
        return None
    if not isinstance(value, str):
        raise _LineError(f"{name}: not a date and time")
    try:
        parsed = datetime.fromisoformat(value)
    except ValueError:
        raise _LineError(f"{name}: not an ISO 8601 date and time: {value[:40]!r}") from None
    if parsed.tzinfo is None:
        raise _LineError(f"{name}: no time zone (give UTC, e.g. {value[:19]}+00:00)")
    return parsed


def _check_fields(document: dict[str, Any], allowed: frozenset[str], what: str) -> None:
    unknown = sorted(set(document) - allowed)
    if unknown:
        raise _LineError(f"unknown {what} field {unknown[0]!r}")


def _parse_id(document: dict[str, Any]) -> int | None:
    value = document.get("id")
    if value is not None and (
        not isinstance(value, int) or isinstance(value, bool) or not 1 <= value <= MAX_IMPORTED_ID
    ):
        raise _LineError(f"id: not a whole number from 1 to {MAX_IMPORTED_ID:,}")
    return value


def _ids_as_one(canonical: str) -> str:
    """A canonical form with every Member and department id made 1, in canonical order:
    what is left to compare once the names a query gives are known only by their ids."""
    return parse_canonical(_NAMED_ID.sub(r"\1:1", canonical)).canonical


class _Queries:
    """Parses each distinct query once. What an alert matches is derived from its query,
    the text its mails show: a line's ``canonical`` is never taken on trust (a hostile line
    would show "school funding" and match "prison*").

    A query without names gives its canonical form itself. A query that names Members or
    departments needs their ids: from the line's ``canonical`` (an export's, so a restore
    needs no lookup) when it is the query's own form but for the ids, else looked up in the
    database. Without a session (the check before any database is opened) names are only
    checked for syntax: they are looked up when the lines are read again to be written.
    """

    def __init__(self, session: Session | None) -> None:
        self.session = session
        self.seen: dict[tuple[str, str | None], Query] = {}

    def __call__(self, text: str, canonical: str | None) -> Query:
        key = (text, canonical)
        if key not in self.seen:
            try:
                self.seen[key] = self._derive(text, canonical)
            except QueryError as error:
                raise _LineError(f"query {text[:60]!r}: {error}") from None
        return self.seen[key]

    def _derive(self, text: str, canonical: str | None) -> Query:
        if not check_query(text):
            return parse_query(text)
        if canonical is not None:
            shape = parse_query(text, lambda _field, _name, _at: 1).canonical
            if _ids_as_one(shape) != _ids_as_one(canonical):
                raise _LineError(f"canonical: not the form of its query {text[:60]!r}")
            return parse_canonical(canonical)
        if self.session is None:
            return parse_query(text, lambda _field, _name, _at: 1)
        return compile_query(self.session, text)


def _parse_alert(document: Any, queries: _Queries) -> _AlertIn:
    if not isinstance(document, dict):
        raise _LineError("an alert is not an object")
    _check_fields(document, _ALERT_FIELDS, "alert")
    text = document.get("query")
    if not isinstance(text, str) or not text.strip():
        raise _LineError("an alert has no query")
    canonical = document.get("canonical")
    if canonical is not None and not isinstance(canonical, str):
        raise _LineError("canonical: not text")
    query = queries(text, canonical)
    typed = document.get("frequency", Frequency.DAILY)
    if not isinstance(typed, str):
        raise _LineError("frequency: not text")
    try:
        frequency = parse_frequency(typed)
    except UsageError as error:
        raise _LineError(str(error)) from None
    on = document.get("on")
    if on is not None and not (
        isinstance(on, str) or (isinstance(on, list) and all(isinstance(w, str) for w in on))
    ):
        raise _LineError("on: not a list of stages")
    try:
        notify_on = default_notify_on(query.canonical) if on is None else NotifyOn.parse(on)
    except UsageError as error:
        raise _LineError(str(error).replace("--on", "on")) from None
    times = {name: _parse_time(document, name) for name in _ALERT_TIMES}
    confirmed = document.get("confirmed", times["confirmed_at"] is not None)
    if not isinstance(confirmed, bool):
        raise _LineError("confirmed: not true or false")
    if confirmed and times["confirmed_at"] is None:
        raise _LineError("confirmed: true needs confirmed_at")
    return _AlertIn(
        id=_parse_id(document),
        query=" ".join(text.split()),
        canonical=query.canonical,
        frequency=frequency,
        notify_on=notify_on,
        confirmed=confirmed,
        times=times,
    )


def _parse_subscriber(line: str, queries: _Queries) -> _SubscriberIn:
    if len(line) > MAX_LINE_CHARS:
        raise _LineError(f"longer than {MAX_LINE_CHARS:,} characters")
    try:
        document = json.loads(line)
    except json.JSONDecodeError as error:
        raise _LineError(f"not JSON ({error.msg})") from None
    except RecursionError:
        raise _LineError("not JSON an export would hold (nested too deeply)") from None
    if not isinstance(document, dict):
        raise _LineError("not a JSON object")
    _check_fields(document, _SUBSCRIBER_FIELDS, "subscriber")
    email = document.get("email")
    if not isinstance(email, str):
        raise _LineError("no email")
    try:
        address = normalise_email(email)
    except UsageError as error:
        raise _LineError(str(error)) from None
    bounces = document.get("consecutive_bounces", 0)
    if not isinstance(bounces, int) or isinstance(bounces, bool) or not 0 <= bounces <= MAX_BOUNCES:
        raise _LineError(f"consecutive_bounces: not a whole number from 0 to {MAX_BOUNCES:,}")
    alerts = document.get("alerts", [])
    if not isinstance(alerts, list):
        raise _LineError("alerts: not a list")
    link_secret = document.get("link_secret")
    if link_secret is not None and (
        not isinstance(link_secret, str) or not 16 <= len(link_secret) <= 64
    ):
        raise _LineError("link_secret: not 16 to 64 characters of text")
    return _SubscriberIn(
        id=_parse_id(document),
        email=address,
        consecutive_bounces=bounces,
        link_secret=link_secret,
        times={name: _parse_time(document, name) for name in _SUBSCRIBER_TIMES},
        alerts=[_parse_alert(alert, queries) for alert in alerts],
    )


def _documents(lines: Iterable[str], queries: _Queries) -> Iterator[_SubscriberIn]:
    """The subscriber lines parsed and checked, header and blank lines skipped.

    Raises:
        UsageError: lines are malformed: one line of the message for each (its number and
            what is wrong), at most MAX_LINES_REPORTED, raised after the last line is read.
    """
    bad: list[str] = []
    bad_count = 0
    for number, line in enumerate(lines, start=1):
        if not line.strip():
            continue
        if number == 1 and '"format"' in line:
            _check_header(line)
            continue
        try:
            parsed = _parse_subscriber(line, queries)
        except _LineError as error:
            bad_count += 1
            if len(bad) < MAX_LINES_REPORTED:
                bad.append(f"line {number}: {error}")
            continue
        if not bad:
            yield parsed
    if bad:
        more = bad_count - len(bad)
        if more:
            bad.append(f"... and {more} more bad lines")
        bad[-1] += "; nothing was imported"
        raise UsageError("\n".join(bad))


def _check_header(line: str) -> None:
    try:
        header = json.loads(line)
    except json.JSONDecodeError:
        raise UsageError("line 1: not JSON") from None
    if not isinstance(header, dict) or header.get("format") != FORMAT_NAME:
        raise UsageError(f"line 1: not an {FORMAT_NAME} header")
    if header.get("version") != FORMAT_VERSION:
        raise UsageError(
            f"line 1: export format version {header.get('version')!r}; "
            f"this alertd reads version {FORMAT_VERSION}"
        )


def check_lines(source: IO[str]) -> bool:
    """Check every line of an import without a database (so bad input creates none); whether
    every subscriber and alert in it gives its id (a restore, which keeps them).

    Raises:
        UsageError: a malformed line (its number and the problem), or duplicate ids.
    """
    ids: set[int] = set()
    alert_ids: set[int] = set()
    every_id_given = True
    for subscriber in _documents(source, _Queries(None)):
        every_id_given = every_id_given and subscriber.id is not None
        every_id_given = every_id_given and all(a.id is not None for a in subscriber.alerts)
        if subscriber.id is not None:
            if subscriber.id in ids:
                raise UsageError(f"subscriber id {subscriber.id} appears twice")
            ids.add(subscriber.id)
        for alert in subscriber.alerts:
            if alert.id is not None:
                if alert.id in alert_ids:
                    raise UsageError(f"alert id {alert.id} appears twice")
                alert_ids.add(alert.id)
    source.seek(0)
    return every_id_given


def import_lines(source: IO[str], engine: Engine, now: datetime) -> ImportReport:
    """Add the subscribers and alerts of an export (or of another system's list) in one
    transaction: the whole input is checked first, and nothing is written if any line is bad.

    Addresses already present gain only the alerts they lack. Ids are kept when the
    database holds no subscribers yet and every line gives them (a restore or a move, so
    links in mail sent before still work), else new ones are given.

    Raises:
        UsageError: a malformed line (its number and the problem), or duplicate ids.
    """
    every_id_given = check_lines(source)
    with transaction(engine) as session:
        empty = session.exec(select(Subscriber.id).limit(1)).first() is None
        empty = empty and session.exec(select(Alert.id).limit(1)).first() is None
        keep_ids = empty and every_id_given
        writer = _Writer(session, now, keep_ids=keep_ids)
        for subscriber in _documents(source, _Queries(session)):
            writer.add(subscriber)
        writer.flush()
        if keep_ids and is_postgres(engine):
            _advance_sequences(session)
        return ImportReport(
            subscribers_added=writer.subscribers_added,
            alerts_added=writer.alerts_added,
            alerts_present=writer.alerts_present,
            kept_ids=keep_ids,
        )


class _Writer:
    """Writes subscribers a chunk at a time: one lookup of the chunk's addresses, one insert
    of its new subscribers, one of its alerts."""

    def __init__(self, session: Session, now: datetime, *, keep_ids: bool) -> None:
        self.session = session
        self.now = now
        self.keep_ids = keep_ids
        self.subscribers_added = 0
        self.alerts_added = 0
        self.alerts_present = 0
        self.waiting: list[_SubscriberIn] = []

    def add(self, incoming: _SubscriberIn) -> None:
        self.waiting.append(incoming)
        if len(self.waiting) >= _CHUNK:
            self.flush()

    def flush(self) -> None:
        if not self.waiting:
            return
        # Core statements, not ORM objects: a million alerts in minutes, not hours. So the
        # alerts version (see models.mark_alert_changes) is bumped here, once a chunk.
        # Keyed as addresses are compared (Parent@Example.ORG is parent@example.org); the
        # first line of an address wins.
        by_key = {email_key(s.email): s for s in reversed(self.waiting)}
        found = self.session.execute(
            sa.select(col(Subscriber.email_key), col(Subscriber.id)).where(
                col(Subscriber.email_key).in_(list(by_key))
            )
        ).all()
        owners: dict[str, int] = {key: owner_id for key, owner_id in found}
        new = [incoming for key, incoming in by_key.items() if key not in owners]
        if new:
            rows = [
                {
                    **({"id": incoming.id} if self.keep_ids else {}),
                    "email": incoming.email,
                    "email_key": email_key(incoming.email),
                    "consecutive_bounces": incoming.consecutive_bounces,
                    # Core inserts skip the model's default: a new secret unless moved.
                    "link_secret": incoming.link_secret or new_link_secret(),
                    "created_at": incoming.times["created_at"] or self.now,
                    "suspended_at": incoming.times["suspended_at"],
                    "changed_version": 0,
                }
                for incoming in new
            ]
            inserted = self.session.execute(
                sa.insert(Subscriber).returning(
                    col(Subscriber.email_key), col(Subscriber.id), sort_by_parameter_order=True
                ),
                rows,
            ).all()
            owners.update({key: owner_id for key, owner_id in inserted})
            self.subscribers_added += len(new)
        # An alert is there already when its owner has one with the same query, frequency
        # and stop time (None: live): an import run twice adds nothing, stopped ones neither.
        held = sa.select(
            col(Alert.subscriber_id),
            col(Alert.canonical),
            col(Alert.frequency),
            col(Alert.unsubscribed_at),
        ).where(col(Alert.subscriber_id).in_(list(owners.values())))
        present = {tuple(row) for row in self.session.execute(held)}
        rows = []
        for incoming in self.waiting:
            owner_id = owners[email_key(incoming.email)]
            for alert in incoming.alerts:
                key = (owner_id, alert.canonical, alert.frequency, alert.times["unsubscribed_at"])
                if key in present:
                    self.alerts_present += 1
                    continue
                present.add(key)
                rows.append(
                    {
                        **({"id": alert.id} if self.keep_ids else {}),
                        "subscriber_id": owner_id,
                        "query": alert.query,
                        "canonical": alert.canonical,
                        "frequency": alert.frequency,
                        "notify_on": alert.notify_on,
                        "confirmed": alert.confirmed,
                        "confirmed_at": alert.times["confirmed_at"],
                        "created_at": alert.times["created_at"] or self.now,
                        "paused_at": alert.times["paused_at"],
                        "unsubscribed_at": alert.times["unsubscribed_at"],
                    }
                )
        if rows:
            version = bump_alerts_version(self.session.connection())
            for row in rows:
                row["changed_version"] = version
            self.session.execute(sa.insert(Alert), rows)
            self.alerts_added += len(rows)
        self.waiting = []


def _advance_sequences(session: Session) -> None:
    # Rows inserted with their ids leave PostgreSQL's sequences behind: the next sign-up
    # would collide with an imported id.
    for table in ("subscriber", "alert"):
        session.execute(
            sa.text(
                f"SELECT setval(pg_get_serial_sequence('{table}', 'id'), "
                f"COALESCE((SELECT max(id) FROM {table}), 0) + 1, false)"
            )
        )
