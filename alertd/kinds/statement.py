"""Written statements: ministers' statements (HCWS…/HLWS…) and their corrections."""

from __future__ import annotations

import hashlib
import json
from collections.abc import Mapping, Sequence
from datetime import date
from typing import TYPE_CHECKING, Any, ClassVar, TypedDict

from alertd.errors import SourceInvalid
from alertd.kinds.kind import (
    ApiKind,
    CardContext,
    FollowUp,
    JsonApi,
    KindWords,
    Listing,
    NewItem,
    Placed,
    PollSettings,
    Role,
    StoredKeys,
    StoredVersions,
    Summary,
    Version,
    correction_follow_up,
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

if TYPE_CHECKING:
    from alertd.config import Settings
    from alertd.digests.view import DigestItem

SOURCE = "statements"
STATEMENTS_PATH = "/api/writtenstatements/statements"
OFFICIAL_URL = "https://questions-statements.parliament.uk/written-statements/detail/{made}/{uin}"
# The link type by which a statement names the one it corrects (or is corrected by).
CORRECTION_LINK = "CorrectedStatement"

STATEMENT = KindWords(
    "new statement",
    "new statements",
    "new written statement",
    "new written statements",
    "ministers' written statements",
)


class LinkedStatement(TypedDict):
    id: int
    link_type: str
    date: str | None


class Attachment(TypedDict):
    title: str
    url: str


class StatementDetails(TypedDict):
    """What only a written statement has (Item.details)."""

    uin: str
    # The minister's role ("Minister for Investment").
    role: str | None
    attachments: list[Attachment]
    # The statements it links to (a correction names the one it corrects).
    linked_statements: list[LinkedStatement]


def listing_fingerprint(value: Mapping[str, Any]) -> str:
    """What marks a new version of a statement in its listing: its title and (listed) text,
    so a poll tells a changed statement from a known one without fetching its detail."""
    shown = json.dumps([value.get("title") or "", value.get("text") or ""], ensure_ascii=False)
    return hashlib.sha256(shown.encode()).hexdigest()[:16]


def _linked(raw: Any) -> list[LinkedStatement]:
    links: list[LinkedStatement] = []
    for link in raw or ():
        if isinstance(link, Mapping) and isinstance(link.get("linkedStatementId"), int):
            linked = api_date(link.get("linkDate"), "linkDate")
            links.append(
                {
                    "id": link["linkedStatementId"],
                    "link_type": str(link.get("linkType") or ""),
                    "date": linked.isoformat() if linked else None,
                }
            )
    return links


def _attachments(raw: Any) -> list[Attachment]:
    return [
        {"title": str(a.get("title") or "").strip(), "url": str(a.get("url") or "")}
        for a in raw or ()
        if isinstance(a, Mapping) and (a.get("title") or a.get("url"))
    ]


def parse(value: Mapping[str, Any], fingerprint: str | None = None) -> NewItem:
    """One statement of the API (listing or detail) as a new version; ``fingerprint``: its
    listing's (listing_fingerprint), when ``value`` is the detail.

    Raises:
        SourceInvalid: a required field is missing or has the wrong type.
    """
    try:
        api_id = int(value["id"])
        house = str(value["house"])
        text_html, text = safe_html(str(value.get("text") or ""))
        made = api_date(value["dateMade"], "dateMade")
        if made is None:
            raise ValueError("dateMade is empty")
        uin = str(value["uin"])
        minister = member_ref(value.get("member"), value.get("memberId"), Role.ANSWERER)
        attachments = _attachments(value.get("attachments"))
        details: StatementDetails = {
            "uin": uin,
            "role": value.get("memberRole") or None,
            "attachments": attachments,
            "linked_statements": _linked(value.get("linkedStatements")),
        }
        return NewItem(
            kind=Statement.name,
            source_id=str(api_id),
            # The statement's own id first: a correction made as a new statement is stored
            # as a version of the one it corrects, and is found again by its id.
            version_key=f"{api_id}:{fingerprint or listing_fingerprint(value)}",
            stage="made",
            title=str(value.get("title") or "").strip(),
            url=OFFICIAL_URL.format(made=made.isoformat(), uin=uin),
            body_text=text,
            body_html=text_html,
            # The attachments' titles are searchable words of the statement.
            secondary_text="\n".join(a["title"] for a in attachments if a["title"]),
            members=() if minister is None else (minister,),
            answering_body_id=value.get("answeringBodyId"),
            answering_body_name=value.get("answeringBodyName"),
            house=house,
            day=made,
            details=details,
        )
    except (KeyError, TypeError, ValueError) as exc:
        raise SourceInvalid(f"statement {value.get('id')!r} has a bad field: {exc}") from exc


def details(item: Item) -> StatementDetails:
    found: StatementDetails = {"uin": "", "role": None, "attachments": [], "linked_statements": []}
    found.update(item.details)  # type: ignore[typeddict-item]
    return found


def corrected_ids(new: NewItem) -> list[int]:
    """Earlier statements this one corrects (a correction link to a lower id)."""
    own = int(new.source_id)
    links: list[LinkedStatement] = new.details.get("linked_statements", [])
    return sorted(
        link["id"] for link in links if link["link_type"] == CORRECTION_LINK and link["id"] < own
    )


class Statement(ApiKind):
    """Ministers' written statements of both Houses."""

    name: ClassVar[str] = "statement"
    type_name: ClassVar[str] = "statement"
    type_label: ClassVar[str] = "written statements"
    source: ClassVar[str] = SOURCE
    api: ClassVar[JsonApi] = QUESTIONS_STATEMENTS
    stored_words: ClassVar[str] = "written statements"
    plural: ClassVar[str] = "statements"
    digest_group: ClassVar[str] = "Written statements"

    # --- polling ---------------------------------------------------------------------------

    def poll_settings(self, settings: Settings) -> PollSettings | None:
        if not settings.polls_statements:
            return None
        # Looked at on every poll run; polled once its own interval has passed.
        return PollSettings(
            settings.statements.poll_interval_minutes, settings.parliament.lookback_days
        )

    def listings(self, first: date, last: date, settings: Settings) -> list[Listing]:
        return self.day_listings(first, last)

    def day_listings(self, first: date, last: date | None = None) -> list[Listing]:
        made = {"madeWhenFrom": first.isoformat(), "madeWhenTo": (last or first).isoformat()}
        return [Listing(STATEMENTS_PATH, made)]

    def detail_path(self, listed: Mapping[str, Any]) -> str:
        return f"{STATEMENTS_PATH}/{int(listed['id'])}"

    def parse(self, value: Mapping[str, Any], listed: Mapping[str, Any] | None = None) -> NewItem:
        if listed is None:
            return parse(value)
        if not value.get("member") and listed.get("member"):
            value = {**value, "member": listed["member"]}
        return parse(value, listing_fingerprint(listed))

    def worth_fetching(self, listed: NewItem, stored: StoredKeys) -> bool:
        # A statement may be stored under the one it corrected: its key is looked for
        # anywhere (a statement's keys start with its own id, so they are unique).
        return not stored.has_key(listed.version_key)

    def place(self, new: NewItem, stored: StoredVersions, today: date) -> Placed | None:
        """A statement already stored under another version, or one that corrects a stored
        statement, becomes that statement's next version, marked corrected: it goes to the
        people the earlier version went to, as a corrected answer does."""
        if stored.has_key(new.version_key):
            return None
        root = stored.source_id_with_key_prefix(f"{new.source_id}:")
        corrected_on: date | None = today if root is not None else None
        earlier = corrected_ids(new)
        if root is None:
            for corrected in earlier:
                root = stored.source_id_with_key_prefix(f"{corrected}:")
                if root is not None:
                    corrected_on = new.day
                    break
        if root is None and earlier:
            # Corrects a statement made before alertd looked: shown as a correction, sent fresh.
            corrected_on = new.day
        return Placed(root or new.source_id, corrected_on)

    def storing_order(self, items: Sequence[NewItem]) -> list[NewItem]:
        # Oldest first: a correction made in the same window finds the statement it corrects.
        return sorted(items, key=lambda new: int(new.source_id))

    # --- matching --------------------------------------------------------------------------

    def follow_up(self, item: Item, earlier: Sequence[Version]) -> FollowUp:
        return correction_follow_up(item, earlier)

    # --- showing ---------------------------------------------------------------------------

    def reference(self, item: Item) -> str:
        return details(item)["uin"]

    def summary(self, item: Item) -> Summary:
        minister = member_in(item, Role.ANSWERER)
        uin = details(item)["uin"]
        return Summary(
            title=" ".join(item.title.split()) or f"Statement {uin}",
            where=item.answering_body_name or "",
            # A statement is by the minister who made it.
            by=shown_name(minister.name) if minister else "",
            day=item.corrected_on or item.day,
            text=item.body_text,
            url=item.url,
            reference=self.reference(item),
            status="corrected statement" if item.corrected_on is not None else "",
        )

    def words(self, item: Item, told_on: date | None) -> KindWords:
        return STATEMENT

    def card(self, item: Item, context: CardContext) -> DigestItem:
        from alertd.digests.excerpt import excerpt_around, flatten
        from alertd.digests.view import Block, DigestItem

        found = details(item)
        text = excerpt_around(item.body_text, context.highlights, context.excerpt_chars)
        minister = member_in(item, Role.ANSWERER)
        name = shown_name(minister.name) if minister else ""
        role = flatten(found["role"] or "")
        titles = [flatten(a["title"]) for a in found["attachments"] if a["title"]]
        return DigestItem(
            heading=flatten(item.title) or f"Statement {found['uin']}",
            url=item.url,
            words=STATEMENT,
            status="Corrected statement" if item.corrected_on is not None else "",
            origin=item.answering_body_name or "",
            people=(f"Made by {name}" + (f", {role}" if role else ""),) if name else (),
            dates=(("Made", item.day),) if item.day else (),
            reference=f"{item.house or ''} {found['uin']}" if found["uin"] else "",
            blocks=(Block("Statement", text.text, text.spans, quoted=True),) if text.text else (),
            footnotes=(f"Attachments: {'; '.join(titles)}",) if titles else (),
            read_label="Read the full statement",
            also_matches=context.also_matches,
            group=self.digest_group,
            body_html=item.body_html,
        )
