"""Written questions: tabled, answered (a holding answer first, maybe), corrected, withdrawn."""

from __future__ import annotations

from collections.abc import Mapping, Sequence
from datetime import date
from enum import StrEnum
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from alertd.errors import SourceInvalid
from alertd.htmltext import html_to_text, web_link
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
    shown_name,
)
from alertd.kinds.parliament_json import (
    QUESTIONS_STATEMENTS,
    api_date,
    member_ref,
    safe_html,
)
from alertd.models import Item
from alertd.subscriptions.vocabulary import Hearing

if TYPE_CHECKING:
    from alertd.config import Settings
    from alertd.digests.view import DigestItem

SOURCE = "parliament"
LIST_PATH = "/api/writtenquestions/questions"
OFFICIAL_URL = "https://questions-statements.parliament.uk/written-questions/detail/{tabled}/{uin}"


class QuestionStage(StrEnum):
    """Where a written question is; each stage is a version of it (Item.stage, and the
    prefix of its version key)."""

    TABLED = "tabled"
    HOLDING = "holding"
    ANSWERED = "answer"
    WITHDRAWN = "withdrawn"


class QuestionDetails(TypedDict):
    """What only a written question has (Item.details)."""

    uin: str
    date_tabled: str
    # A question not answered yet: the day its answer is due, and whether that is a named day.
    date_for_answer: str | None
    is_named_day: bool
    # The UINs of the questions answered together with this one.
    grouped_uins: list[str]


ANSWER = KindWords(
    "new answer",
    "new answers",
    "new answer to a written question",
    "new answers to written questions",
    "UK Parliament written answers",
)
QUESTION = KindWords(
    "new question",
    "new questions",
    "new written question",
    "new written questions",
    "UK Parliament written questions",
)
UPDATE = KindWords(
    "update",
    "updates",
    "update on a written question",
    "updates on written questions",
    "UK Parliament written questions",
)


def version_key(stage: QuestionStage, answered: date | None, corrected: date | None) -> str:
    """Names a version: it changes when a tabled question is answered (or withdrawn), or a
    holding answer is replaced or corrected."""
    if stage in (QuestionStage.TABLED, QuestionStage.WITHDRAWN):
        return stage.value
    assert answered is not None
    if stage is QuestionStage.HOLDING:
        return f"holding:{answered.isoformat()}"
    return f"answer:{answered.isoformat()}:{corrected.isoformat() if corrected else '-'}"


def _stage(value: Mapping[str, Any], answered: date | None) -> QuestionStage:
    if value.get("isWithdrawn"):
        return QuestionStage.WITHDRAWN
    if answered is None:
        return QuestionStage.TABLED
    return QuestionStage.HOLDING if value.get("answerIsHolding") else QuestionStage.ANSWERED


