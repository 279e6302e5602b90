"""Adding items: each new version filed as its kind says, stored and indexed in one go."""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Sequence
from datetime import date, datetime

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, func, select

from alertd.db import transaction
from alertd.kinds import KINDS
from alertd.kinds.kind import MemberRef, NewItem
from alertd.matching.history import index_items
from alertd.models import Item, Member


class _Stored:
    """One source's stored versions, as a kind asks about them while filing a new one."""

    def __init__(self, session: Session, source: str) -> None:
        self.session = session
        self.source = source

    def keys_of(self, source_id: str) -> set[str]:
        return set(
            self.session.exec(
                select(Item.version_key).where(
                    Item.source == self.source, Item.source_id == source_id
                )
            ).all()
        )

    def has_key(self, version_key: str) -> bool:
        found = self.session.exec(
            select(Item.id).where(Item.source == self.source, Item.version_key == version_key)
        ).first()
        return found is not None

    def source_id_with_key_prefix(self, prefix: str) -> str | None:
        return self.session.exec(
            select(Item.source_id)
            .where(Item.source == self.source, col(Item.version_key).startswith(prefix))
            .limit(1)
        ).first()

    def latest_version(self, source_id: str) -> int:
        latest = self.session.exec(
            select(func.max(Item.version)).where(
                Item.source == self.source, Item.source_id == source_id
            )
        ).one()
        return int(latest or 0)


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
        stored = _Stored(session, source)
        rows: list[Item] = []
        for name, news in by_kind.items():
            kind = KINDS[name]
            for new in kind.storing_order(news):
                placed = kind.place(new, stored, today)
                if placed is None:
                    continue
                row = new.row(
                    source=source,
                    source_id=placed.source_id,
                    version=stored.latest_version(placed.source_id) + 1,
                    corrected_on=placed.corrected_on,
                    now=now,
                )
                row.never_alert = row.never_alert or never_alert
                session.add(row)
                # Seen by the next one's questions (a correction filed in the same batch).
                session.flush()
                rows.append(row)
                for member in new.members:
                    upsert_member(session, member, new.house)
        index_items(session.connection(), rows)
    return len(rows)


def upsert_member(session: Session, ref: MemberRef, house: str | None) -> None:
    """Remember a Member's name, party and seat as last seen in an item."""
    if ref.name is None:
        return  # only an id: nothing to learn about this Member
    member = session.get(Member, ref.id)
    if member is None:
        member = Member(id=ref.id, name=ref.name)
    member.name, member.party, member.house = ref.name, ref.party, house
    member.constituency = ref.constituency
    session.add(member)
