"""Spoken contributions to debates (Hansard): each speech, question or intervention, revised."""

from __future__ import annotations

import hashlib
import re
import unicodedata
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict
from urllib.parse import quote

from alertd.errors import SourceInvalid
from alertd.kinds.kind import (
    ApiKind,
    CardContext,
    FollowUp,
    JsonApi,
    KindWords,
    Listing,
    MemberRef,
    NewItem,
    Placed,
    PollSettings,
    Role,
    StoredVersions,
    Summary,
    Version,
    correction_follow_up,
    member_in,
    shown_name,
)
from alertd.kinds.parliament_json import api_date, safe_html
from alertd.models import Item

if TYPE_CHECKING:
    from alertd.config import Settings
    from alertd.digests.excerpt import Marked
    from alertd.digests.view import DigestItem

SOURCE = "hansard"
SPOKEN_PATH = "/search/contributions/Spoken.json"
HOUSES = ("Commons", "Lords")
OFFICIAL_URL = "https://hansard.parliament.uk/{house}/{day}/debates/{debate}/{slug}"
# A debate's card shows at most this many of its contributions; it says how many more match.
CONTRIBUTIONS_PER_CARD = 5
# Hansard's ids (ContributionExtId, DebateSectionExtId) go into links: GUIDs mostly, some
# digits only ("26070217000004").
_EXT_ID = re.compile(r"[0-9A-Za-z][0-9A-Za-z-]{0,63}")
# Paragraphs of ContributionTextFull: inline HTML, paragraphs apart by line breaks.
_LINE_BREAKS = re.compile(r"(?:\r?\n)+")
# What a page's slug keeps of a debate's title once title-cased (see title_slug).
_SLUG_KEEPS = frozenset("-()'\u2019")
_HOUSE_NAMES = {"Commons": "House of Commons", "Lords": "House of Lords"}

CONTRIBUTION = KindWords(
    "new contribution",
    "new contributions",
    "new contribution to a debate",
    "new contributions to debates",
    "UK Parliament debates (Hansard)",
)


class ContributionDetails(TypedDict):
    """What only a spoken contribution has (Item.details)."""

    # The debate it is part of (its title is the item's): its ids and place in the day; the
    # contribution's own place in it.
    debate_ext_id: str
    debate_id: int | None
    debate_order: int | None
    order: int | None
    # Where it was said ("Commons Chamber", "Westminster Hall", "Lords Chamber").
    section: str
    # Who spoke, as Hansard names them ("Jeremy Corbyn (Islington North) (Ind)", "Hon.
    # Members"); the Member's name as Hansard gives it.
    attributed_to: str
    speaker_name: str
    item_id: int | None


# --- the Hansard API ----------------------------------------------------------------------


def _page(body: Any, skip: int) -> tuple[int, list[Mapping[str, Any]]]:
    """``{TotalResultCount, Results: [...], SpokenResultCount, ...}`` -> (total, records).

    TotalResultCount is the one count to page by: the per-type counts beside it can be wrong
    (a recorded search of two spoken contributions says SpokenResultCount 0).
    """
    if not isinstance(body, Mapping):
        raise SourceInvalid(f"Hansard search page at skip={skip} is not a JSON object")
    total, results = body.get("TotalResultCount"), body.get("Results")
    if not isinstance(total, int) or not isinstance(results, list):
        raise SourceInvalid(f"Hansard search page at skip={skip} lacks TotalResultCount or Results")
    for record in results:
        if not isinstance(record, Mapping) or not isinstance(record.get("ContributionExtId"), str):
            raise SourceInvalid(
                f"Hansard search page at skip={skip} has a result without a ContributionExtId"
            )
    return total, results


def _base_url(settings: Settings) -> str:
    return settings.hansard.base_url


HANSARD_SEARCH = JsonApi(
    name="Hansard API",
    base_url=_base_url,
    page_params=lambda skip, take: {
        "queryParameters.skip": skip,
        "queryParameters.take": take,
    },
    detail_params={},
    page=_page,
    record_id=lambda record: str(record["ContributionExtId"]).upper(),
    # The search's results carry the whole text: no detail is ever fetched.
    detail=lambda body: None,
)


# --- parsing ------------------------------------------------------------------------------


