"""A local HTTP stand-in for the Parliament Written Questions, Written Statements and Members
APIs, with faults."""

from __future__ import annotations

import contextlib
import copy
import hashlib
import html
import json
import re
import socket
import sqlite3
import sys
import threading
from collections.abc import Callable, Iterable, Mapping
from dataclasses import dataclass
from datetime import date
from http.server import BaseHTTPRequestHandler, ThreadingHTTPServer
from pathlib import Path
from types import TracebackType
from typing import Any, Literal, Self
from urllib.parse import parse_qs, urlsplit

from feed_server import gzip_bomb

FIXTURES_DIR = Path(__file__).parent / "fixtures"
ANSWERED_2021 = FIXTURES_DIR / "list_answered_2021-02-01_bicameral_expandMember.json"
TABLED_2021 = FIXTURES_DIR / "list_tabled_2021-02-01_bicameral_expandMember.json"
RESULTS_2024 = FIXTURES_DIR / "results_tabled_2024-08_commons_mysociety.json"
LONGFORM_2024 = FIXTURES_DIR / "longform_detail_texts_2024-08_mysociety.sqlite"
MEMBERS_SAMPLE = FIXTURES_DIR / "members_search_sample_snommoc.json"
STATEMENTS_2021 = FIXTURES_DIR / "list_made_2021-02-01_bicameral_expandMember.json"

LIST_PATH = "/api/writtenquestions/questions"
STATEMENTS_PATH = "/api/writtenstatements/statements"
MEMBERS_SEARCH_PATH = "/api/members/search"
MEMBERS_PATH = "/api/members"
LIST_TEXT_LIMIT = 255
DEFAULT_TAKE = 20
MEMBER_FIELDS = ("askingMember", "answeringMember", "correctingMember")
DATE_FILTERS = (
    ("answeredwhen", "dateAnswered"),
    ("correctedwhen", "dateAnswerCorrected"),
    ("tabledwhen", "dateTabled"),
    ("dateforanswerwhen", "dateForAnswer"),
)
FAULT_WORDS = (
    "hang",
    "delay",
    "broken_json",
    "truncated",
    "drop",
    "drip",
    "huge",
    "gzip_bomb",
    "redirect",
)
HUGE_BODY_BYTES = 200_000_000
TAG_RE = re.compile(r"<[^>]*>")
HTML_RE = re.compile(r"<[a-zA-Z][^>]*>")

FaultKind = (
    int
    | Literal[
        "hang", "delay", "broken_json", "truncated", "drop", "drip", "huge", "gzip_bomb", "redirect"
    ]
)
Route = Literal["list", "detail", "statements", "statement", "members", "other"]
Record = dict[str, Any]
Predicate = Callable[[Mapping[str, Any]], bool]


# ---------------------------------------------------------------------------------------------
# Fixture loaders


def _read_json(path: Path) -> Any:
    return json.loads(path.read_bytes())


def load_2021_answered() -> list[Record]:
    """The 469 answers of 1 Feb 2021 (members expanded; list texts, cut at 255 characters)."""
    return [item["value"] for item in _read_json(ANSWERED_2021)["results"]]


def load_2021_tabled() -> list[Record]:
    """The 520 questions tabled on 1 Feb 2021 (7 unanswered, 4 corrected)."""
    return [item["value"] for item in _read_json(TABLED_2021)["results"]]


def load_2021_statements() -> list[Record]:
    """The 10 written statements made on 1 Feb 2021 (listed texts, cut at 255 characters)."""
    return [item["value"] for item in _read_json(STATEMENTS_2021)["results"]]


def load_longform_2024() -> dict[int, tuple[str, str]]:
    """Full ``(questionText, answerText HTML)`` by question id, from the detail endpoint."""
    uri = f"{LONGFORM_2024.as_uri()}?mode=ro&immutable=1"
    with contextlib.closing(sqlite3.connect(uri, uri=True)) as connection:
        rows = connection.execute("SELECT key, value FROM Dict").fetchall()
    texts: dict[int, tuple[str, str]] = {}
    for key, value in rows:
        data = json.loads(value)
        texts[int(key)] = (data["question_text"], data["answer_text"])
    return texts


def load_2024_records(*, full_text_only: bool = False) -> list[Record]:
    """The 1,004 Commons questions tabled in Aug 2024; 223 carry full texts (HTML answers).

    Records without a long-form entry keep their list texts (cut at 255 characters). With
    ``full_text_only`` only the 223 records with full texts are returned.
    """
    texts = load_longform_2024()
    records: list[Record] = []
    for item in _read_json(RESULTS_2024):
        value = dict(item["value"])
        full = texts.get(value["id"])
        if full is not None:
            value["questionText"], value["answerText"] = full
        elif full_text_only:
            continue
        records.append(value)
    return records


