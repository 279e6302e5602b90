"""The Kind interface: what each kind of parliamentary business provides, and its values."""

from __future__ import annotations

from collections.abc import Callable, Collection, Hashable, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import date, datetime
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, NamedTuple, Protocol

from alertd.models import Item
from alertd.subscriptions.vocabulary import Hearing

if TYPE_CHECKING:
    from alertd.config import Settings
    from alertd.digests.view import DigestItem
    from alertd.matching import Highlights


class Role(StrEnum):
    """What a Member did in an item; each is also a query field (``asker:4138``,
    ``speaker:185``), and ``member:`` matches a Member in any role."""

    ASKER = "asker"
    ANSWERER = "answerer"
    # Who said something in a debate.
    SPEAKER = "speaker"
    # Who tabled or signed an Early Day Motion.
    SPONSOR = "sponsor"


@dataclass(frozen=True)
class Document:
    """One item (a version of a question, a statement, a feed item) as a query sees it.

    ``members`` are (role, Member id) pairs; ``item_type`` is what ``type:`` names its kind
    by ("question", "statement"), "" for a kind ``type:`` has no name for.
    """

    title: str
    secondary_text: str
    body_text: str
    house: str
    members: tuple[tuple[str, int], ...] = ()
    department_id: int | None = None
    item_type: str = "question"

    def member_ids(self) -> set[int]:
        """Every Member the item names, in any role."""
        return {member_id for _, member_id in self.members}


@dataclass(frozen=True)
class MemberRef:
    """A Member as an item names them, in one role; ``name`` is None when the source gave
    only the id (named later through the Members API)."""

    role: str
    id: int
    name: str | None
    party: str | None = None
    constituency: str | None = None

    def to_json(self) -> dict[str, Any]:
        return {
            "role": self.role,
            "id": self.id,
            "name": self.name,
            "party": self.party,
            "constituency": self.constituency,
        }

    @classmethod
    def from_json(cls, value: Mapping[str, Any]) -> MemberRef:
        return cls(
            role=str(value["role"]),
            id=int(value["id"]),
            name=value.get("name"),
            party=value.get("party"),
            constituency=value.get("constituency"),
        )


def member_in(item: Item, role: str) -> MemberRef | None:
    """The first Member in this role, if any."""
    for member in item.members or ():
        if member.get("role") == role:
            return MemberRef.from_json(member)
    return None


def shown_name(name: str | None) -> str:
    """A Member's name as a reader sees it: items stored before Members were named at
    ingest may hold a bare id as the name, and a reader is never shown "Member 5336"."""
    if name is None or name.isdigit():
        return ""
    return name


@dataclass(frozen=True)
class NewItem:
    """One version of an item as its kind parsed it from its source, not stored yet.

    ``source_id`` is the item's own id at its source; storing may file it under another
    (a statement that corrects an earlier one becomes that one's next version).
    """

    kind: str
    source_id: str
    version_key: str
    stage: str
    title: str
    url: str
    body_text: str = ""
    body_html: str = ""
    secondary_text: str = ""
    members: tuple[MemberRef, ...] = ()
    answering_body_id: int | None = None
    answering_body_name: str | None = None
    house: str | None = None
    day: date | None = None
    corrected_on: date | None = None
    published_at: datetime | None = None
    details: Mapping[str, Any] = field(default_factory=dict)
    # Stored but never alerted (a holding answer): its kind knows from the data alone.
    never_alert: bool = False

    def row(
        self, *, source: str, source_id: str, version: int, corrected_on: date | None, now: datetime
    ) -> Item:
        """The Item row of this version, filed as (source, source_id, version)."""
        return Item(
            kind=self.kind,
            source=source,
            source_id=source_id,
            version=version,
            version_key=self.version_key,
            stage=self.stage,
            title=self.title,
            body_text=self.body_text,
            body_html=self.body_html,
            secondary_text=self.secondary_text,
            members=[member.to_json() for member in self.members],
            answering_body_id=self.answering_body_id,
            answering_body_name=self.answering_body_name,
            house=self.house,
            day=self.day,
            corrected_on=corrected_on,
            published_at=self.published_at,
            url=self.url,
            details=dict(self.details),
            never_alert=self.never_alert,
            ingested_at=now,
        )


