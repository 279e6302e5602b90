"""The release database's story: the recorded records of February 2021 as the APIs showed them
on each day, and a feed of the answers (tests/fixtures/release_db: make.py and the upgrade test).

The recorded lists were taken on 18 March 2021, when most questions tabled on 1 February had
been answered (some after a holding answer), four answers corrected. ``questions_as_of`` shows
each record as it stood at a moment: unanswered until its holding answer or answer is given,
the answer uncorrected until its correction. Something done on a day becomes visible at noon
UTC (a run at 07:00 sees the day before; one at 19:00 sees the day).

What is changed in the recorded records, on top of that (values, never their shapes):

- 146805 (Sharon Hodgson, unanswered when recorded) is withdrawn on 2 February;
- HCWS751 carries an attachment and a joint-statement link in its detail, and its text is
  corrected on 2 February;
- HL12808 gives its answering Member (Lord Wolfson of Tredegar, first seen that day) by id
  only, as the API sometimes does: the Members API names him.
"""

from __future__ import annotations

import base64
import copy
from collections.abc import Mapping
from datetime import UTC, date, datetime, time, timedelta
from email.utils import format_datetime
from typing import Any
from xml.sax.saxutils import escape

from feed_server import FeedServer, Route
from standin_api import (
    Record,
    StandinApi,
    load_2021_answered,
    load_2021_statements,
    load_2021_tabled,
    load_member_sample,
    member_search_item,
)

VISIBLE_AT = time(12, 0)
HODGSON_WITHDRAWN = 1282401  # 146805
WITHDRAWN_ON = date(2021, 2, 2)
HONG_KONG_HC = 1282160  # HCWS751
HONG_KONG_HL = 1282164  # HLWS745
STATEMENT_CORRECTED_ON = date(2021, 2, 2)
CORRECTED_STATEMENT_TEXT = (
    "<p>I am pleased to confirm that the Hong Kong British National (Overseas) (BN(O)) route "
    "opened on 31 January 2021; applications cost £250, not £25.</p>"
)
STATEMENT_ATTACHMENT = {
    "url": "https://assets.publishing.service.gov.uk/bno-route-guidance.pdf",
    "title": "BN(O) route guidance",
    "fileType": "pdf",
}
UNNAMED_ANSWER = 1282231  # HL12808
WOLFSON = 4901
FEED_PATH = "/answers.rss"
# The feed takes the day's answers in the evening, at 19:15.
FEED_LAG = timedelta(hours=7, minutes=15)
FEED_SIZE = 15
FEED_LINK = "https://example.org/answers/{uin}"

_UNANSWERED: dict[str, Any] = {
    "answerIsHolding": None,
    "answerIsCorrection": None,
    "answeringMemberId": None,
    "answeringMember": None,
    "correctingMemberId": None,
    "correctingMember": None,
    "dateAnswered": None,
    "answerText": None,
    "originalAnswerText": "",
    "comparableAnswerText": "",
    "dateAnswerCorrected": None,
    "dateHoldingAnswer": None,
    "groupedQuestions": [],
    "groupedQuestionsDates": [],
    "attachmentCount": 0,
    "attachments": [],
}
_UNCORRECTED: dict[str, Any] = {
    "answerIsCorrection": False,
    "correctingMemberId": None,
    "correctingMember": None,
    "dateAnswerCorrected": None,
}
_HOLDING_TEXT = (
    "The {body} has indicated that it will not be possible to answer this question within the "
    "usual time period. An answer is being prepared and will be provided as soon as it is "
    "available."
)


def visible(day: date | None, moment: datetime) -> bool:
    """Whether something done on ``day`` could be seen at ``moment``."""
    return day is not None and datetime.combine(day, VISIBLE_AT, UTC) <= moment


def _day(value: Any) -> date | None:
    return date.fromisoformat(str(value)[:10]) if value else None


def recorded_questions() -> dict[int, Record]:
    """Every recorded question by id: the answers of 1 Feb 2021 and the questions tabled then."""
    records = {r["id"]: r for r in load_2021_answered()}
    records.update((r["id"], r) for r in load_2021_tabled())
    records[UNNAMED_ANSWER] = {**records[UNNAMED_ANSWER], "answeringMember": None}
    return records