def parse(value: Mapping[str, Any]) -> NewItem:
    """One question of the API (a listing's ``value`` or a detail's) as a new version.

    Raises:
        SourceInvalid: a required field is missing or has the wrong type.
    """
    try:
        house = str(value["house"])
        answer_html, answer_text = safe_html(str(value.get("answerText") or ""))
        tabled = api_date(value["dateTabled"], "dateTabled")
        if tabled is None:
            raise ValueError("dateTabled is empty")
        answered = api_date(value.get("dateAnswered"), "dateAnswered")
        corrected = api_date(value.get("dateAnswerCorrected"), "dateAnswerCorrected")
        due = api_date(value.get("dateForAnswer"), "dateForAnswer")
        stage = _stage(value, answered)
        uin = str(value["uin"])
        members = (
            member_ref(value.get("askingMember"), value.get("askingMemberId"), Role.ASKER),
            member_ref(value.get("answeringMember"), value.get("answeringMemberId"), Role.ANSWERER),
        )
        details: QuestionDetails = {
            "uin": uin,
            "date_tabled": tabled.isoformat(),
            "date_for_answer": due.isoformat() if due else None,
            "is_named_day": bool(value.get("isNamedDay")),
            "grouped_uins": list(_grouped(value.get("groupedQuestions"))),
        }
        return NewItem(
            kind=WrittenQuestion.name,
            source_id=str(int(value["id"])),
            version_key=version_key(stage, answered, corrected),
            stage=stage.value,
            title=str(value.get("heading") or "").strip(),
            url=OFFICIAL_URL.format(tabled=tabled.isoformat(), uin=uin),
            body_text=answer_text,
            body_html=answer_html,
            secondary_text=html_to_text(str(value.get("questionText") or "")),
            members=tuple(member for member in members if member is not None),
            answering_body_id=value.get("answeringBodyId"),
            answering_body_name=value.get("answeringBodyName"),
            house=house,
            day=answered,
            corrected_on=corrected,
            details=details,
            # Holding answers are stored but never alerted: the real answer follows.
            never_alert=stage is QuestionStage.HOLDING,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceInvalid(f"question {value.get('id')!r} has a bad field: {exc}") from exc


def _grouped(value: Any) -> tuple[str, ...]:
    if not isinstance(value, list):
        return ()
    uins = (str(uin).strip() for uin in value if isinstance(uin, str | int))
    return tuple(uin for uin in uins if uin)


def stage_of(item: Item) -> QuestionStage:
    return QuestionStage(item.stage)


def details(item: Item) -> QuestionDetails:
    found: QuestionDetails = {
        "uin": "",
        "date_tabled": "",
        "date_for_answer": None,
        "is_named_day": False,
        "grouped_uins": [],
    }
    found.update(item.details)  # type: ignore[typeddict-item]
    return found


def date_tabled(item: Item) -> date | None:
    tabled = details(item)["date_tabled"]
    return date.fromisoformat(tabled) if tabled else None


class _ReaderStage(StrEnum):
    """What a digest says of a question, for one reader."""

    ANSWERED = "answered"
    TABLED = "tabled"
    NOW_ANSWERED = "now_answered"
    WITHDRAWN = "withdrawn"


def _reader_stage(item: Item, told_on: date | None) -> tuple[_ReaderStage, date | None]:
    stage = stage_of(item)
    if stage is QuestionStage.TABLED:
        return _ReaderStage.TABLED, None
    if stage is QuestionStage.WITHDRAWN:
        return _ReaderStage.WITHDRAWN, told_on
    if told_on is not None and item.corrected_on is None:
        return _ReaderStage.NOW_ANSWERED, told_on
    return _ReaderStage.ANSWERED, None


def _status(item: Item, stage: _ReaderStage) -> str:
    if stage is _ReaderStage.TABLED:
        due = _due(item)
        return f"Asked, awaiting answer ({due})" if due else "Asked, awaiting answer"
    if stage is _ReaderStage.NOW_ANSWERED:
        return "Now answered"
    if stage is _ReaderStage.WITHDRAWN:
        return "Withdrawn"
    return "Corrected answer" if item.corrected_on is not None else ""


def _due(item: Item) -> str:
    from alertd.digests.excerpt import long_date

    due = details(item)["date_for_answer"]
    if due is None or stage_of(item) is not QuestionStage.TABLED:
        return ""
    named = ", a named day" if details(item)["is_named_day"] else ""
    return f"due {long_date(date.fromisoformat(due))}{named}"


def _person(item: Item, role: Role) -> str:
    member = member_in(item, role)
    if member is None:
        return "a Member"
    details = ", ".join(part for part in (member.party, member.constituency) if part)
    shown = shown_name(member.name) or "a Member"
    return f"{shown} ({details})" if details else shown


def _name(item: Item, role: Role) -> str:
    member = member_in(item, role)
    return "" if member is None else shown_name(member.name)


class WrittenQuestion(ApiKind):
    """Written questions of both Houses (UINs; Lords ones start with HL)."""

    name: ClassVar[str] = "written_question"
    type_name: ClassVar[str] = "question"
    type_label: ClassVar[str] = "written questions"
    source: ClassVar[str] = SOURCE
    api: ClassVar[JsonApi] = QUESTIONS_STATEMENTS
    stored_words: ClassVar[str] = "answer versions"
    plural: ClassVar[str] = "answers"
    told_stage: ClassVar[str | None] = QuestionStage.TABLED.value

    # --- polling ---------------------------------------------------------------------------

    def poll_settings(self, settings: Settings) -> PollSettings | None:
        parliament = settings.parliament
        if not parliament.enabled:
            return None
        return PollSettings(parliament.poll_interval_minutes, parliament.lookback_days)

    def listings(self, first: date, last: date, settings: Settings) -> list[Listing]:
        # Later listings win for a question in several: tabled, then answered, then corrected.
        window = {"From": first.isoformat(), "To": last.isoformat()}
        listings = [
            Listing(LIST_PATH, {f"answeredWhen{end}": day for end, day in window.items()}),
            Listing(LIST_PATH, {f"correctedWhen{end}": day for end, day in window.items()}),
        ]
        if settings.parliament.poll_tabled:
            tabled = {f"tabledWhen{end}": day for end, day in window.items()}
            listings.insert(0, Listing(LIST_PATH, tabled))
        return listings

    def day_listings(self, day: date) -> list[Listing]:
        return [
            Listing(
                LIST_PATH, {"answeredWhenFrom": day.isoformat(), "answeredWhenTo": day.isoformat()}
            )
        ]

    def detail_path(self, listed: Mapping[str, Any]) -> str:
        return f"{LIST_PATH}/{int(listed['id'])}"

    def parse(self, value: Mapping[str, Any], listed: Mapping[str, Any] | None = None) -> NewItem:
        if listed is not None:
            # The detail's member objects can be missing; the listing's are expanded.
            value = dict(value)
            for key in ("askingMember", "answeringMember"):
                if not value.get(key) and listed.get(key):
                    value[key] = listed[key]
        return parse(value)

    def worth_fetching(self, listed: NewItem, stored: StoredKeys) -> bool:
        stored_keys = stored.keys_of(listed.source_id)
        if listed.version_key in stored_keys:
            return False
        stage = QuestionStage(listed.stage)
        if stage is QuestionStage.TABLED and stored_keys:
            return False  # an answer (or a holding one) is stored already: no going back
        # A withdrawal of a question never seen is not worth a word.
        return stage is not QuestionStage.WITHDRAWN or bool(stored_keys)

    # --- matching --------------------------------------------------------------------------

    def in_history(self, item: Item) -> bool:
        return stage_of(item) is not QuestionStage.HOLDING

    def hears(self, item: Item) -> Hearing | None:
        stage = stage_of(item)
        if stage is QuestionStage.ANSWERED:
            return Hearing.ANSWERED
        if stage is QuestionStage.TABLED:
            return Hearing.TABLED
        return None  # a withdrawal (or holding answer) is only ever a follow-up

    def follow_up(self, item: Item, earlier: Sequence[Version]) -> FollowUp:
        if item.version == 1:
            return FRESH
        stage = stage_of(item)
        # Only versions matched in an earlier run may have been mailed, never holding ones.
        told = [v for v in earlier if v.matched and v.stage != QuestionStage.HOLDING]
        tabled = tuple(v.id for v in told if v.stage == QuestionStage.TABLED)
        # Answered or withdrawn before its digest as tabled went: that hit is dropped (the
        # answer is matched as any answer is; a withdrawn question is never alerted).
        drop = () if stage is QuestionStage.TABLED else tabled
        if stage is QuestionStage.WITHDRAWN:
            return FollowUp(tuple(v.id for v in told), only=True, drop_unsent=drop)
        answers = tuple(v.id for v in told if v.stage == QuestionStage.ANSWERED)
        if item.corrected_on is not None and answers:
            # A correction of an answer alertd stored goes to those sent the answer.
            return FollowUp(answers, only=True, drop_unsent=drop)
        if stage is QuestionStage.ANSWERED:
            # Now answered: those told when it was tabled; alerts hearing of answers match too.
            return FollowUp(tabled, only=False, drop_unsent=drop)
        return FollowUp(drop_unsent=drop)

    # --- showing ---------------------------------------------------------------------------

    def reference(self, item: Item) -> str:
        return details(item)["uin"]

    def summary(self, item: Item) -> Summary:
        uin = details(item)["uin"]
        stage = stage_of(item)
        status = ""
        if stage is QuestionStage.TABLED:
            status = "asked, awaiting answer"
        elif stage is QuestionStage.WITHDRAWN:
            status = "withdrawn"
        elif item.corrected_on is not None:
            status = "corrected answer"
        asker = member_in(item, Role.ASKER)
        return Summary(
            title=" ".join(item.title.split()) or f"Question {uin}",
            where=item.answering_body_name or "",
            by=shown_name(asker.name) if asker else "",
            day=item.corrected_on or item.day or date_tabled(item),
            text=item.body_text,
            url=item.url,
            reference=self.reference(item),
            status=status,
        )

    def atom_id(self, item: Item) -> str:
        # Parliament answers keep the ids their entries always had; feed readers key on them.
        return f"urn:alertd:answer:{item.source_id}:{item.version}"

    def atom_text(self, item: Item) -> str:
        return " ".join(part for part in (item.secondary_text, item.body_text) if part)

    def words(self, item: Item, told_on: date | None) -> KindWords:
        stage, _ = _reader_stage(item, told_on)
        if stage is _ReaderStage.TABLED:
            return QUESTION
        return UPDATE if stage is _ReaderStage.WITHDRAWN else ANSWER

    def grouped(self, items: Sequence[Item]) -> dict[int, list[Item]]:
        """Questions answered together (groupedQuestions) that a digest carries: the first
        one's id → the others, which are not shown on their own."""
        by_uin = {(i.house, details(i)["uin"]): i for i in items if details(i)["uin"]}
        heads: dict[int, list[Item]] = {}
        placed: set[int] = set()
        for head in items:
            grouped_uins = details(head)["grouped_uins"]
            if head.id is None or head.id in placed or not grouped_uins:
                continue
            if stage_of(head) is not QuestionStage.ANSWERED:
                continue
            members = []
            for uin in grouped_uins:
                other = by_uin.get((head.house, uin))
                if other is None or other.id in placed or other.id == head.id:
                    continue
                if stage_of(other) is QuestionStage.ANSWERED:
                    members.append(other)
                    placed.add(other.id or 0)
            placed.add(head.id)
            if members:
                heads[head.id] = members
        return heads

    def card(self, item: Item, context: CardContext) -> DigestItem:
        from alertd.digests.excerpt import excerpt_around, flatten, long_date, mark
        from alertd.digests.view import Block, DigestItem

        found = details(item)
        stage, told_on = _reader_stage(item, context.told_on)
        question = mark(item.secondary_text, context.highlights)
        answer = excerpt_around(item.body_text, context.highlights, context.excerpt_chars)
        blocks: list[Block] = []
        if context.grouped:
            blocks.append(Block("Answered together", lines=_group_lines(item, context.grouped)))
        elif question.text:
            blocks.append(Block("Question", question.text, question.spans))
        if answer.text:
            blocks.append(Block("Answer", answer.text, answer.spans, quoted=True))
        people = [f"Asked by {_person(item, Role.ASKER)}"]
        answerer = _name(item, Role.ANSWERER)
        if answerer:
            people.append(f"Answered by {answerer}")
        dates = [("Tabled", date_tabled(item))]
        if item.day is not None:
            dates.append(("Answered", item.day))
        note = ""
        if told_on is not None:
            note = (
                "We told you about this question when it was tabled, in our email of "
                f"{long_date(told_on)}."
            )
        return DigestItem(
            heading=flatten(item.title) or f"Question {found['uin']}",
            # Checked again as it is shown: rows stored before links were checked at ingest.
            url=web_link(item.url) or "",
            words=self.words(item, context.told_on),
            status=_status(item, stage),
            note=note,
            origin=item.answering_body_name or "",
            people=tuple(people),
            dates=tuple((label, day) for label, day in dates if day is not None),
            reference=f"{item.house or ''} {found['uin']}" if found["uin"] else "",
            blocks=tuple(blocks),
            read_label="Read the full question and answer",
            also_matches=context.also_matches,
            body_html=item.body_html,
        )


def _group_lines(head: Item, members: Sequence[Item]) -> tuple[str, ...]:
    from alertd.digests.excerpt import flatten

    texts = {details(m)["uin"]: flatten(m.secondary_text) for m in members}
    lines = [f"{details(head)['uin']}: {flatten(head.secondary_text)}"]
    for uin in details(head)["grouped_uins"]:
        lines.append(f"{uin}: {texts[uin]}" if texts.get(uin) else uin)
    return tuple(lines)