def load_member_sample() -> list[Record]:
    """The three real Members API search items (Starmer, Lord Aberconway, Baroness Mone)."""
    items: list[Record] = _read_json(MEMBERS_SAMPLE)["items"]
    return items


DATASETS: dict[str, Callable[[], list[Record]]] = {
    "answered_2021": load_2021_answered,
    "tabled_2021": load_2021_tabled,
    "2024": load_2024_records,
}


# ---------------------------------------------------------------------------------------------
# Views: what the list and detail endpoints show of a stored (full) record


def looks_like_html(text: str) -> bool:
    return HTML_RE.search(text) is not None


def list_view(record: Mapping[str, Any]) -> Record:
    """The record as the list endpoint shows it: texts cut, answer tags stripped."""
    value = dict(record)
    question = value.get("questionText")
    if isinstance(question, str):
        value["questionText"] = question[:LIST_TEXT_LIMIT]
    answer = value.get("answerText")
    if isinstance(answer, str):
        plain = TAG_RE.sub("", answer)
        cut = len(plain) > LIST_TEXT_LIMIT
        value["answerText"] = plain[:LIST_TEXT_LIMIT] + "..." if cut else plain
    return value


def detail_view(record: Mapping[str, Any]) -> Record:
    """The record as the detail endpoint shows it: full texts, plain answers wrapped in <p>."""
    value = dict(record)
    answer = value.get("answerText")
    if isinstance(answer, str) and answer and not looks_like_html(answer):
        paragraphs = [p.strip() for p in answer.split("\n") if p.strip()]
        value["answerText"] = "".join(f"<p>{html.escape(p, quote=False)}</p>" for p in paragraphs)
    return value


def statement_list_view(record: Mapping[str, Any]) -> Record:
    """A statement as the list shows it: text without tags cut at 255 characters plus "...",
    no attachments or linked statements (the real list leaves them empty)."""
    value = dict(record)
    text = value.get("text")
    if isinstance(text, str):
        plain = TAG_RE.sub("", text)
        value["text"] = plain[:LIST_TEXT_LIMIT] + "..." if len(plain) > LIST_TEXT_LIMIT else plain
    value["hasAttachments"] = bool(value.get("attachments"))
    value["hasLinkedStatements"] = bool(value.get("linkedStatements"))
    value["attachments"], value["linkedStatements"] = [], []
    return value


def _statement_item(value: Record, expand: bool) -> Record:
    if not expand:
        value["member"] = None
    return {
        "value": value,
        "links": [{"rel": "self", "href": f"/Statements/{value['id']}", "method": "GET"}],
    }


def _statement_filters(params: Params) -> list[Predicate]:
    """Predicates for the statements list. Raises ValueError for a bad parameter (400)."""
    predicates: list[Predicate] = []
    first, last = _date_param(params, "madewhenfrom"), _date_param(params, "madewhento")
    if first or last:
        predicates.append(_date_predicate("dateMade", first, last))
    house = _param(params, "house")
    if house and house.lower() != "bicameral":
        predicates.append(_house_predicate(house))
    uin = _param(params, "uin")
    if uin:
        predicates.append(lambda record: str(record.get("uin") or "").lower() == uin.lower())
    for name, field in (("answeringbodies", "answeringBodyId"), ("members", "memberId")):
        wanted = _int_set(params, name)
        if wanted:
            predicates.append(_field_in(field, wanted))
    return predicates


def _question_item(value: Record, expand: bool) -> Record:
    if not expand:
        for name in MEMBER_FIELDS:
            value[name] = None
    return {
        "value": value,
        "links": [{"rel": "self", "href": f"/Questions/{value['id']}", "method": "GET"}],
    }


def _member_links(member_id: int) -> list[Record]:
    return [
        {"rel": rel, "href": f"/Members/{member_id}{suffix}", "method": "GET"}
        for rel, suffix in (
            ("self", ""),
            ("overview", ""),
            ("synopsis", "/Synopsis"),
            ("contactInformation", "/Contact"),
        )
    ]


