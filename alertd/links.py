"""Every signed link alertd puts in a mail or a page, built in this one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta
from typing import Literal

from alertd.config import Settings
from alertd.keys import subkeys
from alertd.tokens import make_token

Action = Literal["manage", "unsubscribe", "confirm", "stop", "feed", "more"]
# Whose id a token carries: the subscriber's, or one of their alerts'.
SUBSCRIBER_ACTIONS: frozenset[Action] = frozenset({"manage", "unsubscribe"})
# How long a link made with an issue time (a sample digest's) works: long enough to look at
# the sample, short enough that a copy left in a file or a ticket is soon worthless.
EXPIRING_LINK_LIFETIME = timedelta(hours=24)


@dataclass(frozen=True)
class Links:
    """Paths carry a token signed with ``key`` (the newest links subkey) and the owner's
    link secret; ``url`` puts ``base_url`` before a path. With ``issued_at`` every token
    carries that time and stops working EXPIRING_LINK_LIFETIME after it (a sample digest's
    links); without, only confirmation links expire."""

    base_url: str
    key: bytes
    issued_at: datetime | None = None

    @classmethod
    def for_settings(cls, settings: Settings, *, issued_at: datetime | None = None) -> Links:
        return cls(settings.web.base_url, subkeys(settings, "links")[0], issued_at)

    def _token(self, action: Action, subject_id: int, link_secret: str) -> str:
        return make_token(self.key, action, subject_id, link_secret, issued_at=self.issued_at)

    def url(self, path: str) -> str:
        return self.base_url + path

    def manage_path(self, subscriber_id: int, link_secret: str) -> str:
        """The subscriber's manage page: every alert, pause, frequency, stop."""
        return f"/manage/{self._token('manage', subscriber_id, link_secret)}"

    def confirm_path(self, alert_id: int, link_secret: str, issued_at: datetime) -> str:
        """Confirms a new alert, once; expires (web.confirm_days after ``issued_at``)."""
        token = make_token(self.key, "confirm", alert_id, link_secret, issued_at=issued_at)
        return f"/confirm/{token}"

    def stop_path(self, alert_id: int, link_secret: str) -> str:
        """Stops one alert, from its section of a digest."""
        return f"/alerts/stop/{self._token('stop', alert_id, link_secret)}"

    def unsubscribe_path(self, subscriber_id: int, link_secret: str) -> str:
        """Stops every alert of the subscriber (also the RFC 8058 one-click target)."""
        return f"/unsubscribe/{self._token('unsubscribe', subscriber_id, link_secret)}"

    def feed_path(self, alert_id: int, link_secret: str) -> str:
        """The private Atom feed of one alert's matches."""
        return f"/alerts/feed/{self._token('feed', alert_id, link_secret)}"

    def more_path(self, alert_id: int, link_secret: str) -> str:
        """A page listing an alert's recent matches: those a digest had no room for."""
        return f"/alerts/more/{self._token('more', alert_id, link_secret)}"
