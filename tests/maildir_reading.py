"""The messages a test run delivered to its Maildir, taken out as they are read."""

from __future__ import annotations

import mailbox
from email import message_from_bytes
from email.message import EmailMessage
from email.policy import default
from pathlib import Path


def take_mail(maildir: str | Path) -> list[EmailMessage]:
    """Every message in the Maildir, oldest first; each is removed once read."""
    box = mailbox.Maildir(maildir, create=True)
    found = []
    for key in sorted(box.keys()):
        parsed = message_from_bytes(box.get_bytes(key), policy=default)
        assert isinstance(parsed, EmailMessage)
        found.append(parsed)
        box.remove(key)
    return found


def body(message: EmailMessage, kind: str) -> str:
    """Its text ("plain") or HTML ("html") part."""
    part = message.get_body((kind,))
    assert part is not None
    return str(part.get_content())
