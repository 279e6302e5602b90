"""Credentials in URLs (scheme://user:password@host) hidden from every message we show."""

from __future__ import annotations

import re

# The userinfo of any scheme://user:password@ in free text: a config error, a driver's message,
# a stored feed URL, a log line. The user name stays (it helps), the password goes: up to the
# last @ before the host, as a password may hold an unescaped @.
_USERINFO = re.compile(r"(?P<scheme>[A-Za-z][A-Za-z0-9+.-]*://)(?P<user>[^\s/@:]*):[^\s/]*@")
HIDDEN = "***"


def redact(text: str) -> str:
    """The text with the password of every URL in it replaced by ***."""
    return _USERINFO.sub(lambda m: f"{m['scheme']}{m['user']}:{HIDDEN}@", text)
