"""Early Day Motions: motions Members table in the Commons, and each Member who signs one."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from alertd.errors import SourceInvalid
from alertd.kinds.kind import (
    FRESH,
    ApiKind,
    CardContext,
    FollowUp,
    JsonApi,
    KindWords,
    Listing,
    MemberRef,
    NewItem,
    PollSettings,
    Role,
    StoredKeys,
    Summary,
    Version,
    news_or_change,
    shown_name,
)
from alertd.kinds.oral_questions_api import (
    ORAL_QUESTIONS_MOTIONS,
    enum_name,
    member_for_date,
    oral_questions_polled,
)
from alertd.kinds.parliament_json import api_date
from alertd.models import Item
from alertd.subscriptions.vocabulary import Hearing

if TYPE_CHECKING:
    from alertd.config import Settings
    from alertd.digests.view import DigestItem

SOURCE = "early_day_motions"
LIST_PATH = "/EarlyDayMotions/list"
DETAIL_PATH = "/EarlyDayMotion/{id}"
OFFICIAL_URL = "https://edm.parliament.uk/early-day-motion/{id}"
# The API's Status, as its Swagger names it; it sends the number, counted from 0 (a listing
# asked for Published motions holds only 0).
STATUSES = ("Published", "Withdrawn")
# A card names at most this many signatures (the followed Members' first, then the newest).
SIGNATURES_SHOWN = 8

MOTION = KindWords(
    "new motion",
    "new motions",
    "new Early Day Motion",
    "new Early Day Motions",
    "UK Parliament Early Day Motions",
)
SIGNED = KindWords(
    "motion signed",
    "motions signed",
    "Early Day Motion signed",
    "Early Day Motions signed",
    "UK Parliament Early Day Motions",
)
WITHDRAWN = KindWords(
    "update",
    "updates",
    "update on an Early Day Motion",
    "updates on Early Day Motions",
    "UK Parliament Early Day Motions",
)


class MotionStage(StrEnum):
    """Where a motion is (Item.stage)."""

    PUBLISHED = "published"
    WITHDRAWN = "withdrawn"


class Signature(TypedDict):
    """One Member's name on a motion: its place, and the day it was added."""

    id: int
    order: int | None
    signed_on: str | None


class MotionDetails(TypedDict):
    """What only an Early Day Motion has (Item.details)."""

    # "262", "262A1" (an amendment).
    uin: str
    status: str
    primary_sponsor_id: int | None
    # The motion it amends, and the statutory instrument it prays against, if any.
    amends: int | None
    statutory_instrument: str
    # Its Members' names still on it (Item.members names them), in signing order; those who
    # took their names off.
    signatures: list[Signature]
    withdrawn_ids: list[int]
    # How many names the API's listing counted: a changed count is a version to fetch.
    listed_count: int


def _listed_count(listed: Mapping[str, Any]) -> int:
    count = listed.get("SponsorsCount")
    return count if isinstance(count, int) and not isinstance(count, bool) else 0


def version_key(status: str, title: str, text: str, listed_count: int) -> str:
    """Names a version from the listing alone: a new signature (or one taken off) changes
    the listing's count, a withdrawal its status. The detail's own count is no guide: both
    recorded details say 0 beside 17 and 169 names."""
    shown = json.dumps([title, text], ensure_ascii=False)
    digest = hashlib.sha256(shown.encode()).hexdigest()[:16]
    return f"{status}:{listed_count}:{digest}"


def _signatures(
    raw: Any, primary: MemberRef | None
) -> tuple[list[MemberRef], list[Signature], list[int]]:
    """The Members on the motion (as sponsors), their signatures in order, and the ids of
    those who took their names off; the primary sponsor first whatever the list says."""
    members: dict[int, MemberRef] = {}
    signatures: list[Signature] = []
    withdrawn: list[int] = []
    if primary is not None:
        members[primary.id] = primary
    rows = [row for row in raw or () if isinstance(row, Mapping)]
    rows.sort(key=lambda row: row.get("SponsoringOrder") or 0)
    for row in rows:
        member = member_for_date(row.get("Member"), row.get("MemberId"), Role.SPONSOR)
        if member is None:
            continue
        if row.get("IsWithdrawn"):
            withdrawn.append(member.id)
            continue
        members.setdefault(member.id, member)
        signed = api_date(row.get("CreatedWhen"), "CreatedWhen")
        order = row.get("SponsoringOrder")
        if all(s["id"] != member.id for s in signatures):
            signatures.append(
                {
                    "id": member.id,
                    "order": order if isinstance(order, int) else None,
                    "signed_on": signed.isoformat() if signed else None,
                }
            )
    withdrawn = [w for w in withdrawn if w not in members]
    return list(members.values()), signatures, withdrawn


