"""Email addresses as alertd accepts them (light: the quick commands import it)."""

from __future__ import annotations

import re

from alertd.errors import UsageError

_DOMAIN_LABEL = r"[A-Za-z0-9](?:[A-Za-z0-9-]*[A-Za-z0-9])?"
_EMAIL = re.compile(
    r"^[^@\s<>(),;:\"\[\]\\]{1,64}@" + _DOMAIN_LABEL + r"(?:\." + _DOMAIN_LABEL + r")+$"
)


def normalise_email(address: str) -> str:
    """The address, trimmed, with its domain lower-cased.

    Raises:
        UsageError: not a plain, single email address (CR/LF and display names included).
    """
    candidate = address.strip()
    if len(candidate) > 254 or not _EMAIL.match(candidate):
        raise UsageError(f"invalid email address: {address!r}")
    local, _, domain = candidate.rpartition("@")
    return f"{local}@{domain.lower()}"


def email_key(address: str) -> str:
    """The form addresses are compared in: Parent@Example.ORG is parent@example.org."""
    return address.lower()