class Placed(NamedTuple):
    """Where a new version is filed: under which source id, and when it was corrected."""

    source_id: str
    corrected_on: date | None


class StoredKeys(Protocol):
    """What a kind may ask about one source's stored versions before fetching a listed one."""

    def keys_of(self, source_id: str) -> Collection[str]:
        """The version keys stored under this source id."""
        ...

    def has_key(self, version_key: str) -> bool:
        """Whether a version with this key is stored under any source id of the source."""
        ...


class StoredVersions(StoredKeys, Protocol):
    """What a kind may ask about one source's stored versions while filing a new one."""

    def source_id_with_key_prefix(self, prefix: str) -> str | None:
        """The source id under which a version whose key starts so is stored, if any."""
        ...


def news_or_change(listed: NewItem, stored: StoredKeys, news_stage: str) -> bool:
    """Whether a listed version is worth fetching: not stored yet, and either news (at
    ``news_stage``) or a change to one stored; an end (withdrawn) of one never seen is not
    worth a word."""
    stored_keys = stored.keys_of(listed.source_id)
    if listed.version_key in stored_keys:
        return False
    return listed.stage == news_stage or bool(stored_keys)


class Version(NamedTuple):
    """An earlier version of an item, as its follow-up rule sees it."""

    id: int
    version: int
    stage: str
    corrected_on: date | None
    # Whether matching dealt with it in an earlier run (one matched in the same run as a
    # later version was superseded before anyone was told of it).
    matched: bool


@dataclass(frozen=True)
class FollowUp:
    """Who hears of a new version because they heard of an earlier one.

    ``told`` are earlier versions whose recipients get this one, under the same alert;
    ``only`` says nobody else does (a correction); ``drop_unsent`` are earlier versions
    whose hits not mailed yet are dropped (a question answered before its digest as
    tabled went out); ``heard`` are earlier versions, oldest first, whose alerts do not hear
    this one as news: those with a hit on one, and those the newest of them matches (a
    motion's new names go only to the alerts they made it match).
    """

    told: tuple[int, ...] = ()
    only: bool = False
    drop_unsent: tuple[int, ...] = ()
    heard: tuple[int, ...] = ()


FRESH = FollowUp()


def correction_follow_up(item: Item, earlier: Sequence[Version]) -> FollowUp:
    """A corrected version goes to those sent an earlier one, and to nobody else, as a
    corrected answer does; a first sight of a corrected one is fresh."""
    told = tuple(v.id for v in earlier if v.matched)
    if item.version == 1 or item.corrected_on is None or not told:
        return FRESH
    return FollowUp(told, only=True)


@dataclass(frozen=True)
class Summary:
    """An item in one line or two: the "more" page, previews, the Atom feed."""

    title: str
    # Where it is from: the department, or the feed.
    where: str
    # Who it is by: who asked, the minister who made it.
    by: str
    day: date | None
    text: str
    url: str
    # Its short reference, where it has one ("HL1234", "HCWS12"); else "".
    reference: str = ""
    # The words after its title in a feed reader: "(asked, awaiting answer)".
    status: str = ""


@dataclass(frozen=True)
class KindWords:
    """What digests call items of one kind (at one stage): counts in a subject, a section's
    heading, the headline and the intro."""

    # "new answer", "new answers": counts in a subject or a section's heading.
    one: str
    many: str
    # "new answer to a written question", "new answers to written questions": the headline.
    headline_one: str
    headline_many: str
    # "UK Parliament written answers": the intro's "… that match your alerts."
    source: str

    def short(self, count: int) -> str:
        return self.one if count == 1 else self.many

    def headline(self, count: int) -> str:
        return self.headline_one if count == 1 else self.headline_many


