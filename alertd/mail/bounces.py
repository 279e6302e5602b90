"""Bounces and complaints: one delivery report (RFC 3464) or abuse report (RFC 5965) acted on."""

from __future__ import annotations

import logging
from collections.abc import Iterable, Iterator, Sequence
from dataclasses import dataclass
from datetime import datetime
from email.message import EmailMessage, Message
from email.parser import BytesParser
from email.policy import default
from email.utils import getaddresses
from enum import StrEnum

from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import Settings
from alertd.errors import NotOurs, ReportUnreadable
from alertd.mail.identity import VerpTag, read_verp_tag
from alertd.models import Outbox, OutboxKind, Subscriber
from alertd.subscriptions.lifecycle import record_bounce, suspend

log = logging.getLogger("alertd.mail.bounces")
# ARF feedback types that are a recipient's complaint (RFC 5965 §7.3); "not-spam" and
# "virus" are not, and are only logged.
COMPLAINTS = frozenset({"abuse", "fraud"})


class Verdict(StrEnum):
    """What a report said, and so what was done."""

    # Action: failed: the message can never be delivered; a bounce is counted.
    HARD_BOUNCE = "hard bounce"
    # Action: delayed (or delivered, relayed, expanded): nothing to do.
    NO_FAILURE = "no failure"
    # An ARF complaint (abuse, fraud): about a digest, the subscriber is suspended at once;
    # about a transactional mail (which anyone can have sent to any address), nothing.
    COMPLAINT = "complaint"
    # An ARF report of another type (not-spam, virus, other): logged only.
    OTHER_FEEDBACK = "other feedback"


@dataclass(frozen=True)
class Report:
    """What alertd reads from one report."""

    verdict: Verdict
    # Where a VERP tag may be, in the order tried: the address it was delivered to, the
    # reported mail's envelope sender (Original-Mail-From, X-Postfix-Sender), its Return-Path.
    addressed_to: tuple[str, ...]
    # The Message-ID of the mail it reports on, when the report quotes its headers.
    original_message_id: str | None
    # "5.1.1 (smtp; 550 5.1.1 No such user)", "abuse": for the log.
    detail: str


@dataclass(frozen=True)
class Outcome:
    """What ``handle_report`` did, said in one line by ``str()``."""

    subscriber_id: int
    verdict: Verdict
    action: str

    def __str__(self) -> str:
        return f"subscriber {self.subscriber_id}: {self.verdict}: {self.action}"


def read_report(raw: bytes, recipient: str | None = None) -> Report:
    """Read a DSN or an ARF report; ``recipient`` is the address the MTA delivered it to.

    Raises:
        ReportUnreadable: it is neither, or its report part is missing or malformed.
    """
    try:
        return _read_report(raw, recipient)
    except ReportUnreadable:
        raise
    except Exception as exc:
        # The email package raises many kinds on broken input, some only when a header or
        # a part is read: whatever it raises, the message is no report we can read.
        raise ReportUnreadable(f"unparsable message: {type(exc).__name__}: {exc}") from exc


def _read_report(raw: bytes, recipient: str | None) -> Report:
    message = BytesParser(policy=default).parsebytes(raw)
    if message.get_content_type() != "multipart/report":
        raise ReportUnreadable(
            f"not a delivery report or abuse report: Content-Type {message.get_content_type()}"
        )
    report_type = str(message.get_param("report-type", "", header="content-type")).lower()
    parts = list(message.iter_parts()) if isinstance(message, EmailMessage) else []
    original = _original(parts)
    addressed = [recipient] if recipient else []
    addressed += [
        str(value) for name in ("Delivered-To", "X-Original-To") for value in _all(message, name)
    ]
    if report_type == "delivery-status":
        verdict, detail, senders = _delivery_status(parts)
    elif report_type == "feedback-report":
        verdict, detail, senders = _feedback(parts)
    else:
        raise ReportUnreadable(
            f"not a delivery report or abuse report: report-type {report_type!r}"
        )
    # A feedback loop reports to the address registered with it, not to the envelope
    # sender: the VERP tag is then in Original-Mail-From, or the original's Return-Path.
    addressed += senders
    if original is not None:
        addressed += _all(original, "Return-Path")
    message_id = None if original is None else original.get("Message-ID")
    return Report(
        verdict,
        tuple(_addresses(addressed)),
        None if message_id is None else str(message_id).strip(),
        detail,
    )


def _all(message: Message, name: str) -> list[str]:
    return [str(value) for value in message.get_all(name, [])]


def _addresses(values: Iterable[str]) -> Iterator[str]:
    for _, address in getaddresses(list(values)):
        if address:
            yield address


def _original(parts: Sequence[Message]) -> Message | None:
    """The reported message (or its headers), the report's third part."""
    for part in parts[1:]:
        kind = part.get_content_type()
        if kind == "text/rfc822-headers":
            text = part.get_payload(decode=True)
            if isinstance(text, bytes):
                return BytesParser(policy=default).parsebytes(text, headersonly=True)
        elif kind == "message/rfc822":
            payload = part.get_payload()
            if isinstance(payload, list) and payload and isinstance(payload[0], Message):
                return payload[0]
    return None


