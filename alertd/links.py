"""Links in mails and pages that carry a signed token."""

from __future__ import annotations

from alertd.tokens import make_token


def alert_feed_url(base_url: str, secret: str, alert_id: int) -> str:
    """The private Atom feed of one alert's matches."""
    return f"{base_url}/alerts/feed/{make_token(secret, 'feed', alert_id)}"