def title_slug(title: str) -> str:
    """The slug Hansard's site gives a debate's page: the title title-cased as .NET's
    TextInfo.ToTitleCase does it, then only its letters, digits, hyphens, brackets and
    apostrophes kept ("Speaker’s Statement" -> "Speaker’SStatement", "Defence: 2.5% GDP
    Spending Commitment" -> "Defence25GDPSpendingCommitment").

    Checked against the 306 pages Hansard's redirect gave for recorded contributions; what
    becomes of a character none of their titles has (&, /, ?) is assumed: it is dropped.
    """
    cased = _title_case(" ".join(title.split()))
    return "".join(c for c in cased if c.isalnum() or c in _SLUG_KEEPS)


def _is_letter(char: str) -> bool:
    return unicodedata.category(char).startswith("L")


def _ends_word(char: str) -> bool:
    # .NET's word separators: spaces, controls, punctuation and symbols; digits and marks
    # are part of a word ("15th" -> "15Th", "G20" stays).
    category = unicodedata.category(char)
    return category[0] in "ZPS" or category in ("Cc", "Cf")


def _title_case(text: str) -> str:
    """Each word's first letter upper-cased and the rest lower-cased, unless the word has no
    lower-case letter (an acronym: "NATO", "UNRWA" stay), as .NET's ToTitleCase does; an
    ASCII apostrophe does not end a word, a typographic one does ("Speaker’S")."""
    out: list[str] = []
    at = 0
    while at < len(text):
        char = text[at]
        at += 1
        if not _is_letter(char):
            out.append(char)
            continue
        upper = char.upper()
        out.append(upper if len(upper) == 1 else char)
        start, has_lower = at, char.islower()
        while at < len(text) and (text[at] == "'" or not _ends_word(text[at])):
            if text[at] == "'":
                out.append(text[start : at + 1].lower() if has_lower else text[start : at + 1])
                start, has_lower = at + 1, True
            elif text[at].islower():
                has_lower = True
            at += 1
        rest = text[start:at]
        out.append(rest.lower() if has_lower else rest)
    return "".join(out)


def official_url(house: str, day: date, debate_ext_id: str, title: str, ext_id: str) -> str:
    """The contribution on Hansard's site: its debate's page, at the contribution."""
    page = OFFICIAL_URL.format(
        house=house,
        day=day.isoformat(),
        debate=debate_ext_id,
        slug=quote(title_slug(title) or "Debate", safe="()-'"),
    )
    return f"{page}#contribution-{ext_id}"


def text_html(raw: str) -> str:
    """ContributionTextFull as HTML paragraphs: its inline markup (emphasis, column-number
    anchors, oral questions' tags) with a paragraph for each run of line breaks."""
    paragraphs = (part.strip() for part in _LINE_BREAKS.split(raw))
    return "".join(f"<p>{part}</p>" for part in paragraphs if part)


def version_key(text: str) -> str:
    """Names a version by what it says: the words of its text, however they are marked up."""
    words = " ".join(text.split())
    return hashlib.sha256(words.encode()).hexdigest()[:16]


def _ext_id(value: Any, field: str) -> str:
    if not isinstance(value, str) or not _EXT_ID.fullmatch(value.strip()):
        raise ValueError(f"{field} is not a Hansard id")
    return value.strip().upper()


def _sitting_day(value: Any) -> date:
    try:
        day = api_date(value, "SittingDate")
    except ValueError:
        day = None
    if day is None:
        raise ValueError(f"SittingDate {value!r} is not a date")
    return day


def _optional_int(value: Any) -> int | None:
    return value if isinstance(value, int) and not isinstance(value, bool) else None


def _speaker(value: Mapping[str, Any]) -> MemberRef | None:
    """The Member who spoke; None when Hansard names none (the Speaker in the Chair, "Hon.
    Members": MemberId 0 or null)."""
    member_id = _optional_int(value.get("MemberId"))
    if member_id is None or member_id <= 0:
        return None
    # Named by the Member table or the Members API (alertd.sources.member_names), as a
    # minister given by id is: Hansard gives no party or seat, and a name alone would wipe
    # them from the Member table.
    return MemberRef(role=Role.SPEAKER, id=member_id, name=None)


