"""Delivery: drain the outbox through SMTP (aiosmtplib) or into a Maildir, classifying failures."""

from __future__ import annotations

import asyncio
import logging
import mailbox
import random
import time
from dataclasses import dataclass, field
from datetime import datetime, timedelta
from pathlib import Path
from types import TracebackType
from typing import Protocol, Self

import aiosmtplib
from sqlalchemy.engine import Engine
from sqlmodel import Session, col, select

from alertd.config import DeliverySettings, SmtpSettings
from alertd.db import transaction
from alertd.errors import (
    AlertdError,
    DeliveryDeferred,
    DeliveryHalted,
    DeliveryRejected,
    MailServerUnavailable,
)
from alertd.models import Outbox, Subscriber

log = logging.getLogger("alertd.delivery")
FIRST_RETRY_S = 300.0
LONGEST_RETRY_S = 6 * 3600.0


class Mailer(Protocol):
    """Something that hands one message to one recipient, or raises a delivery error."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def send(self, sender: str, recipient: str, message: bytes) -> None: ...


class MaildirMailer:
    """Writes each message into a Maildir (atomically: tmp/ then new/); needs no mail server."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def __aenter__(self) -> Self:
        try:
            mailbox.Maildir(self.path, create=True)
        except OSError as exc:
            raise MailServerUnavailable(f"cannot create Maildir {self.path}: {exc}") from exc
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def send(self, sender: str, recipient: str, message: bytes) -> None:
        try:
            await asyncio.to_thread(self._write, message)
        except OSError as exc:
            raise MailServerUnavailable(f"cannot write to Maildir {self.path}: {exc}") from exc

    def _write(self, message: bytes) -> None:
        # Maildir files use the local line ending; the stored message uses SMTP's CRLF.
        mailbox.Maildir(self.path, create=True).add(message.replace(b"\r\n", b"\n"))


def _classify_code(code: int, text: str, where: str) -> AlertdError:
    if code in (530, 535, 534, 538) or (code >= 500 and " 5.7." in f" {text}"):
        return DeliveryHalted(f"{where} refused by policy or authentication: {code} {text}", code)
    if code == 552 or 400 <= code < 500:
        return DeliveryDeferred(f"{where} deferred: {code} {text}", code)
    return DeliveryRejected(f"{where} rejected: {code} {text}", code)


def classify_smtp_error(exc: aiosmtplib.SMTPException, host: str) -> AlertdError:
    """Map an aiosmtplib error to transient (retry), permanent (bounce) or halt (operator)."""
    where = f"SMTP {host}"
    if isinstance(exc, aiosmtplib.SMTPRecipientsRefused) and exc.recipients:
        refused = exc.recipients[0]
        return _classify_code(refused.code, refused.message, where)
    if isinstance(exc, aiosmtplib.SMTPAuthenticationError | aiosmtplib.SMTPSenderRefused):
        return DeliveryHalted(f"{where} refused us: {exc.code} {exc.message}", exc.code)
    if isinstance(exc, aiosmtplib.SMTPResponseException):
        return _classify_code(exc.code, exc.message, where)
    return DeliveryDeferred(f"{where}: {type(exc).__name__}: {exc}")


class SmtpMailer:
    """One SMTP connection reused for a batch, reopened after the server drops it."""

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: aiosmtplib.SMTP | None = None

    async def __aenter__(self) -> Self:
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        await self._close()

    async def _connect(self) -> aiosmtplib.SMTP:
        if self._smtp is not None and self._smtp.is_connected:
            return self._smtp
        s = self.settings
        smtp = aiosmtplib.SMTP(
            hostname=s.host,
            port=s.port,
            timeout=s.timeout_s,
            use_tls=s.tls == "implicit",
            start_tls=True if s.tls == "starttls" else False,
            username=s.username,
            password=s.password.get_secret_value() if s.password else None,
        )
        try:
            await smtp.connect()
        except aiosmtplib.SMTPAuthenticationError as exc:
            raise DeliveryHalted(f"SMTP {s.host}:{s.port} refused our login", exc.code) from exc
        except (aiosmtplib.SMTPException, OSError) as exc:
            raise MailServerUnavailable(f"cannot connect to SMTP {s.host}:{s.port}: {exc}") from exc
        self._smtp = smtp
        return smtp

    async def _close(self) -> None:
        smtp, self._smtp = self._smtp, None
        if smtp is not None and smtp.is_connected:
            try:
                await smtp.quit()
            except (aiosmtplib.SMTPException, OSError):
                smtp.close()

    async def send(self, sender: str, recipient: str, message: bytes) -> None:
        smtp = await self._connect()
        try:
            refused, _ = await smtp.sendmail(sender, [recipient], message)
        except aiosmtplib.SMTPException as exc:
            if not smtp.is_connected or isinstance(exc, aiosmtplib.SMTPServerDisconnected):
                self._smtp = None
            else:
                await _reset(smtp)
            raise classify_smtp_error(exc, self.settings.host) from exc
        except OSError as exc:
            self._smtp = None
            raise DeliveryDeferred(f"SMTP {self.settings.host}: {exc}") from exc
        # aiosmtplib reports partial refusals in its return value, not as an exception.
        if recipient in refused:
            response = refused[recipient]
            raise _classify_code(response.code, response.message, f"SMTP {self.settings.host}")


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()