def member_search_item(member: Mapping[str, Any], house: str) -> Record:
    """A Members API search item built from a Questions API member object."""
    member_id = int(member["id"])
    value = {
        "id": member_id,
        "nameListAs": member.get("listAs"),
        "nameDisplayAs": member.get("name"),
        "nameFullTitle": member.get("name"),
        "nameAddressAs": None,
        "latestParty": {
            "id": None,
            "name": member.get("party"),
            "abbreviation": member.get("partyAbbreviation"),
            "backgroundColour": member.get("partyColour"),
            "foregroundColour": "ffffff",
            "isLordsMainParty": False,
            "isLordsSpiritualParty": False,
            "governmentType": None,
            "isIndependentParty": False,
        },
        "gender": None,
        "latestHouseMembership": {
            "membershipFrom": member.get("memberFrom"),
            "membershipFromId": None,
            "house": 2 if house == "Lords" else 1,
            "membershipStartDate": None,
            "membershipEndDate": None,
            "membershipEndReason": None,
            "membershipEndReasonNotes": None,
            "membershipEndReasonId": None,
            "membershipStatus": {
                "statusIsActive": True,
                "statusDescription": "Current Member",
                "statusNotes": None,
                "statusId": 0,
                "status": 0,
                "statusStartDate": None,
            },
        },
        "thumbnailUrl": member.get("thumbnailUrl")
        or f"https://members-api.parliament.uk/api/Members/{member_id}/Thumbnail",
    }
    return {"value": value, "links": _member_links(member_id)}


def _order_key(seed: int, question_id: int) -> bytes:
    # A stable order that is not the id order: the real API's order is undocumented.
    return hashlib.blake2b(f"{seed}:{question_id}".encode(), digest_size=8).digest()


# ---------------------------------------------------------------------------------------------
# Query parameters (ASP.NET binds names case-insensitively; keys are lower-cased here)

Params = dict[str, list[str]]


def _param(params: Params, name: str) -> str | None:
    values = params.get(name)
    return values[-1] if values else None


def _int_param(params: Params, name: str, default: int) -> int:
    raw = _param(params, name)
    if raw is None or raw == "":
        return default
    try:
        number = int(raw)
    except ValueError:
        raise ValueError(f"The value '{raw}' is not valid for {name}.") from None
    if number < 0:
        raise ValueError(f"{name} must be at least 0.")
    return number


def _flag(params: Params, name: str) -> bool:
    return (_param(params, name) or "").lower() == "true"


def _date_param(params: Params, name: str) -> str | None:
    raw = _param(params, name)
    if not raw:
        return None
    try:
        return date.fromisoformat(raw[:10]).isoformat()
    except ValueError:
        raise ValueError(f"The value '{raw}' is not valid for {name}.") from None


def _date_predicate(field: str, first: str | None, last: str | None) -> Predicate:
    def check(record: Mapping[str, Any]) -> bool:
        day = str(record.get(field) or "")[:10]
        if not day:
            return False
        return (first is None or day >= first) and (last is None or day <= last)

    return check


def _house_predicate(house: str) -> Predicate:
    wanted = house.lower()
    if wanted not in ("commons", "lords"):
        raise ValueError(f"The value '{house}' is not valid for house.")
    return lambda record: str(record.get("house") or "").lower() == wanted


def _answered_predicate(answered: str) -> Predicate:
    wanted = answered.lower()
    if wanted not in ("answered", "unanswered"):
        raise ValueError(f"The value '{answered}' is not valid for answered.")
    return lambda record: (record.get("dateAnswered") is not None) == (wanted == "answered")


def _field_in(field: str, values: set[int]) -> Predicate:
    return lambda record: record.get(field) in values


def _search_predicate(term: str) -> Predicate:
    needle = term.lower()

    def check(record: Mapping[str, Any]) -> bool:
        texts = (record.get(k) for k in ("questionText", "answerText", "heading"))
        return any(needle in str(text or "").lower() for text in texts)

    return check


def _int_set(params: Params, name: str) -> set[int]:
    try:
        return {int(v) for v in params.get(name, []) if v != ""}
    except ValueError:
        raise ValueError(f"A value is not valid for {name}.") from None


def _id_predicates(params: Params) -> list[Predicate]:
    predicates: list[Predicate] = []
    for name, field in (
        ("askingmemberid", "askingMemberId"),
        ("answeringmemberid", "answeringMemberId"),
        ("answeringbodies", "answeringBodyId"),
    ):
        wanted = _int_set(params, name)
        if wanted:
            predicates.append(_field_in(field, wanted))
    return predicates


def list_filters(params: Params) -> list[Predicate]:
    """Predicates for the list query. Raises ValueError for a bad parameter (HTTP 400)."""
    predicates: list[Predicate] = []
    for prefix, field in DATE_FILTERS:
        first = _date_param(params, prefix + "from")
        last = _date_param(params, prefix + "to")
        if first or last:
            predicates.append(_date_predicate(field, first, last))
    house = _param(params, "house")
    if house and house.lower() != "bicameral":
        predicates.append(_house_predicate(house))
    answered = _param(params, "answered")
    if answered and answered.lower() != "any":
        predicates.append(_answered_predicate(answered))
    uin = _param(params, "uin")
    if uin:
        predicates.append(lambda record: str(record.get("uin") or "").lower() == uin.lower())
    term = _param(params, "searchterm")
    if term:
        predicates.append(_search_predicate(term))
    return predicates + _id_predicates(params)


