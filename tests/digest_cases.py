"""Digests made from real recorded questions by the real stages: store, match, compose."""

from __future__ import annotations

import re
from dataclasses import dataclass
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import sqlalchemy as sa
from sqlmodel import Session, select

from alertd.config import Settings
from alertd.db import open_database
from alertd.digests.compose import compose_due_digests
from alertd.digests.render import build_environment
from alertd.items import add_items
from alertd.kinds import statement, written_question
from alertd.kinds.kind import NewItem
from alertd.matching.hits import match_new_items
from alertd.models import Outbox, Subscriber
from alertd.subscriptions import lifecycle

from standin_api import (
    load_2021_answered,
    load_2021_statements,
    load_2021_tabled,
    load_2024_records,
)

# The 2021 answers were all answered on Monday 1 February 2021; the 2024 ones in September.
NOW = datetime(2021, 2, 1, 19, 0, tzinfo=UTC)
RECIPIENT = "parent@example.org"
CORRECTED_CARERS = 1282636  # "Carers: Coronavirus", tabled 1 Feb 2021, corrected on 19 Feb
GOLDEN_DIR = Path(__file__).parent / "golden"


@dataclass(frozen=True)
class Case:
    """One golden digest: which recorded answers, which alerts, how many shown per alert."""

    queries: tuple[str, ...]
    records: str
    max_per_alert: int
    # Also the written statements made on 1 Feb 2021.
    statements: bool = False


CASES = {
    # Full answer texts (HTML from the detail endpoint): excerpts cut around the match.
    "keyword": Case(('"special educational needs"',), "2024", 20),
    # Nadhim Zahawi answered 19 of the recorded answers: 5 shown, then "and 14 more".
    "member": Case(("member:4113",), "2021", 5),
    # An answer matching two alerts is shown once; a corrected answer is labelled.
    "mixed": Case(('"special educational needs"', "pupils", "member:4113", "carers"), "2021", 3),
    # Answers and statements under one alert (statements in their own group), a statements
    # only alert, and a questions-only alert that the "Design Update" statements must not reach.
    "statements": Case(
        ('"hong kong"', "trade type:statement", "design type:question"),
        "2021",
        3,
        statements=True,
    ),
}


def _items(records: str) -> list[NewItem]:
    if records == "2024":
        return [written_question.parse(r) for r in load_2024_records(full_text_only=True)]
    corrected = [r for r in load_2021_tabled() if r["id"] == CORRECTED_CARERS]
    return [written_question.parse(r) for r in [*load_2021_answered(), *corrected]]


def case_settings(tmp_path: Path, name: str, **digest: Any) -> Settings:
    """Settings for one case: its own SQLite file, fixed links and sender."""
    return Settings.model_validate(
        {
            "database": {"url": f"sqlite:///{tmp_path}/{name}.db"},
            "mail": {"from": "alerts@alertd.test", "maildir": str(tmp_path / "mail")},
            "web": {"base_url": "https://alerts.example.org", "secret_key": "test-secret"},
            "digest": {"max_per_alert": CASES[name].max_per_alert, **digest},
        }
    )


def compose_case(tmp_path: Path, name: str, settings: Settings | None = None) -> bytes:
    """The outbox bytes of the one digest the case's subscriber gets."""
    case = CASES[name]
    settings = settings or case_settings(tmp_path, name)
    engine = open_database(settings.database)
    try:
        confirmed = NOW - timedelta(hours=1)
        # Names (member:"Nadhim Zahawi") need the Member table; ids need nothing.
        for query in case.queries:
            lifecycle.subscribe(
                engine, RECIPIENT, query, "immediate", confirmed=True, now=confirmed
            )
        # A fixed link secret (each subscriber gets a random one): the links stay the same.
        with engine.begin() as connection:
            connection.execute(sa.update(Subscriber).values(link_secret="golden-link-secret"))
        add_items(engine, written_question.SOURCE, _items(case.records), now=NOW, today=NOW.date())
        if case.statements:
            statements = [statement.parse(r) for r in load_2021_statements()]
            add_items(engine, statement.SOURCE, statements, now=NOW, today=NOW.date())
        match_new_items(engine, now=NOW)
        assert compose_due_digests(engine, settings, build_environment(settings), now=NOW) == 1
        with Session(engine) as session:
            outbox = session.exec(select(Outbox)).one()
            return outbox.message
    finally:
        engine.dispose()


def mask(raw: bytes) -> str:
    """The message with what changes from run to run masked: Message-ID, Date, boundary."""
    text = raw.decode("ascii").replace("\r\n", "\n")
    found = re.search(r'boundary="([^"]+)"', text)
    assert found is not None
    text = text.replace(found.group(1), "BOUNDARY")
    text = re.sub(r"^Message-ID:.*(\n[ \t].*)*", "Message-ID: <MASKED>", text, flags=re.M)
    return re.sub(r"^Date:.*(\n[ \t].*)*", "Date: MASKED", text, flags=re.M)