def question_as_of(record: Mapping[str, Any], moment: datetime) -> Record:
    """The record as the API showed it at ``moment``."""
    value = copy.deepcopy(dict(record))
    if value["id"] == HODGSON_WITHDRAWN and visible(WITHDRAWN_ON, moment):
        value["isWithdrawn"] = True
    answered, holding = _day(value["dateAnswered"]), _day(value["dateHoldingAnswer"])
    if visible(answered, moment):
        if not visible(_day(value["dateAnswerCorrected"]), moment):
            value.update(_UNCORRECTED)
        return value
    if visible(holding, moment):
        text = _HOLDING_TEXT.format(body=value["answeringBodyName"])
        value.update(_UNCORRECTED)
        value.update(answerIsHolding=True, dateAnswered=value["dateHoldingAnswer"])
        value.update(answerText=text, groupedQuestions=[], groupedQuestionsDates=[])
        return value
    value.update(copy.deepcopy(_UNANSWERED))
    return value


def questions_as_of(moment: datetime) -> list[Record]:
    return [question_as_of(record, moment) for record in recorded_questions().values()]


def statements_as_of(moment: datetime) -> list[Record]:
    """The statements of 1 Feb 2021 as the API showed them at ``moment``."""
    statements = []
    for record in load_2021_statements():
        if not visible(_day(record["dateMade"]), moment):
            continue
        if record["id"] == HONG_KONG_HC:
            record["attachments"] = [dict(STATEMENT_ATTACHMENT)]
            record["linkedStatements"] = [
                {"linkedStatementId": HONG_KONG_HL, "linkType": "JointStatement", "linkDate": None}
            ]
            if visible(STATEMENT_CORRECTED_ON, moment):
                record["text"] = CORRECTED_STATEMENT_TEXT
        statements.append(record)
    return statements


def members() -> list[Record]:
    """The Members API's records: the three recorded ones, and the Member given by id only."""
    recorded = next(r for r in load_2021_tabled() if r["id"] == UNNAMED_ANSWER)
    return [*load_member_sample(), member_search_item(recorded["answeringMember"], "Lords")]


def feed_body(moment: datetime) -> bytes:
    """An RSS 2.0 feed of the latest answers at ``moment`` (not holding ones; a day's from
    19:15), newest first, each entry a recorded answer: its heading, question and UIN."""
    records = questions_as_of(moment - FEED_LAG)
    shown = [r for r in records if r["dateAnswered"] and not r["answerIsHolding"]]
    shown.sort(key=lambda r: (str(r["dateAnswered"]), r["id"]), reverse=True)
    items = "".join(
        "<item>"
        f"<title>{escape(r['heading'])}</title>"
        f"<link>{FEED_LINK.format(uin=r['uin'])}</link>"
        f'<guid isPermaLink="false">wq-{r["id"]}</guid>'
        f"<description>{escape('<p>' + r['questionText'] + '</p>')}</description>"
        f"<pubDate>{format_datetime(_published(r))}</pubDate>"
        "</item>"
        for r in shown[:FEED_SIZE]
    )
    return (
        '<?xml version="1.0" encoding="utf-8"?><rss version="2.0"><channel>'
        "<title>Written answers</title><link>https://example.org/</link>"
        f"<description>The latest written answers</description>{items}</channel></rss>"
    ).encode()


def _published(record: Mapping[str, Any]) -> datetime:
    answered = _day(record["dateAnswered"])
    assert answered is not None
    return datetime.combine(answered, VISIBLE_AT, UTC) - timedelta(hours=1)


def serve(api: StandinApi, feeds: FeedServer, moment: datetime) -> None:
    """The APIs and the feed as they stood at ``moment``."""
    for record in questions_as_of(moment):
        api.put(record)
    for statement in statements_as_of(moment):
        api.put_statement(statement)
    feeds.serve(FEED_PATH, Route(feed_body(moment)))


def dumped(value: Any) -> Any:
    """A column's value as release_db.json.gz holds it: dates and times ISO (times in UTC,
    without a zone, as stored), bytes base64, the rest as it is."""
    if isinstance(value, datetime):
        utc = value if value.tzinfo is None else value.astimezone(UTC).replace(tzinfo=None)
        return utc.isoformat()
    if isinstance(value, date):
        return value.isoformat()
    if isinstance(value, bytes):
        return base64.b64encode(value).decode()
    return value