# ---------------------------------------------------------------------------------------------
# Fault rules


@dataclass
class FaultRule:
    """A server-side fault for matching requests.

    kind: an HTTP status (500, 503, 429, 404, ...), or
      "hang": no response for ``seconds`` (default: the server's ``hang_seconds``), or until
        stop(); then the connection is closed without a response;
      "delay": wait ``seconds`` (default 1), then answer normally;
      "broken_json": HTTP 200 with a complete, declared-length body that is not valid JSON;
      "truncated": Content-Length of the full body, only half of it sent, then closed;
      "drop": the connection is closed without any response;
      "drip": the answer's body one byte every ``seconds`` (default 2), its length declared;
      "huge": HTTP 200 with a 200 MB JSON body (spaces after the answer), streamed;
      "gzip_bomb": HTTP 200, Content-Encoding gzip: 400 KB that decode to 400 MB of zeros;
      "redirect": HTTP 302 to ``location``.
    target: "any", "list", "detail", "statements" (the statements list), "statement" (a
      statement's detail), "members", or a path prefix starting with "/"
      (case-insensitive, matched against the path without the query).
    skip: only list requests (questions or statements) with this ``skip`` value (a missing
      skip counts as 0).
    count: how many matching requests fail; None for every one.
    retry_after: sent as a Retry-After header with a status-code fault.
    hits: how many requests this rule has failed so far.
    """

    kind: FaultKind
    target: str = "any"
    skip: int | None = None
    count: int | None = 1
    seconds: float | None = None
    retry_after: int | None = None
    hits: int = 0
    location: str | None = None

    def __post_init__(self) -> None:
        valid_status = isinstance(self.kind, int) and 100 <= self.kind <= 599
        if not valid_status and self.kind not in FAULT_WORDS:
            raise ValueError(f"unknown fault kind {self.kind!r}")
        if not self.target.startswith("/") and self.target not in (
            "any",
            "list",
            "detail",
            "statements",
            "statement",
            "members",
        ):
            raise ValueError(f"unknown fault target {self.target!r}")

    @property
    def spent(self) -> bool:
        return self.count is not None and self.hits >= self.count

    def matches(self, route: Route, path: str, skip: int | None) -> bool:
        if self.spent:
            return False
        if self.target.startswith("/"):
            hit = path.lower().startswith(self.target.lower())
        else:
            hit = self.target in ("any", route)
        return hit and (self.skip is None or self.skip == skip)


def _route(path: str) -> Route:
    lowered = path.rstrip("/").lower()
    if lowered == LIST_PATH:
        return "list"
    if lowered.startswith(LIST_PATH + "/"):
        return "detail"
    if lowered == STATEMENTS_PATH:
        return "statements"
    if lowered.startswith(STATEMENTS_PATH + "/"):
        return "statement"
    if lowered == MEMBERS_SEARCH_PATH:
        return "members"
    if lowered.startswith(MEMBERS_PATH + "/") and lowered[len(MEMBERS_PATH) + 1 :].isdigit():
        return "members"  # one Member by id
    return "other"


def _problem(status: int, title: str, detail: str | None = None) -> Record:
    body: Record = {
        "type": f"https://tools.ietf.org/html/rfc9110#status.{status}",
        "title": title,
        "status": status,
    }
    if detail:
        body["detail"] = detail
    return body


def _encode(body: Any) -> bytes:
    return json.dumps(body, ensure_ascii=False, separators=(",", ":")).encode("utf-8")


@dataclass
class _Response:
    status: int
    body: bytes
    content_type: str = "application/json; charset=utf-8"


def _json_response(status: int, body: Any) -> _Response:
    return _Response(status, _encode(body))


def _status_response(status: int) -> _Response:
    titles = {404: "Not Found", 429: "Too Many Requests", 400: "Bad Request"}
    if status < 500 and status in titles:
        problem = _encode(_problem(status, titles[status]))
        return _Response(status, problem, "application/problem+json")
    page = f"<html><head><title>{status} Error</title></head><body><h1>{status}</h1></body></html>"
    return _Response(status, page.encode(), "text/html; charset=utf-8")


# ---------------------------------------------------------------------------------------------
# The server