@dataclass(frozen=True)
class CardContext:
    """What a digest card of an item depends on besides the item: the query words to
    mark, the excerpt length, the other alerts it matched, this reader's history, and the
    Members they follow."""

    highlights: Highlights
    excerpt_chars: int
    also_matches: tuple[str, ...] = ()
    # When this reader was sent the version at the kind's ``told_stage`` (a question as
    # tabled), for a later version: "Now answered".
    told_on: date | None = None
    # Items of the same kind shown inside this one's card (questions answered together).
    grouped: tuple[Item, ...] = ()
    # The Members the alerts that found it follow (plain Member follows): a card may put
    # what they did first (one signature among a motion's hundred).
    followed: frozenset[int] = frozenset()


class Kind:
    """One kind of parliamentary business: how it is parsed, matched, shown and followed up.

    A kind's module subclasses this once and the registry (alertd.kinds) lists it; nothing
    outside a kind's module asks which kind an item is. The defaults suit a kind whose
    items are alerted once, as they come.
    """

    # The Item.kind value.
    name: ClassVar[str]
    # What ``type:`` calls it in a query ("question"); "" when ``type:`` has no name for it;
    # and what a digest calls that type: ("written questions").
    type_name: ClassVar[str] = ""
    type_label: ClassVar[str] = ""
    # Whether its text is anyone's to read: previews open to the public show only such items
    # (a feed's text may not be; web.preview_feed_items lets them in).
    public_text: ClassVar[bool] = True
    # The stage of an earlier version whose mailing a later one recalls (see CardContext).
    told_stage: ClassVar[str | None] = None
    # The group of a digest's section its cards are shown in, by title; "" for the first,
    # untitled group. Each group shows at most digest.max_per_alert items.
    digest_group: ClassVar[str] = ""
    # What an item shown inside another's card (grouped()) is: False, one piece of business
    # with it (questions answered together: counted once, grouped whichever alerts found
    # them); True, an item of its own shown beside others (a debate's contributions): each
    # is counted, and only items shown under the same alert are grouped.
    grouped_items_count: ClassVar[bool] = False

    # --- storing ---------------------------------------------------------------------------

    def worth_fetching(self, listed: NewItem, stored: StoredKeys) -> bool:
        """Whether a listed version needs fetching and storing (it is not stored yet)."""
        return listed.version_key not in stored.keys_of(listed.source_id)

    def place(self, new: NewItem, stored: StoredVersions, today: date) -> Placed | None:
        """Where to file a new version; None when it is stored already. ``today``: the UK
        date it was found."""
        if new.version_key in stored.keys_of(new.source_id):
            return None
        return Placed(new.source_id, new.corrected_on)

    def storing_order(self, items: Sequence[NewItem]) -> list[NewItem]:
        """The order in which new versions are filed (and so numbered)."""
        return list(items)

    # --- matching --------------------------------------------------------------------------

    def document(self, item: Item) -> Document:
        """The item as queries see it: its texts, Members by role, department, House, type."""
        return Document(
            title=item.title,
            secondary_text=item.secondary_text,
            body_text=item.body_text,
            house=item.house or "",
            members=tuple((m["role"], int(m["id"])) for m in item.members or ()),
            department_id=item.answering_body_id,
            item_type=self.type_name,
        )

    def in_history(self, item: Item) -> bool:
        """Whether previews and estimates count it (a holding answer says nothing yet)."""
        return True

    def hears(self, item: Item) -> Hearing | None:
        """What an alert must hear of to be told of this version as news; None when only a
        follow-up tells anyone of it."""
        return Hearing.ANSWERED

    def follow_up(self, item: Item, earlier: Sequence[Version]) -> FollowUp:
        """Who hears of this version because they heard of an earlier one (``earlier``:
        the item's lower versions, oldest first)."""
        return FRESH

    # --- showing ---------------------------------------------------------------------------

    def summary(self, item: Item) -> Summary:
        """The item in a line or two."""
        raise NotImplementedError

    def reference(self, item: Item) -> str:
        """Its short reference, where it has one ("HL1234", "HCWS12"); else ""."""
        return ""

    def atom_id(self, item: Item) -> str:
        """Its entry id in an alert's Atom feed: never changes for this version."""
        return f"urn:alertd:item:{item.id}"

    def atom_text(self, item: Item) -> str:
        """The text of its Atom entry's summary."""
        return item.body_text

    def words(self, item: Item, told_on: date | None) -> KindWords:
        """What a digest calls it ("new answer"), for this reader."""
        raise NotImplementedError

    def card(self, item: Item, context: CardContext) -> DigestItem:
        """How a digest shows it."""
        raise NotImplementedError

    def grouped(self, items: Sequence[Item]) -> dict[int, list[Item]]:
        """Items of a digest (or of one alert's section: ``grouped_items_count``) shown
        inside another's card (by that one's id); the rest of ``items`` stand alone."""
        return {}


