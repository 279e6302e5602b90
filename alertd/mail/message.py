"""One message builder: the MIME bytes of every email alertd sends."""

from __future__ import annotations

import binascii
import hashlib
from dataclasses import dataclass
from datetime import datetime
from email.headerregistry import Address
from email.policy import SMTP, EmailPolicy
from email.utils import format_datetime, make_msgid

from alertd.config import MailSettings
from alertd.errors import HeaderInjection
from alertd.mail.identity import sign_message

__all__ = ["MailingList", "build_message", "new_message_id"]


_UNFOLDED = SMTP.clone(max_line_length=998)


class _WirePolicy(EmailPolicy):
    """SMTP's policy, but links and ASCII subjects are never folded.

    Python folds a word longer than a line (a URL) into RFC 2047 encoded-words, which
    would break List-Unsubscribe; a line of up to 998 characters is valid (RFC 5322).
    """

    def _whole(self, name: str, value: str) -> bool:
        lowered = name.lower()
        return lowered in ("list-unsubscribe", "list-id", "message-id") or (
            lowered == "subject" and value.isascii()
        )

    def fold(self, name: str, value: str) -> str:
        if self._whole(name, value):
            whole: str = _UNFOLDED.fold(name, value)
            return whole
        folded: str = super().fold(name, value)
        return folded

    def fold_binary(self, name: str, value: str) -> bytes:
        if self._whole(name, value):
            whole: bytes = _UNFOLDED.fold_binary(name, value)
            return whole
        return super().fold_binary(name, value)


WIRE_POLICY = _WirePolicy(linesep="\r\n")


def _one_line(value: str, header: str) -> str:
    if any(char in value for char in "\r\n\0"):
        raise HeaderInjection(f"{header}: a line break or NUL in {value!r}")
    return value


def _single_address(value: str) -> Address:
    try:
        return Address(addr_spec=_one_line(value, "To"))
    except (ValueError, IndexError) as exc:
        raise HeaderInjection(f"To: not a single address: {value!r}") from exc


def _part_head(subtype: str) -> bytes:
    # MIME-Version belongs in the message's header only (RFC 2045 §4), never in a part's.
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        "Content-Transfer-Encoding: quoted-printable\r\n\r\n"
    ).encode("ascii")


def _header_line(name: str, value: str) -> bytes:
    """One header as the wire policy writes it; the email package only when it must fold."""
    line = f"{name}: {value}\r\n"
    if value.isascii() and (len(line) <= 80 or WIRE_POLICY._whole(name, value)):
        return line.encode("ascii")
    return WIRE_POLICY.fold_binary(name, WIRE_POLICY.header_factory(name, value))


def _quoted_printable(body: str) -> bytes:
    """A text part's body: UTF-8, CRLF lines, quoted-printable with lines of at most 76."""
    lines = body.encode("utf-8").splitlines()
    # binascii's encoder is C, several times faster than the email package's pure Python
    # one; given CRLF lines it writes CRLF soft breaks too.
    return binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True)


@dataclass(frozen=True)
class MailingList:
    """What makes an email a list's (a digest): its List-Id and one-click unsubscribe link."""

    list_id: str
    unsubscribe_url: str


def new_message_id(mail: MailSettings, kind: str) -> str:
    """A fresh Message-ID in the domain of ``mail.from``, e.g. ``<…confirm@example.org>``."""
    return make_msgid(idstring=kind, domain=mail.from_address.rpartition("@")[2])


def build_message(
    mail: MailSettings,
    *,
    recipient: str,
    subject: str,
    message_id: str,
    now: datetime,
    text: str,
    html: str,
    mailing_list: MailingList | None = None,
) -> bytes:
    """A multipart text + HTML email, DKIM-signed when configured: the exact bytes to send.

    The same inputs always give the same bytes. The MIME structure is written directly
    rather than through ``EmailMessage``: building digests is the costly half of a mail run,
    and the email package's header parsing and pure-Python quoted-printable were most of
    it. Headers that are not plain short ASCII still go through the email package's folding
    and RFC 2047 encoding. A list's email (``mailing_list``) is marked bulk and carries
    List-Id and RFC 8058 one-click List-Unsubscribe headers.

    Raises:
        HeaderInjection: the recipient is not one address, or a header value has a line break.
        ConfigError: DKIM is configured but its key cannot be read or used.
    """
    # A boundary derived from the Message-ID keeps building a pure function of its inputs.
    boundary = "=_alertd_" + hashlib.sha256(message_id.encode()).hexdigest()[:32]
    listed: tuple[tuple[str, str], ...] = ()
    if mailing_list is not None:
        unsubscribe = _one_line(mailing_list.unsubscribe_url, "List-Unsubscribe")
        listed = (
            ("List-Id", _one_line(mailing_list.list_id, "List-Id")),
            ("List-Unsubscribe", f"<{unsubscribe}>"),
            ("List-Unsubscribe-Post", "List-Unsubscribe=One-Click"),
        )
    headers = (
        ("Subject", _one_line(subject, "Subject")),
        ("From", str(Address(mail.from_name, addr_spec=mail.from_address))),
        ("To", str(_single_address(recipient))),
        ("Date", format_datetime(now)),
        ("Message-ID", _one_line(message_id, "Message-ID")),
        *listed,
        ("Auto-Submitted", "auto-generated"),
        *((("Precedence", "bulk"),) if mailing_list is not None else ()),
        ("X-Auto-Response-Suppress", "All"),
    )
    delimiter = f"--{boundary}\r\n".encode("ascii")
    wire = b"".join(
        [
            *(_header_line(name, value) for name, value in headers),
            b"MIME-Version: 1.0\r\n",
            f'Content-Type: multipart/alternative;\r\n boundary="{boundary}"\r\n\r\n'.encode(),
            delimiter,
            _part_head("plain"),
            _quoted_printable(text),
            b"\r\n",
            delimiter,
            _part_head("html"),
            _quoted_printable(html),
            f"\r\n--{boundary}--\r\n".encode("ascii"),
        ]
    )
    return sign_message(wire, mail)