class _Server(ThreadingHTTPServer):
    daemon_threads = True

    def __init__(self, api: StandinApi, host: str) -> None:
        self.api = api
        self.live: set[socket.socket] = set()
        self.live_lock = threading.Lock()
        super().__init__((host, 0), _Handler)

    def process_request(self, request: Any, client_address: Any) -> None:
        with self.live_lock:
            self.live.add(request)
        super().process_request(request, client_address)

    def shutdown_request(self, request: Any) -> None:
        with self.live_lock:
            self.live.discard(request)
        super().shutdown_request(request)

    def handle_error(self, request: Any, client_address: Any) -> None:
        if isinstance(sys.exc_info()[1], (ConnectionError, TimeoutError)):
            return  # the client went away (e.g. after its own timeout): not a server bug
        super().handle_error(request, client_address)

    def close_live_connections(self) -> None:
        with self.live_lock:
            live = list(self.live)
        for sock in live:
            with contextlib.suppress(OSError):
                sock.shutdown(socket.SHUT_RDWR)


class _Handler(BaseHTTPRequestHandler):
    protocol_version = "HTTP/1.1"
    server_version = "standin-parliament-api/1.0"
    timeout = 60  # idle keep-alive connections are closed after this
    # Headers and body go out in separate writes: without TCP_NODELAY, Nagle's algorithm and
    # the client's delayed ACK add ~40 ms to every keep-alive request.
    disable_nagle_algorithm = True
    server: _Server

    def do_GET(self) -> None:
        self.server.api._handle(self)

    def log_message(self, format: str, *args: Any) -> None:
        pass  # requests are recorded in StandinApi.requests instead

    def send_body(self, response: _Response, *, declared: int | None = None) -> None:
        self.send_response(response.status)
        self.send_header("Content-Type", response.content_type)
        self.send_header("Content-Length", str(declared or len(response.body)))
        self.send_header("Cache-Control", "public,max-age=30")
        self.end_headers()
        self.wfile.write(response.body)


