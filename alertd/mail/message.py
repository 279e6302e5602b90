"""One message builder: the MIME bytes of every email alertd sends."""

from __future__ import annotations

import binascii
from email.headerregistry import Address
from email.policy import SMTP, EmailPolicy


class HeaderInjection(ValueError):
    """A value meant for a mail header holds a line break, or is not a single address."""


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


def one_line(value: str, header: str) -> str:
    if any(char in value for char in "\r\n\0"):
        raise HeaderInjection(f"{header}: a line break or NUL in {value!r}")
    return value


def single_address(value: str) -> Address:
    try:
        return Address(addr_spec=one_line(value, "To"))
    except (ValueError, IndexError) as exc:
        raise HeaderInjection(f"To: not a single address: {value!r}") from exc


def part_head(subtype: str, *, mime_version: bool = False) -> bytes:
    # add_alternative() gave the second part its own MIME-Version; kept, byte for byte.
    extra = "MIME-Version: 1.0\r\n" if mime_version else ""
    return (
        f'Content-Type: text/{subtype}; charset="utf-8"\r\n'
        f"Content-Transfer-Encoding: quoted-printable\r\n{extra}\r\n"
    ).encode("ascii")


def header_line(name: str, value: str) -> bytes:
    """One header as the wire policy writes it; the email package only when it must fold."""
    line = f"{name}: {value}\r\n"
    if value.isascii() and (len(line) <= 80 or WIRE_POLICY._whole(name, value)):
        return line.encode("ascii")
    return WIRE_POLICY.fold_binary(name, WIRE_POLICY.header_factory(name, value))


def quoted_printable(body: str) -> bytes:
    """A text part's body: UTF-8, CRLF lines, quoted-printable with lines of at most 76."""
    lines = body.encode("utf-8").splitlines()
    # binascii's encoder is C, several times faster than the email package's pure Python
    # one; given CRLF lines it writes CRLF soft breaks too.
    return binascii.b2a_qp(b"\r\n".join(lines) + b"\r\n", istext=True)
