"""Email addresses as alertd accepts them (light: the quick commands import it)."""

from __future__ import annotations

import re

from alertd.errors import UsageError

_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(
    r"^[^@\s<>(),;:\"\[\]\\]{1,64}@" + _DOMAIN_LABEL + r"(?:\." + _DOMAIN_LABEL + r")+$"
)
# A non-ASCII local part (josé@example.org) needs SMTPUTF8 end to end: the outbox, the
# message headers and the relay. alertd has none of it, so such an address is refused when
# typed, before anything is written (it used to fail on queueing, after the rows were saved).
NON_ASCII_ERROR = (
    "cannot send to an address with letters other than A-Z before the @ "
    "(it would need SMTPUTF8): use another address"
)


def normalise_email(address: str) -> str:
    """The address, trimmed, with its domain lower-cased.

    Raises:
        UsageError: not a plain, single email address (CR/LF and display names included),
            or one with a non-ASCII local part (NON_ASCII_ERROR).
    """
    candidate = address.strip()
    if len(candidate) > 254 or not _EMAIL.match(candidate):
        raise UsageError(f"invalid email address: {address!r}")
    local, _, domain = candidate.rpartition("@")
    if not local.isascii():
        raise UsageError(NON_ASCII_ERROR)
    return f"{local}@{domain.lower()}"


def email_key(address: str) -> str:
    """The form addresses are compared in: Parent@Example.ORG is parent@example.org."""
    return address.lower()