class StandinApi:
    """A real HTTP server on 127.0.0.1 (ephemeral port) serving Written Questions records.

    Endpoints: ``GET /api/writtenquestions/questions`` (filters, skip/take paging, list texts
    cut at 255 characters), ``GET /api/writtenquestions/questions/{id}`` and ``.../{date}/{uin}``
    (full record, HTML answer), ``GET /api/Members/Search?Name=`` and ``GET /api/Members/{id}``
    (members seen in records plus any given: a record whose member objects are removed still
    names its Members here, as the real Members API does),
    ``GET /api/writtenstatements/statements`` (madeWhen, house, uin, answeringBodies, members
    filters, paging) and ``.../{id}``, ``.../{date}/{uin}`` (whole statement with attachments
    and links). Records are the API's ``value`` objects, stored with their full texts;
    statements are kept apart from questions (``statements=`` / ``put_statement``).
    """

    def __init__(
        self,
        records: Iterable[Mapping[str, Any]] = (),
        *,
        members: Iterable[Mapping[str, Any]] = (),
        statements: Iterable[Mapping[str, Any]] = (),
        seed: int = 20210201,
        hang_seconds: float = 30.0,
        host: str = "127.0.0.1",
    ) -> None:
        self.seed = seed
        self.hang_seconds = hang_seconds
        self.host = host
        self._lock = threading.RLock()
        self._records: dict[int, Record] = {}
        self._members: dict[int, Record] = {}
        self._statements: dict[int, Record] = {}
        self._faults: list[FaultRule] = []
        self._requests: list[tuple[str, str]] = []
        self._stopping = threading.Event()
        self._server: _Server | None = None
        self._thread: threading.Thread | None = None
        for record in records:
            self.put(record)
        for statement in statements:
            self.put_statement(statement)
        for item in members:
            self._members[int(item["value"]["id"])] = copy.deepcopy(dict(item))

    @classmethod
    def from_fixtures(cls, *datasets: str, **kwargs: Any) -> StandinApi:
        """A stand-in holding recorded data: "answered_2021" (default), "tabled_2021", "2024".

        Later datasets win on duplicate ids. The three real Members search items are included.
        """
        records: list[Record] = []
        for name in datasets or ("answered_2021",):
            records.extend(DATASETS[name]())
        kwargs.setdefault("members", load_member_sample())
        return cls(records, **kwargs)

    # -- lifecycle ------------------------------------------------------------------------------

    def start(self) -> Self:
        if self._server is not None:
            raise RuntimeError("already started")
        self._stopping.clear()
        self._server = _Server(self, self.host)
        self._thread = threading.Thread(
            target=self._server.serve_forever,
            kwargs={"poll_interval": 0.05},
            name="standin-api",
            daemon=True,
        )
        self._thread.start()
        return self

    def stop(self) -> None:
        """Stop serving, wake hanging handlers and close open connections. Idempotent."""
        server, thread = self._server, self._thread
        if server is None:
            return
        self._stopping.set()
        server.shutdown()
        server.close_live_connections()
        server.server_close()
        if thread is not None:
            thread.join(timeout=5)
        self._server = self._thread = None

    def __enter__(self) -> Self:
        return self.start() if self._server is None else self

    def __exit__(
        self,
        exc_type: type[BaseException] | None,
        exc: BaseException | None,
        tb: TracebackType | None,
    ) -> None:
        self.stop()

    @property
    def port(self) -> int:
        if self._server is None:
            raise RuntimeError("the stand-in API is not running")
        return int(self._server.server_address[1])

    @property
    def base_url(self) -> str:
        """E.g. ``http://127.0.0.1:54321`` (no trailing slash); serves both APIs."""
        return f"http://{self.host}:{self.port}"

    # -- records --------------------------------------------------------------------------------

    def put(self, record: Mapping[str, Any]) -> None:
        """Insert or replace a record (stored as a deep copy)."""
        stored = copy.deepcopy(dict(record))
        with self._lock:
            self._records[int(stored["id"])] = stored

    def add(self, record: Mapping[str, Any]) -> None:
        """Insert a new record. Raises ValueError if its id is already present."""
        with self._lock:
            if int(record["id"]) in self._records:
                raise ValueError(f"question {record['id']} already exists")
            self.put(record)

    def replace(self, record: Mapping[str, Any]) -> None:
        """Replace an existing record wholesale. Raises KeyError if its id is unknown."""
        with self._lock:
            if int(record["id"]) not in self._records:
                raise KeyError(record["id"])
            self.put(record)

    def update(self, question_id: int, **changes: Any) -> Record:
        """Change some fields of a record, e.g. ``answerIsHolding=False``; returns a copy."""
        with self._lock:
            record = {**self._records[question_id], **copy.deepcopy(changes)}
            self._records[question_id] = record
            return copy.deepcopy(record)

    def remove(self, question_id: int) -> None:
        with self._lock:
            del self._records[question_id]

    def get(self, question_id: int) -> Record | None:
        with self._lock:
            record = self._records.get(question_id)
            return copy.deepcopy(record) if record is not None else None

    def records(self) -> list[Record]:
        """Deep copies of all stored records, in id order."""
        with self._lock:
            return [copy.deepcopy(self._records[k]) for k in sorted(self._records)]

    def ids(self) -> set[int]:
        with self._lock:
            return set(self._records)

    def __len__(self) -> int:
        with self._lock:
            return len(self._records)

    # -- statements ------------------------------------------------------------------------------

    def put_statement(self, record: Mapping[str, Any]) -> None:
        """Insert or replace a written statement (stored as a deep copy)."""
        stored = copy.deepcopy(dict(record))
        with self._lock:
            self._statements[int(stored["id"])] = stored

    def update_statement(self, statement_id: int, **changes: Any) -> Record:
        """Change some fields of a statement, e.g. ``text="<p>…</p>"``; returns a copy."""
        with self._lock:
            record = {**self._statements[statement_id], **copy.deepcopy(changes)}
            self._statements[statement_id] = record
            return copy.deepcopy(record)

    def statements(self) -> list[Record]:
        """Deep copies of all stored statements, in id order."""
        with self._lock:
            return [copy.deepcopy(self._statements[k]) for k in sorted(self._statements)]

    # -- request log and faults -----------------------------------------------------------------

    @property
    def requests(self) -> list[tuple[str, str]]:
        """``(method, path_with_query)`` of every request received, oldest first."""
        with self._lock:
            return list(self._requests)

    def clear_requests(self) -> None:
        with self._lock:
            self._requests.clear()

    def fail_next(
        self,
        target: str,
        kind: FaultKind,
        count: int | None = 1,
        *,
        skip: int | None = None,
        seconds: float | None = None,
        retry_after: int | None = None,
        location: str | None = None,
    ) -> FaultRule:
        """Fail the next ``count`` requests matching ``target`` (see FaultRule); returns it."""
        rule = FaultRule(kind, target, skip, count, seconds, retry_after, location=location)
        return self.add_fault(rule)

    def add_fault(self, rule: FaultRule) -> FaultRule:
        with self._lock:
            self._faults.append(rule)
        return rule

    def clear_faults(self) -> None:
        with self._lock:
            self._faults.clear()

    @property
    def faults(self) -> list[FaultRule]:
        with self._lock:
            return list(self._faults)

    def _take_fault(self, route: Route, path: str, skip: int | None) -> FaultRule | None:
        with self._lock:
            for rule in self._faults:
                if rule.matches(route, path, skip):
                    rule.hits += 1
                    return rule
        return None

    # -- request handling -----------------------------------------------------------------------

    def _handle(self, handler: _Handler) -> None:
        parts = urlsplit(handler.path)
        params: Params = {
            k.lower(): v for k, v in parse_qs(parts.query, keep_blank_values=True).items()
        }
        route = _route(parts.path)
        with self._lock:
            self._requests.append((handler.command, handler.path))
        rule = self._take_fault(route, parts.path, self._listing_skip(route, parts.path, params))
        if rule is not None and rule.kind == "delay":
            self._stopping.wait(rule.seconds if rule.seconds is not None else 1.0)
            rule = None
        response = self._respond(route, parts.path, params)
        if rule is None:
            handler.send_body(response)
        else:
            self._apply_fault(handler, rule, response)

    def _listing_skip(self, route: Route, path: str, params: Params) -> int | None:
        """The ``skip`` of a listing request (questions or statements), for faults by page."""
        if route in ("list", "statements"):
            with contextlib.suppress(ValueError):
                return _int_param(params, "skip", 0)
        return None

    def _apply_fault(self, handler: _Handler, rule: FaultRule, response: _Response) -> None:
        if isinstance(rule.kind, int):
            failure = _status_response(rule.kind)
            handler.send_response(failure.status)
            if rule.retry_after is not None:
                handler.send_header("Retry-After", str(rule.retry_after))
            handler.send_header("Content-Type", failure.content_type)
            handler.send_header("Content-Length", str(len(failure.body)))
            handler.end_headers()
            handler.wfile.write(failure.body)
            return
        handler.close_connection = True
        if rule.kind == "hang":
            self._stopping.wait(rule.seconds if rule.seconds is not None else self.hang_seconds)
        elif rule.kind == "broken_json":
            handler.send_body(_Response(200, _half(response.body)))
        elif rule.kind == "truncated":
            body = response.body
            handler.send_body(_Response(200, _half(body)), declared=len(body))
        elif rule.kind in ("drip", "huge", "gzip_bomb", "redirect"):
            with contextlib.suppress(ConnectionError):
                self._hostile(handler, rule, response)
        # "drop" (and "hang" afterwards): close without sending anything

    def _hostile(self, handler: _Handler, rule: FaultRule, response: _Response) -> None:
        if rule.kind == "redirect":
            handler.send_response(302)
            handler.send_header("Location", rule.location or "/")
            handler.send_header("Content-Length", "0")
            handler.end_headers()
            return
        handler.send_response(200)
        handler.send_header("Content-Type", response.content_type)
        if rule.kind == "drip":
            handler.send_header("Content-Length", str(len(response.body)))
            handler.end_headers()
            for byte in response.body:
                if self._stopping.wait(rule.seconds if rule.seconds is not None else 2.0):
                    return
                handler.wfile.write(bytes([byte]))
                handler.wfile.flush()
        elif rule.kind == "huge":
            handler.send_header("Content-Length", str(HUGE_BODY_BYTES))
            handler.end_headers()
            handler.wfile.write(response.body)
            spaces = b" " * (1 << 20)
            sent = len(response.body)
            while sent < HUGE_BODY_BYTES and not self._stopping.is_set():
                chunk = spaces[: HUGE_BODY_BYTES - sent]
                handler.wfile.write(chunk)
                sent += len(chunk)
        else:
            bomb = gzip_bomb()
            handler.send_header("Content-Encoding", "gzip")
            handler.send_header("Content-Length", str(len(bomb)))
            handler.end_headers()
            handler.wfile.write(bomb)

    def _respond(self, route: Route, path: str, params: Params) -> _Response:
        try:
            if route == "list":
                return self._list(params)
            if route == "detail":
                return self._detail(path, params)
            if route == "statements":
                return self._statements_list(params)
            if route == "statement":
                return self._statement_detail(path, params)
            if route == "members" and path.rstrip("/").lower() == MEMBERS_SEARCH_PATH:
                return self._members_search(params)
            if route == "members":
                return self._member(int(path.rstrip("/").rsplit("/", 1)[1]))
        except ValueError as exc:
            return _json_response(400, _problem(400, "Bad Request", str(exc)))
        return _status_response(404)

    def _ordered(self) -> list[Record]:
        with self._lock:
            values = list(self._records.values())
        return sorted(values, key=lambda r: _order_key(self.seed, int(r["id"])))

    def _list(self, params: Params) -> _Response:
        take = _int_param(params, "take", DEFAULT_TAKE)
        skip = _int_param(params, "skip", 0)
        predicates = list_filters(params)
        expand = _flag(params, "expandmember")
        matched = [r for r in self._ordered() if all(p(r) for p in predicates)]
        results = [_question_item(list_view(r), expand) for r in matched[skip : skip + take]]
        return _json_response(200, {"totalResults": len(matched), "results": results})

    def _find(self, segments: list[str]) -> Record | None:
        with self._lock:
            if len(segments) == 1 and segments[0].isdigit():
                return self._records.get(int(segments[0]))
            if len(segments) == 2:
                day, uin = segments[0][:10], segments[1].lower()
                for record in self._records.values():
                    tabled = str(record.get("dateTabled") or "")[:10]
                    if tabled == day and str(record.get("uin") or "").lower() == uin:
                        return record
        return None

    def _detail(self, path: str, params: Params) -> _Response:
        segments = path.rstrip("/")[len(LIST_PATH) + 1 :].split("/")
        record = self._find(segments)
        if record is None:
            return _status_response(404)
        item = _question_item(detail_view(record), _flag(params, "expandmember"))
        return _json_response(200, item)

    def _statements_list(self, params: Params) -> _Response:
        take = _int_param(params, "take", DEFAULT_TAKE)
        skip = _int_param(params, "skip", 0)
        predicates = _statement_filters(params)
        expand = _flag(params, "expandmember")
        with self._lock:
            values = list(self._statements.values())
        ordered = sorted(values, key=lambda r: _order_key(self.seed, int(r["id"])))
        matched = [r for r in ordered if all(p(r) for p in predicates)]
        results = [
            _statement_item(statement_list_view(r), expand) for r in matched[skip : skip + take]
        ]
        return _json_response(200, {"totalResults": len(matched), "results": results})

    def _statement_detail(self, path: str, params: Params) -> _Response:
        segments = path.rstrip("/")[len(STATEMENTS_PATH) + 1 :].split("/")
        record: Record | None = None
        with self._lock:
            if len(segments) == 1 and segments[0].isdigit():
                record = self._statements.get(int(segments[0]))
            elif len(segments) == 2:
                day, uin = segments[0][:10], segments[1].lower()
                record = next(
                    (
                        r
                        for r in self._statements.values()
                        if str(r.get("dateMade") or "")[:10] == day
                        and str(r.get("uin") or "").lower() == uin
                    ),
                    None,
                )
            record = copy.deepcopy(record)
        if record is None:
            return _status_response(404)
        return _json_response(200, _statement_item(record, _flag(params, "expandmember")))

    def _all_members(self) -> list[Record]:
        with self._lock:
            found = dict(self._members)
            records = list(self._records.values())
        for record in records:
            for name in MEMBER_FIELDS:
                member = record.get(name)
                if isinstance(member, Mapping) and isinstance(member.get("id"), int):
                    found.setdefault(member["id"], member_search_item(member, record["house"]))
        return sorted(
            found.values(), key=lambda i: (str(i["value"]["nameListAs"]), i["value"]["id"])
        )

    def _member(self, member_id: int) -> _Response:
        """``GET /api/Members/{id}``: ``{"value": {...}, "links": [...]}`` as the real API."""
        found = [i for i in self._all_members() if i["value"]["id"] == member_id]
        if not found:
            return _status_response(404)
        return _json_response(200, copy.deepcopy(found[0]))

    def _members_search(self, params: Params) -> _Response:
        take = _int_param(params, "take", DEFAULT_TAKE)
        skip = _int_param(params, "skip", 0)
        name = (_param(params, "name") or "").lower()
        matched = [
            item
            for item in self._all_members()
            if name in str(item["value"]["nameDisplayAs"]).lower()
            or name in str(item["value"]["nameListAs"]).lower()
        ]
        page = f"/Members/Search?skip={skip}&take={take}"
        body = {
            "items": copy.deepcopy(matched[skip : skip + take]),
            "totalResults": len(matched),
            "resultContext": "",
            "skip": skip,
            "take": take,
            "links": [
                {"rel": "self", "href": page, "method": "GET"},
                {
                    "rel": "page.next",
                    "href": f"/Members/Search?skip={skip + take}&take={take}",
                    "method": "GET",
                },
                {
                    "rel": "page.previous",
                    "href": f"/Members/Search?skip={max(skip - take, 0)}&take={take}",
                    "method": "GET",
                },
            ],
        }
        return _json_response(200, body)


def _half(body: bytes) -> bytes:
    """A prefix of a JSON body that is never valid JSON on its own."""
    return body[: max(len(body) // 2, 1)] if len(body) > 1 else b"{"