def _fields(parts: Sequence[Message], content_type: str) -> list[Message]:
    """The field groups of a report part (message/delivery-status: per message, then per
    recipient; message/feedback-report: one)."""
    for part in parts:
        if part.get_content_type() == content_type:
            payload = part.get_payload()
            if isinstance(payload, list):
                return [group for group in payload if isinstance(group, Message)]
            if isinstance(payload, str):
                # Some generators send the fields base64- or QP-encoded: read them again.
                data = part.get_payload(decode=True)
                text = data.decode("utf-8", "replace") if isinstance(data, bytes) else payload
                return [
                    BytesParser(policy=default).parsebytes(block.encode(), headersonly=True)
                    for block in text.replace("\r\n", "\n").split("\n\n")
                    if block.strip()
                ]
    raise ReportUnreadable(f"a multipart/report without its {content_type} part")


def _typed(values: Iterable[str]) -> list[str]:
    """``rfc822; someone@example.org`` (RFC 3464 address fields) without its type."""
    return [value.rpartition(";")[2].strip() for value in values]


def _delivery_status(parts: Sequence[Message]) -> tuple[Verdict, str, list[str]]:
    groups = _fields(parts, "message/delivery-status")
    # Postfix names the envelope sender of the bounced mail (a non-standard field).
    senders = _typed(_all(groups[0], "X-Postfix-Sender")) if groups else []
    recipients = [group for group in groups[1:] if group.get("Action")]
    if not recipients:
        raise ReportUnreadable("a delivery status notification with no recipient's Action")
    for group in recipients:
        if str(group.get("Action", "")).strip().lower() == "failed":
            status = str(group.get("Status", "")).strip()
            diagnostic = " ".join(str(group.get("Diagnostic-Code", "")).split())
            detail = f"{status} ({diagnostic})" if diagnostic else status
            return Verdict.HARD_BOUNCE, detail, senders
    actions = ", ".join(str(group.get("Action", "")).strip().lower() for group in recipients)
    return Verdict.NO_FAILURE, actions, senders


def _feedback(parts: Sequence[Message]) -> tuple[Verdict, str, list[str]]:
    groups = _fields(parts, "message/feedback-report")
    feedback_type = str(groups[0].get("Feedback-Type", "")).strip().lower() if groups else ""
    if not feedback_type:
        raise ReportUnreadable("an abuse report with no Feedback-Type")
    verdict = Verdict.COMPLAINT if feedback_type in COMPLAINTS else Verdict.OTHER_FEEDBACK
    return verdict, feedback_type, _all(groups[0], "Original-Mail-From")


def report_tag(settings: Settings, report: Report) -> VerpTag:
    """The VERP tag of ours the report carries: the first address with a valid one.

    Raises:
        NotOurs: none has one (mail.verp_address unset, or a forged or foreign address).
    """
    for address in report.addressed_to:
        tag = read_verp_tag(settings, address)
        if tag is not None:
            return tag
    # Cut: the addresses come from the report, which anyone can send.
    shown = (", ".join(report.addressed_to) or "no address")[:500]
    raise NotOurs(f"no valid VERP tag of {settings.mail.verp_address} in: {shown}")


def report_subscriber(settings: Settings, report: Report) -> int:
    """The subscriber the report is about (``report_tag``).

    Raises:
        NotOurs: the report carries no valid VERP tag of ours.
    """
    return report_tag(settings, report).subscriber_id


def handle_report(engine: Engine, settings: Settings, report: Report, now: datetime) -> Outcome:
    """Act on a report about a digest: count a hard bounce, or suspend the subscriber on a
    complaint. A report about a transactional mail changes nothing: anyone can have a
    confirmation or manage link sent to any address, and a complaint about it must not cost
    its owner their digests.

    Raises:
        NotOurs: the report is about no subscriber of ours.
        SQLAlchemyError: the database failed (the MTA should try again later).
    """
    tag = report_tag(settings, report)
    subscriber_id = tag.subscriber_id
    if report.verdict in (Verdict.NO_FAILURE, Verdict.OTHER_FEEDBACK):
        return Outcome(subscriber_id, report.verdict, f"nothing done ({report.detail})")
    with Session(engine) as session:
        if session.get(Subscriber, subscriber_id) is None:
            raise NotOurs(f"subscriber {subscriber_id} no longer exists")
        kind = tag.kind
        if kind == OutboxKind.DIGEST and report.original_message_id:
            # A transactional mail sent before its tag said so is still known by its
            # Message-ID, when the report quotes it.
            stored = session.exec(
                select(Outbox.kind).where(col(Outbox.message_id) == report.original_message_id)
            ).first()
            kind = kind if stored is None else OutboxKind(stored)
    if kind == OutboxKind.TRANSACTIONAL:
        # As when the server refuses one at once: says nothing about digests reaching them.
        what = "not counted" if report.verdict == Verdict.HARD_BOUNCE else "nothing suspended"
        if report.verdict == Verdict.COMPLAINT:
            log.warning(
                "subscriber %d complained of a transactional mail: nothing suspended",
                subscriber_id,
            )
        return Outcome(subscriber_id, report.verdict, f"a transactional mail: {what}")
    if report.verdict == Verdict.HARD_BOUNCE:
        count = record_bounce(engine, subscriber_id, settings.delivery.max_bounces, now)
        action = f"bounce counted ({count} of {settings.delivery.max_bounces} in a row)"
        return Outcome(subscriber_id, report.verdict, f"{action}; {report.detail}")
    if not suspend(engine, subscriber_id, now):
        return Outcome(subscriber_id, report.verdict, "already suspended")
    log.warning("suspended subscriber %d after an abuse complaint", subscriber_id)
    action = "suspended: no more digests until an alert is confirmed again"
    return Outcome(subscriber_id, report.verdict, action)
