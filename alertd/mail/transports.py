"""Delivery: hand one message to SMTP (aiosmtplib) or a Maildir, and classify every failure."""

from __future__ import annotations

import asyncio
import logging
import mailbox
import os
from collections.abc import Callable
from pathlib import Path
from types import TracebackType
from typing import Any, Protocol, Self

import aiosmtplib

from alertd.config import SmtpSettings
from alertd.errors import (
    DeliveryDeferred,
    DeliveryHalted,
    DeliveryRejected,
    MailServerUnavailable,
    SmtpReplyError,
)

log = logging.getLogger("alertd.mail.transports")


class Mailer(Protocol):
    """Something that hands one message to one recipient, or raises a delivery error."""

    async def __aenter__(self) -> Self: ...

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None: ...

    async def send(self, sender: str, recipient: str, message: bytes) -> None: ...


class PrivateMaildir(mailbox.Maildir):
    """A Maildir whose messages (addresses, signed links) only their owner can read: files
    0600 whatever the umask; the folders are made 0700 by mailbox itself."""

    def _create_tmp(self) -> Any:
        created = super()._create_tmp()  # type: ignore[misc]
        os.fchmod(created.fileno(), 0o600)
        return created


class MaildirMailer:
    """Writes each message into a Maildir (atomically: tmp/ then new/); needs no mail server."""

    def __init__(self, path: Path) -> None:
        self.path = path

    async def __aenter__(self) -> Self:
        try:
            PrivateMaildir(self.path, create=True)
        except OSError as exc:
            raise MailServerUnavailable(f"cannot create Maildir {self.path}: {exc}") from exc
        return self

    async def __aexit__(
        self, kind: type[BaseException] | None, exc: BaseException | None, tb: TracebackType | None
    ) -> None:
        return None

    async def send(self, sender: str, recipient: str, message: bytes) -> None:
        try:
            await asyncio.to_thread(self._write, sender, message)
        except OSError as exc:
            raise MailServerUnavailable(f"cannot write to Maildir {self.path}: {exc}") from exc

    def _write(self, sender: str, message: bytes) -> None:
        # As an MTA's local delivery does, the envelope sender (where bounces go, the VERP
        # address) becomes the Return-Path, on top: outside the DKIM signature, which holds.
        delivered = f"Return-Path: <{sender}>\r\n".encode() + message
        # Maildir files use the local line ending; the stored message uses SMTP's CRLF.
        PrivateMaildir(self.path, create=True).add(delivered.replace(b"\r\n", b"\n"))


def _classify_code(code: int, text: str, where: str) -> SmtpReplyError:
    if code in (530, 535, 534, 538) or (code >= 500 and " 5.7." in f" {text}"):
        return DeliveryHalted(f"{where} refused by policy or authentication: {code} {text}", code)
    if code == 552 or 400 <= code < 500:
        return DeliveryDeferred(f"{where} deferred: {code} {text}", code)
    return DeliveryRejected(f"{where} rejected: {code} {text}", code)


def classify_smtp_error(exc: aiosmtplib.SMTPException, host: str) -> SmtpReplyError:
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
    """One SMTP connection reused for a batch, reopened after the server drops it.

    It is also reopened after ``smtp.messages_per_connection`` messages, before a relay that
    caps a session answers 421 and defers a digest.
    """

    def __init__(self, settings: SmtpSettings) -> None:
        self.settings = settings
        self._smtp: aiosmtplib.SMTP | None = None
        self._sent_on_connection = 0

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
        self._smtp, self._sent_on_connection = smtp, 0
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
        self._sent_on_connection += 1
        if self._sent_on_connection >= self.settings.messages_per_connection:
            await self._close()


async def _reset(smtp: aiosmtplib.SMTP) -> None:
    try:
        await smtp.rset()
    except (aiosmtplib.SMTPException, OSError):
        smtp.close()


MailerFactory = Callable[[], Mailer]


def mailer_factory(delivery: str, maildir: Path, smtp: SmtpSettings) -> MailerFactory:
    """Makes a new mailer per sending worker: each SMTP worker holds its own connection."""
    if delivery == "smtp":
        return lambda: SmtpMailer(smtp)
    return lambda: MaildirMailer(maildir)