def parse(value: Mapping[str, Any]) -> NewItem:
    """One result of the Hansard API's spoken-contribution search as a new version.

    Raises:
        SourceInvalid: a required field is missing or has the wrong type.
    """
    try:
        ext_id = _ext_id(value.get("ContributionExtId"), "ContributionExtId")
        debate_ext_id = _ext_id(value.get("DebateSectionExtId"), "DebateSectionExtId")
        house = str(value["House"])
        if house not in HOUSES:
            raise ValueError(f"House {house!r} is neither Commons nor Lords")
        day = _sitting_day(value["SittingDate"])
        raw = value["ContributionTextFull"]
        if not isinstance(raw, str):
            raise ValueError("ContributionTextFull is not text")
        body_html, body_text = safe_html(text_html(raw))
        title = " ".join(str(value.get("DebateSection") or "").split())
        speaker = _speaker(value)
        details: ContributionDetails = {
            "debate_ext_id": debate_ext_id,
            "debate_id": _optional_int(value.get("DebateSectionId")),
            "debate_order": _optional_int(value.get("DebateSectionOrder")),
            "order": _optional_int(value.get("OrderInDebateSection")),
            "section": " ".join(str(value.get("Section") or "").split()),
            "attributed_to": " ".join(str(value.get("AttributedTo") or "").split()),
            "speaker_name": " ".join(str(value.get("MemberName") or "").split()),
            "item_id": _optional_int(value.get("ItemId")),
        }
        return NewItem(
            kind=SpokenContribution.name,
            source_id=ext_id,
            version_key=version_key(body_text),
            stage="spoken",
            title=title,
            url=official_url(house, day, debate_ext_id, title, ext_id),
            body_text=body_text,
            body_html=body_html,
            members=() if speaker is None else (speaker,),
            house=house,
            day=day,
            details=details,
        )
    except (KeyError, TypeError, ValueError) as exc:
        shown = value.get("ContributionExtId")
        raise SourceInvalid(f"contribution {shown!r} has a bad field: {exc}") from exc


def details(item: Item) -> ContributionDetails:
    found: ContributionDetails = {
        "debate_ext_id": "",
        "debate_id": None,
        "debate_order": None,
        "order": None,
        "section": "",
        "attributed_to": "",
        "speaker_name": "",
        "item_id": None,
    }
    found.update(item.details)  # type: ignore[typeddict-item]
    return found


def speaker_name(item: Item) -> str:
    """Who spoke, in short: the Member's name, else as Hansard names the speaker."""
    member = member_in(item, Role.SPEAKER)
    found = details(item)
    named = shown_name(member.name) if member else ""
    return named or found["speaker_name"] or found["attributed_to"]


def _speaker_label(item: Item) -> str:
    """Who spoke, as Hansard heads the contribution ("Jeremy Corbyn (Islington North) (Ind)")."""
    label = details(item)["attributed_to"] or speaker_name(item) or "A speaker"
    return f"{label} (corrected)" if item.corrected_on is not None else label


def _debate_order(item: Item) -> tuple[int, int]:
    order = details(item)["order"]
    return (order if order is not None else 0, item.id or 0)


def _telling(spoken: Sequence[tuple[Item, Marked]], limit: int) -> list[tuple[Item, Marked]]:
    """At most ``limit`` contributions, in debate order: those whose own words the alert
    looks for first (a debate's title matches all of its contributions), then the rest."""
    marked = [at for at, (_, text) in enumerate(spoken) if text.spans]
    chosen = set(list(dict.fromkeys([*marked, *range(len(spoken))]))[:limit])
    return [pair for at, pair in enumerate(spoken) if at in chosen]


