"""Oral questions: what a Member will ask a department at question time, once it is tabled."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import date, timedelta
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from alertd.errors import SourceInvalid
from alertd.htmltext import web_link
from alertd.kinds.kind import (
    FRESH,
    ApiKind,
    CardContext,
    FollowUp,
    JsonApi,
    KindWords,
    Listing,
    NewItem,
    PollSettings,
    Role,
    StoredKeys,
    Summary,
    Version,
    member_in,
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

SOURCE = "oral_questions"
LIST_PATH = "/oralquestions/list"
# No page of Parliament's shows one oral question (the API's HansardLink is empty in every
# recorded one): a question links to Hansard's record of the day it is to be asked, where
# its answer is reported, unless the API gives its own link.
SITTING_URL = "https://hansard.parliament.uk/Commons/{day}"
# Questions are tabled for a day up to a few weeks ahead: each poll lists the days to be
# asked on from the look-back window's first day to this many days after its last.
LOOKAHEAD_DAYS = 35
# The API's enumerations, as its Swagger names them; it sends their numbers, counted from 1
# (a recorded "If he will make a statement on his departmental responsibilities" is type 2,
# Topical; recorded questions taken off the order paper unasked are status 11, Unasked).
QUESTION_TYPES = ("Substantive", "Topical")
STATUSES = (
    "Submitted",
    "Carded",
    "Unsaved",
    "ReadyForShuffle",
    "ToBeAsked",
    "ShuffleUnsuccessful",
    "Withdrawn",
    "Unstarred",
    "Draft",
    "ForReview",
    "Unasked",
    "Transferred",
)
# On the order paper: chosen in the shuffle to be asked (asked or not in the end).
_LISTED = frozenset({"ToBeAsked", "Unasked", "Unstarred", "Transferred"})
# Off it: withdrawn, or not chosen in the shuffle.
_DROPPED = frozenset({"Withdrawn", "ShuffleUnsuccessful"})

ORAL_QUESTION = KindWords(
    "new oral question",
    "new oral questions",
    "new oral question",
    "new oral questions",
    "UK Parliament oral questions",
)
ORAL_UPDATE = KindWords(
    "update",
    "updates",
    "update on an oral question",
    "updates on oral questions",
    "UK Parliament oral questions",
)


class OralStage(StrEnum):
    """Where an oral question is (Item.stage): on the order paper, or taken off it. One
    still waiting for the shuffle is not stored: it may never be asked."""

    TABLED = "tabled"
    DROPPED = "dropped"


class OralDetails(TypedDict):
    """What only an oral question has (Item.details)."""

    uin: str
    # Its place among the day's questions to the department.
    number: int | None
    question_type: str
    status: str
    tabled_on: str | None
    # Whom it is put to ("the Secretary of State for International Development").
    minister_title: str


def stage_of_status(status: str) -> OralStage | None:
    """The stage an API status means; None for one not decided yet (waiting for the shuffle)."""
    if status in _LISTED:
        return OralStage.TABLED
    if status in _DROPPED:
        return OralStage.DROPPED
    return None


def _version_key(stage: OralStage, text: str, day: date, body_id: Any) -> str:
    """A version changes when the question is moved to another day or department, reworded,
    or taken off the order paper."""
    shown = json.dumps([text, day.isoformat(), body_id], ensure_ascii=False)
    return f"{stage.value}:{hashlib.sha256(shown.encode()).hexdigest()[:16]}"


def _url(value: Mapping[str, Any], day: date) -> str:
    own = web_link(str(value.get("HansardLink") or ""))
    return own or SITTING_URL.format(day=day.isoformat())


def parse(value: Mapping[str, Any]) -> NewItem:
    """One question of the API's list as a new version.

    Raises:
        SourceInvalid: a required field is missing or has the wrong type, or its status is
            not one that is stored (use ``stage_of_status`` first to skip those).
    """
    try:
        question_id = int(value["Id"])
        status = enum_name(value.get("Status"), STATUSES, "Status", first=1)
        stage = stage_of_status(status)
        if stage is None:
            raise ValueError(f"Status {status} is not on the order paper yet")
        question_type = enum_name(
            value.get("QuestionType"), QUESTION_TYPES, "QuestionType", first=1
        )
        text = " ".join(str(value["QuestionText"] or "").split())
        if not text:
            raise ValueError("QuestionText is empty")
        day = api_date(value.get("AnsweringWhen"), "AnsweringWhen")
        if day is None:
            raise ValueError("AnsweringWhen is empty")
        tabled = api_date(value.get("TabledWhen"), "TabledWhen")
        asker = member_for_date(value.get("AskingMember"), value.get("AskingMemberId"), Role.ASKER)
        if asker is None:
            raise ValueError("it names no asking Member")
        minister = member_for_date(
            value.get("AnsweringMinister"), value.get("AnsweringMinisterId"), Role.ANSWERER
        )
        body_id = value.get("AnsweringBodyId")
        number = value.get("Number")
        details: OralDetails = {
            "uin": str(value.get("UIN") or ""),
            "number": number if isinstance(number, int) and not isinstance(number, bool) else None,
            "question_type": question_type,
            "status": status,
            "tabled_on": tabled.isoformat() if tabled else None,
            "minister_title": " ".join(str(value.get("AnsweringMinisterTitle") or "").split()),
        }
        return NewItem(
            kind=OralQuestion.name,
            source_id=str(question_id),
            version_key=_version_key(stage, text, day, body_id),
            stage=stage.value,
            # An oral question has no heading of its own: its card and summary make one.
            title="",
            url=_url(value, day),
            body_text=text,
            members=(asker,) if minister is None else (asker, minister),
            answering_body_id=body_id if isinstance(body_id, int) else None,
            answering_body_name=str(value.get("AnsweringBody") or "").strip() or None,
            house="Commons",
            day=day,
            details=details,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceInvalid(f"oral question {value.get('Id')!r} has a bad field: {exc}") from exc


def details(item: Item) -> OralDetails:
    found: OralDetails = {
        "uin": "",
        "number": None,
        "question_type": "Substantive",
        "status": "",
        "tabled_on": None,
        "minister_title": "",
    }
    found.update(item.details)  # type: ignore[typeddict-item]
    return found


def heading(item: Item) -> str:
    """ "Topical question to the Department for Education"."""
    kind = "Topical question" if details(item)["question_type"] == "Topical" else "Oral question"
    return f"{kind} to {item.answering_body_name}" if item.answering_body_name else kind


def _dropped_status(item: Item) -> str:
    return "Withdrawn" if details(item)["status"] == "Withdrawn" else "Not chosen to be asked"


class OralQuestion(ApiKind):
    """Questions Members table to be asked in the Commons at a department's question time."""

    name: ClassVar[str] = "oral_question"
    type_name: ClassVar[str] = "oral"
    type_label: ClassVar[str] = "oral questions"
    source: ClassVar[str] = SOURCE
    api: ClassVar[JsonApi] = ORAL_QUESTIONS_MOTIONS
    stored_words: ClassVar[str] = "oral question versions"
    plural: ClassVar[str] = "oral questions"
    told_stage: ClassVar[str | None] = OralStage.TABLED.value
    digest_group: ClassVar[str] = "Oral questions"

    # --- polling ---------------------------------------------------------------------------

    def poll_settings(self, settings: Settings) -> PollSettings | None:
        return oral_questions_polled(settings)

    def listings(self, first: date, last: date, settings: Settings) -> list[Listing]:
        # The API lists questions by the day they are to be asked, not by when tabled.
        return self.day_listings(first, last + timedelta(days=LOOKAHEAD_DAYS))

    def day_listings(self, first: date, last: date | None = None) -> list[Listing]:
        window = {
            "parameters.answeringDateStart": first.isoformat(),
            "parameters.answeringDateEnd": (last or first).isoformat(),
        }
        return [Listing(LIST_PATH, window)]

    def detail_path(self, listed: Mapping[str, Any]) -> str | None:
        return None  # the list holds the whole question

    def parse(self, value: Mapping[str, Any], listed: Mapping[str, Any] | None = None) -> NewItem:
        return parse(value)

    def worth_fetching(self, listed: NewItem, stored: StoredKeys) -> bool:
        # Taken off the order paper before alertd saw it on: not worth a word.
        return news_or_change(listed, stored, OralStage.TABLED)

    # --- matching --------------------------------------------------------------------------

    def hears(self, item: Item) -> Hearing | None:
        # As a written question is as tabled: Member alerts hear of it, keyword alerts when
        # they ask for tabled questions too.
        return Hearing.TABLED if item.stage == OralStage.TABLED else None

    def follow_up(self, item: Item, earlier: Sequence[Version]) -> FollowUp:
        """Moved, reworded or taken off the order paper: those told of it before hear of the
        change, and nobody else; a question put back on is news again."""
        told = tuple(v.id for v in earlier if v.matched and v.stage == OralStage.TABLED)
        if not told:
            return FRESH
        # Not mailed yet: the earlier version's hit is dropped, the change is what they get.
        return FollowUp(told, only=True, drop_unsent=told)

    # --- showing ---------------------------------------------------------------------------

    def reference(self, item: Item) -> str:
        return details(item)["uin"]

    def summary(self, item: Item) -> Summary:
        asker = member_in(item, Role.ASKER)
        return Summary(
            title=heading(item),
            where=item.answering_body_name or "",
            by=shown_name(asker.name) if asker else "",
            day=item.day,
            text=item.body_text,
            url=item.url,
            reference=self.reference(item),
            status=(
                "to be asked" if item.stage == OralStage.TABLED else _dropped_status(item).lower()
            ),
        )

    def atom_id(self, item: Item) -> str:
        return f"urn:alertd:oral-question:{item.source_id}:{item.version}"

    def words(self, item: Item, told_on: date | None) -> KindWords:
        return ORAL_QUESTION if told_on is None else ORAL_UPDATE

    def card(self, item: Item, context: CardContext) -> DigestItem:
        from alertd.digests.excerpt import mark
        from alertd.digests.view import Block, DigestItem

        found = details(item)
        asker = member_in(item, Role.ASKER)
        asked_by = _asked_by(asker.name, asker.party, asker.constituency) if asker else ""
        question = mark(item.body_text, context.highlights)
        people = [f"To be asked by {asked_by}"] if asked_by else []
        if found["minister_title"]:
            people.append(f"To {found['minister_title']}")
        dates: list[tuple[str, date]] = []
        if found["tabled_on"]:
            dates.append(("Tabled", date.fromisoformat(found["tabled_on"])))
        if item.day is not None:
            dates.append(("To be asked", item.day))
        status = "To be asked"
        if item.stage != OralStage.TABLED:
            status = _dropped_status(item)
        elif context.told_on is not None:
            status = "Moved or reworded"
        number = f", question {found['number']}" if found["number"] else ""
        return DigestItem(
            heading=heading(item),
            url=item.url,
            words=self.words(item, context.told_on),
            status=status,
            origin=item.answering_body_name or "",
            people=tuple(people),
            dates=tuple(dates),
            reference=f"House of Commons {found['uin']}{number}" if found["uin"] else "",
            blocks=(Block("Question", question.text, question.spans),) if question.text else (),
            read_label="Hansard for the day it is to be asked",
            also_matches=context.also_matches,
            group=self.digest_group,
        )


def _asked_by(name: str | None, party: str | None, constituency: str | None) -> str:
    shown = shown_name(name) or "a Member"
    extra = ", ".join(part for part in (party, constituency) if part)
    return f"{shown} ({extra})" if extra else shown