@dataclass
class DeliveryReport:
    sent: int = 0
    deferred: int = 0
    rejected: int = 0
    halted: str | None = None
    errors: list[str] = field(default_factory=list)


def retry_delay(attempts: int, rng: random.Random) -> timedelta:
    """Exponential backoff with jitter: about 5 min, 10, 20 … capped at 6 h."""
    base = min(FIRST_RETRY_S * 2 ** max(attempts - 1, 0), LONGEST_RETRY_S)
    return timedelta(seconds=base * rng.uniform(0.8, 1.2))


async def drain_outbox(
    engine: Engine,
    mailer: Mailer,
    *,
    sender: str,
    settings: DeliverySettings,
    now: datetime,
    rng: random.Random | None = None,
) -> DeliveryReport:
    """Send every due outbox row once; each outcome is committed before the next send."""
    chance = rng or random.Random()
    report = DeliveryReport()
    with Session(engine) as session:
        due_ids = session.exec(
            select(Outbox.id)
            .where(col(Outbox.status).in_(["pending", "retry"]), Outbox.next_attempt_at <= now)
            .order_by(col(Outbox.id))
            .limit(settings.batch_size)
        ).all()
    if not due_ids:
        return report
    try:
        async with mailer:
            for outbox_id in due_ids:
                assert outbox_id is not None
                if not await _deliver_one(
                    engine, mailer, outbox_id, sender, settings, now, chance, report
                ):
                    break
    except MailServerUnavailable as exc:
        log.error("delivery stopped for this run: %s", exc)
        report.halted = str(exc)
    return report


async def _deliver_one(
    engine: Engine,
    mailer: Mailer,
    outbox_id: int,
    sender: str,
    settings: DeliverySettings,
    now: datetime,
    rng: random.Random,
    report: DeliveryReport,
) -> bool:
    """Send one row and record the outcome; False when the whole batch must stop."""
    with Session(engine) as session:
        row = session.get(Outbox, outbox_id)
        if row is None or row.status not in ("pending", "retry"):
            return True
        recipient, message = row.recipient, row.message
    started = time.monotonic()
    try:
        await mailer.send(sender, recipient, message)
    except (DeliveryHalted, MailServerUnavailable) as exc:
        log.error("delivery stopped for this run: %s", exc)
        report.halted = str(exc)
        return False
    except DeliveryDeferred as exc:
        _record_failure(engine, outbox_id, str(exc), settings, now, rng, permanent=False)
        report.deferred += 1
        report.errors.append(str(exc))
        log.warning(
            "%.2fs ✗ deferred outbox=%d to=%s: %s",
            time.monotonic() - started,
            outbox_id,
            recipient,
            exc,
        )
        return True
    except DeliveryRejected as exc:
        _record_failure(engine, outbox_id, str(exc), settings, now, rng, permanent=True)
        report.rejected += 1
        report.errors.append(str(exc))
        log.warning(
            "%.2fs ✗ rejected outbox=%d to=%s: %s",
            time.monotonic() - started,
            outbox_id,
            recipient,
            exc,
        )
        return True
    _record_sent(engine, outbox_id, now)
    report.sent += 1
    log.info("%.2fs ✓ sent outbox=%d to=%s", time.monotonic() - started, outbox_id, recipient)
    return True


def _record_sent(engine: Engine, outbox_id: int, now: datetime) -> None:
    with transaction(engine) as session:
        row = session.get(Outbox, outbox_id)
        assert row is not None
        row.status, row.sent_at, row.last_error = "sent", now, None
        row.attempts += 1
        subscriber = session.get(Subscriber, row.subscriber_id)
        if subscriber is not None:
            subscriber.consecutive_bounces = 0


def _record_failure(
    engine: Engine,
    outbox_id: int,
    error: str,
    settings: DeliverySettings,
    now: datetime,
    rng: random.Random,
    *,
    permanent: bool,
) -> None:
    with transaction(engine) as session:
        row = session.get(Outbox, outbox_id)
        assert row is not None
        row.attempts += 1
        row.last_error = error
        expired = now - row.created_at > timedelta(hours=settings.retry_for_hours)
        if permanent or expired:
            row.status = "dead"
            if permanent:
                _count_bounce(session, row.subscriber_id, settings, now)
        else:
            row.status = "retry"
            row.next_attempt_at = now + retry_delay(row.attempts, rng)


def _count_bounce(
    session: Session, subscriber_id: int, settings: DeliverySettings, now: datetime
) -> None:
    subscriber = session.get(Subscriber, subscriber_id)
    if subscriber is None:
        return
    subscriber.consecutive_bounces += 1
    if subscriber.consecutive_bounces >= settings.max_bounces and subscriber.suspended_at is None:
        subscriber.suspended_at = now
        log.warning("suspended %s after %d bounces", subscriber.email, settings.max_bounces)


def make_mailer(delivery: str, maildir: Path, smtp: SmtpSettings) -> Mailer:
    if delivery == "smtp":
        return SmtpMailer(smtp)
    return MaildirMailer(maildir)