class SpokenContribution(ApiKind):
    """What Members say in the debates of both Houses, as Hansard reports it: revised after
    it is first published, each revision a corrected version."""

    name: ClassVar[str] = "spoken_contribution"
    type_name: ClassVar[str] = "debate"
    type_label: ClassVar[str] = "debates"
    source: ClassVar[str] = SOURCE
    api: ClassVar[JsonApi] = HANSARD_SEARCH
    stored_words: ClassVar[str] = "debate contributions"
    plural: ClassVar[str] = "contributions"
    digest_group: ClassVar[str] = "Debates"
    grouped_items_count: ClassVar[bool] = True

    # --- polling ---------------------------------------------------------------------------

    def poll_settings(self, settings: Settings) -> PollSettings | None:
        if not settings.as_parliament(settings.hansard.enabled):
            return None
        return PollSettings(
            settings.hansard.poll_interval_minutes, settings.parliament.lookback_days
        )

    def listings(self, first: date, last: date, settings: Settings) -> list[Listing]:
        return self.day_listings(first, last)

    def day_listings(self, first: date, last: date | None = None) -> list[Listing]:
        # One search per House (each names its own); oldest sitting first, so a page's
        # records stay put while later sittings are added.
        window = {
            "queryParameters.startDate": first.isoformat(),
            "queryParameters.endDate": (last or first).isoformat(),
            "queryParameters.orderBy": "SittingDateAsc",
        }
        return [
            Listing(SPOKEN_PATH, {**window, "queryParameters.house": house}) for house in HOUSES
        ]

    def detail_path(self, listed: Mapping[str, Any]) -> str | None:
        return None

    def parse(self, value: Mapping[str, Any], listed: Mapping[str, Any] | None = None) -> NewItem:
        return parse(value)

    def place(self, new: NewItem, stored: StoredVersions, today: date) -> Placed | None:
        """A contribution whose words changed is Hansard's revision of it: the next version,
        corrected the day it was found."""
        stored_keys = stored.keys_of(new.source_id)
        if new.version_key in stored_keys:
            return None
        return Placed(new.source_id, today if stored_keys else None)

    # --- matching --------------------------------------------------------------------------

    def follow_up(self, item: Item, earlier: Sequence[Version]) -> FollowUp:
        # A revised contribution goes to those sent what it said before, and to nobody else:
        # a correction, not news.
        return correction_follow_up(item, earlier)

    # --- showing ---------------------------------------------------------------------------

    def summary(self, item: Item) -> Summary:
        return Summary(
            title=" ".join(item.title.split()) or "Debate",
            where=details(item)["section"],
            by=speaker_name(item),
            day=item.corrected_on or item.day,
            text=item.body_text,
            url=item.url,
            status="corrected contribution" if item.corrected_on is not None else "",
        )

    def words(self, item: Item, told_on: date | None) -> KindWords:
        return CONTRIBUTION

    def grouped(self, items: Sequence[Item]) -> dict[int, list[Item]]:
        """A debate's contributions one alert found: the first said → the others, shown in
        its card."""
        debates: dict[tuple[str | None, date | None, str], dict[int, Item]] = {}
        for item in items:
            if item.id is not None:
                debate = (item.house, item.day, details(item)["debate_ext_id"])
                debates.setdefault(debate, {})[item.id] = item
        heads: dict[int, list[Item]] = {}
        for spoken in debates.values():
            if len(spoken) > 1:
                head, *rest = sorted(spoken.values(), key=_debate_order)
                heads[head.id or 0] = rest
        return heads

    def card(self, item: Item, context: CardContext) -> DigestItem:
        from alertd.digests.excerpt import excerpt_around, flatten
        from alertd.digests.view import Block, DigestItem

        spoken = sorted((item, *context.grouped), key=_debate_order)
        excerpts = [
            (one, excerpt_around(one.body_text, context.highlights, context.excerpt_chars))
            for one in spoken
        ]
        shown = _telling(excerpts, CONTRIBUTIONS_PER_CARD)
        left = len(spoken) - len(shown)
        more = "contribution" if left == 1 else "contributions"
        return DigestItem(
            heading=flatten(item.title) or "Debate",
            # The debate's page; each contribution's own place is its block's link.
            url=item.url.partition("#")[0],
            words=CONTRIBUTION,
            status="Corrected" if all(one.corrected_on for one in spoken) else "",
            origin=details(item)["section"],
            dates=(("Debated", item.day),) if item.day else (),
            reference=_HOUSE_NAMES.get(item.house or "", item.house or ""),
            blocks=tuple(
                Block(_speaker_label(one), text.text, text.spans, quoted=True, url=one.url)
                for one, text in shown
            ),
            footnotes=(f"{left} more {more} in this debate also match.",) if left else (),
            read_label="Read the debate",
            also_matches=context.also_matches,
            group=self.digest_group,
            body_html=item.body_html,
            item_count=len(spoken),
        )
