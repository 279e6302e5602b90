"""The kinds of business alertd follows, one module each, listed here once."""

from __future__ import annotations

from alertd.kinds.early_day_motion import EarlyDayMotion
from alertd.kinds.feed_item import FeedItem
from alertd.kinds.kind import ApiKind, Kind
from alertd.kinds.oral_question import OralQuestion
from alertd.kinds.spoken_contribution import SpokenContribution
from alertd.kinds.statement import Statement
from alertd.kinds.written_question import WrittenQuestion
from alertd.models import Item

# A new kind is its module and one entry here.
KINDS: dict[str, Kind] = {
    kind.name: kind
    for kind in (
        WrittenQuestion(),
        Statement(),
        SpokenContribution(),
        OralQuestion(),
        EarlyDayMotion(),
        FeedItem(),
    )
}


def kind_of(item: Item) -> Kind:
    """The kind of an item (every stored kind is registered)."""
    return KINDS[item.kind]


def api_kinds() -> list[ApiKind]:
    """The kinds polled from Parliament's APIs over a window of dates, in polling order."""
    return [kind for kind in KINDS.values() if isinstance(kind, ApiKind)]