def parse(value: Mapping[str, Any], listed: Mapping[str, Any] | None = None) -> NewItem:
    """One motion of the API (its detail, with the listing's record it came from; or the
    listing's record alone) as a new version.

    Raises:
        SourceInvalid: a required field is missing or has the wrong type.
    """
    try:
        motion_id = int(value["Id"])
        status = enum_name(value.get("Status"), STATUSES, "Status", first=0)
        title = " ".join(str(value["Title"] or "").split())
        text = " ".join(str(value.get("MotionText") or "").split())
        if not title:
            raise ValueError("Title is empty")
        tabled = api_date(value.get("DateTabled"), "DateTabled")
        if tabled is None:
            raise ValueError("DateTabled is empty")
        primary = member_for_date(value.get("PrimarySponsor"), value.get("MemberId"), Role.SPONSOR)
        members, signatures, withdrawn = _signatures(value.get("Sponsors"), primary)
        count = _listed_count(listed if listed is not None else value)
        amends = value.get("AmendmentToMotionId")
        instrument = " ".join(str(value.get("StatutoryInstrumentTitle") or "").split())
        details: MotionDetails = {
            "uin": str(value.get("UINWithAmendmentSuffix") or value.get("UIN") or ""),
            "status": status,
            "primary_sponsor_id": primary.id if primary else None,
            "amends": amends if isinstance(amends, int) else None,
            "statutory_instrument": instrument,
            "signatures": signatures,
            "withdrawn_ids": withdrawn,
            "listed_count": count,
        }
        return NewItem(
            kind=EarlyDayMotion.name,
            source_id=str(motion_id),
            version_key=version_key(status, title, text, count),
            stage=(MotionStage.PUBLISHED if status == "Published" else MotionStage.WITHDRAWN).value,
            title=title,
            url=OFFICIAL_URL.format(id=motion_id),
            body_text=text,
            # The instrument a prayer is against is searchable words of the motion.
            secondary_text=instrument,
            members=tuple(members),
            house="Commons",
            day=tabled,
            details=details,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceInvalid(f"Early Day Motion {value.get('Id')!r} has a bad field: {exc}") from exc


def details(item: Item) -> MotionDetails:
    found: MotionDetails = {
        "uin": "",
        "status": "Published",
        "primary_sponsor_id": None,
        "amends": None,
        "statutory_instrument": "",
        "signatures": [],
        "withdrawn_ids": [],
        "listed_count": 0,
    }
    found.update(item.details)  # type: ignore[typeddict-item]
    return found


def _members(item: Item) -> dict[int, MemberRef]:
    return {int(m["id"]): MemberRef.from_json(m) for m in item.members or ()}


def _described(member: MemberRef | None) -> str:
    if member is None:
        return "a Member"
    extra = ", ".join(part for part in (member.party, member.constituency) if part)
    name = shown_name(member.name) or "a Member"
    return f"{name} ({extra})" if extra else name


def _signature_line(member: MemberRef | None, signed_on: str | None) -> str:
    from alertd.digests.excerpt import long_date

    name = _described(member)
    return f"{name}, {long_date(date.fromisoformat(signed_on))}" if signed_on else name


def shown_signatures(item: Item, followed: frozenset[int]) -> list[Signature]:
    """The signatures a card names: the followed Members' first, then the newest."""
    signatures = [s for s in details(item)["signatures"] if s["id"] != _primary_id(item)]
    first = [s for s in signatures if s["id"] in followed]
    newest = sorted(
        (s for s in signatures if s["id"] not in followed),
        key=lambda s: (s["signed_on"] or "", s["order"] or 0),
        reverse=True,
    )
    return (first + newest)[:SIGNATURES_SHOWN]


def _primary_id(item: Item) -> int | None:
    return details(item)["primary_sponsor_id"]


def _count_words(count: int) -> str:
    return "1 signature" if count == 1 else f"{count} signatures"


class EarlyDayMotion(ApiKind):
    """Early Day Motions of the Commons: each tabled motion, and later each new name on it."""

    name: ClassVar[str] = "early_day_motion"
    type_name: ClassVar[str] = "edm"
    type_label: ClassVar[str] = "Early Day Motions"
    source: ClassVar[str] = SOURCE
    api: ClassVar[JsonApi] = ORAL_QUESTIONS_MOTIONS
    stored_words: ClassVar[str] = "Early Day Motion versions"
    plural: ClassVar[str] = "motions"
    digest_group: ClassVar[str] = "Early Day Motions"

    # --- polling ---------------------------------------------------------------------------

    def poll_settings(self, settings: Settings) -> PollSettings | None:
        return oral_questions_polled(settings)

    def listings(self, first: date, last: date, settings: Settings) -> list[Listing]:
        # Members sign motions for weeks after they are tabled: each poll lists those tabled
        # within oral_questions.signatures_days, and fetches the ones whose count changed.
        since = min(first, last - timedelta(days=settings.oral_questions.signatures_days))
        return self.day_listings(since, last)

    def day_listings(self, first: date, last: date | None = None) -> list[Listing]:
        window = {
            "parameters.tabledStartDate": first.isoformat(),
            "parameters.tabledEndDate": (last or first).isoformat(),
            # Oldest first: a page's records stay put while motions are tabled.
            "parameters.orderBy": "DateTabledAsc",
        }
        return [Listing(LIST_PATH, window)]

    def detail_path(self, listed: Mapping[str, Any]) -> str | None:
        return DETAIL_PATH.format(id=int(listed["Id"]))

    def parse(self, value: Mapping[str, Any], listed: Mapping[str, Any] | None = None) -> NewItem:
        return parse(value, listed)

    def worth_fetching(self, listed: NewItem, stored: StoredKeys) -> bool:
        return news_or_change(listed, stored, MotionStage.PUBLISHED)

    # --- matching --------------------------------------------------------------------------

    def hears(self, item: Item) -> Hearing | None:
        return Hearing.ANSWERED if item.stage == MotionStage.PUBLISHED else None

    def follow_up(self, item: Item, earlier: Sequence[Version]) -> FollowUp:
        """New names on a motion go to the alerts it had not matched before (a follow of a
        Member who has just signed), never again to one that heard of it; a withdrawal goes
        to those mailed the motion, and nobody else."""
        if not earlier:
            return FRESH
        if item.stage == MotionStage.WITHDRAWN:
            told = tuple(v.id for v in earlier if v.matched and v.stage == MotionStage.PUBLISHED)
            # Not mailed yet: the motion is not news any more, its withdrawal is not either.
            return FollowUp(told, only=True, drop_unsent=told)
        return FollowUp(heard=tuple(v.id for v in earlier))

    # --- showing ---------------------------------------------------------------------------

    def reference(self, item: Item) -> str:
        uin = details(item)["uin"]
        return f"EDM {uin}" if uin else ""

    def summary(self, item: Item) -> Summary:
        primary = _members(item).get(_primary_id(item) or 0)
        return Summary(
            title=" ".join(item.title.split()) or "Early Day Motion",
            where="Early Day Motions",
            by=shown_name(primary.name) if primary else "",
            day=item.day,
            text=item.body_text,
            url=item.url,
            reference=self.reference(item),
            status="withdrawn" if item.stage == MotionStage.WITHDRAWN else "",
        )

    def atom_id(self, item: Item) -> str:
        return f"urn:alertd:edm:{item.source_id}:{item.version}"

    def words(self, item: Item, told_on: date | None) -> KindWords:
        if item.stage == MotionStage.WITHDRAWN:
            return WITHDRAWN
        return MOTION if item.version == 1 else SIGNED

    def card(self, item: Item, context: CardContext) -> DigestItem:
        from alertd.digests.excerpt import excerpt_around, flatten, mark
        from alertd.digests.view import Block, DigestItem

        found = details(item)
        members = _members(item)
        primary = members.get(found["primary_sponsor_id"] or 0)
        # The listing's count when the detail could not be fetched (it names the sponsor only).
        count = len(found["signatures"]) or found["listed_count"]
        people = [f"Tabled by {_described(primary)}"]
        signed = [members.get(s["id"]) for s in found["signatures"] if s["id"] in context.followed]
        people += [
            f"Signed by {_described(member)}"
            for member in signed
            if member is not None and member.id != found["primary_sponsor_id"]
        ]
        text = excerpt_around(item.body_text, context.highlights, context.excerpt_chars)
        blocks = [Block("Motion", text.text, text.spans, quoted=True)] if text.text else []
        if found["statutory_instrument"]:
            instrument = mark(found["statutory_instrument"], context.highlights)
            blocks.insert(0, Block("Prays against", instrument.text, instrument.spans))
        shown = shown_signatures(item, context.followed)
        if shown:
            blocks.append(
                Block(
                    f"Signed ({_count_words(count)})",
                    lines=tuple(
                        _signature_line(members.get(s["id"]), s["signed_on"]) for s in shown
                    ),
                )
            )
        left = count - len(shown) - (1 if primary is not None else 0)
        status = ""
        if item.stage == MotionStage.WITHDRAWN:
            status = "Withdrawn"
        elif item.version > 1:
            status = "New signatures"
        return DigestItem(
            heading=flatten(item.title) or "Early Day Motion",
            url=item.url,
            words=self.words(item, context.told_on),
            status=status,
            origin="House of Commons",
            people=tuple(people),
            dates=(("Tabled", item.day),) if item.day else (),
            reference=self.reference(item),
            blocks=tuple(blocks),
            footnotes=(f"{_count_words(left)} more on the motion's page.",) if left > 0 else (),
            read_label="Read the motion and every signature",
            also_matches=context.also_matches,
            group=self.digest_group,
        )