@dataclass(frozen=True)
class JsonApi:
    """How one of Parliament's JSON APIs is reached, pages its listings and wraps its records
    (each API kind names its API; the client, alertd.sources.parliament, does the rest)."""

    name: str
    # Its base URL, from the settings.
    base_url: Callable[[Settings], str]
    # The query asking for one page: (skip, take) -> parameters.
    page_params: Callable[[int, int], Mapping[str, str | int]]
    # The query asking for one record's detail.
    detail_params: Mapping[str, str]
    # One page's body, and how many records came before it -> (how many records in all,
    # this page's records).
    page: Callable[[Any, int], tuple[int, list[Mapping[str, Any]]]]
    # A record's id: a record listed twice (in two listings) is kept once, the later.
    record_id: Callable[[Mapping[str, Any]], Hashable]
    # A detail's body -> its record; None when the body holds none.
    detail: Callable[[Any], Mapping[str, Any] | None]


class Listing(NamedTuple):
    """One listing request of an API: its path and query (paging is the client's)."""

    path: str
    params: Mapping[str, str]


class PollSettings(NamedTuple):
    """How often a kind's source is polled, and how many days back each poll asks."""

    interval_minutes: int
    lookback_days: int


class ApiKind(Kind):
    """A kind polled from a Parliament API over a window of UK dates (alertd.sources.window):
    listings for the window, a detail for each version not stored yet, parsed here."""

    # The source's name: its items, poll state and metrics go by it.
    source: ClassVar[str]
    api: ClassVar[JsonApi]
    # What its new versions are called in a count: "answer versions"; and in short: "answers".
    stored_words: ClassVar[str]
    plural: ClassVar[str]

    def poll_settings(self, settings: Settings) -> PollSettings | None:
        """How it is polled; None when it is switched off."""
        raise NotImplementedError

    def listings(self, first: date, last: date, settings: Settings) -> list[Listing]:
        """The listings of the window's versions; a later listing's record of an item wins."""
        raise NotImplementedError

    def day_listings(self, day: date) -> list[Listing]:
        """The listings of what was done on one past day (backfill: history, no alerts)."""
        raise NotImplementedError

    def detail_path(self, listed: Mapping[str, Any]) -> str | None:
        """Where the full record of a listed version is (the listing cuts texts short); None
        when the listing holds it all."""
        raise NotImplementedError

    def parse(self, value: Mapping[str, Any], listed: Mapping[str, Any] | None = None) -> NewItem:
        """A record of the API as a new version; ``listed`` is its listing's record when
        ``value`` is the detail.

        Raises:
            SourceInvalid: a required field is missing or has the wrong type.
        """
        raise NotImplementedError
