"""Adding items: each new version filed as its kind says, stored and indexed in one go."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Sequence
from datetime import date, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.db import transaction
from alertd.kinds import KINDS
from alertd.kinds.kind import MemberRef, NewItem
from alertd.matching.history import index_items
from alertd.models import Item, Member

_CHUNK = 500


class Stored:
    """One source's stored versions, as a kind asks about them before fetching listed items
    and while filing new ones: the versions of their source ids read in a few queries up
    front, and kept up to date as versions are added."""

    def __init__(self, session: Session, source: str, items: Sequence[NewItem]) -> None:
        self.session = session
        self.source = source
        self._keys: dict[str, set[str]] = defaultdict(set)
        self._latest: dict[str, int] = defaultdict(int)
        self._all_keys: set[str] | None = None
        self._wanted_keys = {new.version_key for new in items}
        self._ids_read: set[str] = set()
        self._ensure({new.source_id for new in items})

    def _ensure(self, source_ids: Iterable[str]) -> None:
        """Read the versions of these source ids, once."""
        missing = set(source_ids) - self._ids_read
        if missing:
            self._read(col(Item.source_id), missing)
            self._ids_read |= missing

    def _read(self, column: object, values: Iterable[str]) -> None:
        wanted = sorted(values)
        for start in range(0, len(wanted), _CHUNK):
            rows = self.session.exec(
                select(Item.source_id, Item.version_key, Item.version).where(
                    Item.source == self.source,
                    column.in_(wanted[start : start + _CHUNK]),  # type: ignore[attr-defined]
                )
            ).all()
            for source_id, key, version in rows:
                self._keys[source_id].add(key)
                self._latest[source_id] = max(self._latest[source_id], version)
                if self._all_keys is not None:
                    self._all_keys.add(key)

    def keys_of(self, source_id: str) -> set[str]:
        self._ensure([source_id])
        return self._keys[source_id]

    def has_key(self, version_key: str) -> bool:
        if self._all_keys is None:
            # Keys filed under other source ids too (a statement filed under the one it
            # corrects): read once for every key being filed.
            self._all_keys = {key for keys in self._keys.values() for key in keys}
            self._read(col(Item.version_key), self._wanted_keys)
        if version_key not in self._all_keys and version_key not in self._wanted_keys:
            self._read(col(Item.version_key), [version_key])
        return version_key in self._all_keys

    def source_id_with_key_prefix(self, prefix: str) -> str | None:
        for source_id, keys in self._keys.items():
            if any(key.startswith(prefix) for key in keys):
                return source_id
        return self.session.exec(
            select(Item.source_id)
            .where(Item.source == self.source, col(Item.version_key).startswith(prefix))
            .limit(1)
        ).first()

    def add(self, source_id: str, version_key: str) -> int:
        """Record a version filed now; its version number."""
        self._ensure([source_id])
        self._latest[source_id] += 1
        self._keys[source_id].add(version_key)
        if self._all_keys is not None:
            self._all_keys.add(version_key)
        return self._latest[source_id]


def add_items(
    engine: Engine,
    source: str,
    items: Sequence[NewItem],
    *,
    now: datetime,
    today: date,
    never_alert: bool = False,
) -> int:
    """Store the versions of ``items`` not stored yet, with their index rows and the Members
    they name, in one transaction; return how many were stored.

    Each is filed as its kind places it (a new version of the same item, or of the one it
    corrects). ``today``: the UK date they were found. ``never_alert``: stored as history
    that nobody is ever mailed (backfill; what a feed held when it was added).
    """
    by_kind: dict[str, list[NewItem]] = defaultdict(list)
    for new in items:
        by_kind[new.kind].append(new)
    with transaction(engine) as session:
        stored = Stored(session, source, items)
        rows: list[Item] = []
        named: list[tuple[MemberRef, str | None]] = []
        for name, news in by_kind.items():
            kind = KINDS[name]
            for new in kind.storing_order(news):
                placed = kind.place(new, stored, today)
                if placed is None:
                    continue
                row = new.row(
                    source=source,
                    source_id=placed.source_id,
                    version=stored.add(placed.source_id, new.version_key),
                    corrected_on=placed.corrected_on,
                    now=now,
                )
                row.never_alert = row.never_alert or never_alert
                session.add(row)
                rows.append(row)
                named.extend((member, new.house) for member in new.members)
        session.flush()
        index_items(session.connection(), rows)
        upsert_members(session, named)
    return len(rows)


def upsert_members(session: Session, seen: Sequence[tuple[MemberRef, str | None]]) -> None:
    """Remember each Member's name, party and seat (and House) as last seen in an item; a
    Member given only by id teaches nothing."""
    latest = {ref.id: (ref, house) for ref, house in seen if ref.name is not None}
    ids = sorted(latest)
    known: dict[int, Member] = {}
    for start in range(0, len(ids), _CHUNK):
        chunk = ids[start : start + _CHUNK]
        known.update(
            (member.id, member)
            for member in session.exec(select(Member).where(col(Member.id).in_(chunk)))
        )
    for member_id, (ref, house) in latest.items():
        assert ref.name is not None
        member = known.get(member_id) or Member(id=member_id, name=ref.name)
        member.name, member.party, member.house = ref.name, ref.party, house
        member.constituency = ref.constituency
        session.add(member)
