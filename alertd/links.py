"""Every signed link alertd puts in a mail or a page, built in this one place."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime

from alertd.config import Settings
from alertd.tokens import make_token


@dataclass(frozen=True)
class Links:
    """Paths carry a token signed with ``secret``; ``url`` puts ``base_url`` before a path."""

    base_url: str
    secret: str

    @classmethod
    def for_settings(cls, settings: Settings) -> Links:
        return cls(settings.web.base_url, settings.web.secret_key.get_secret_value())

    def url(self, path: str) -> str:
        return self.base_url + path

    def manage_path(self, subscriber_id: int) -> str:
        """The subscriber's manage page: every alert, pause, frequency, stop."""
        return f"/manage/{make_token(self.secret, 'manage', subscriber_id)}"

    def confirm_path(self, alert_id: int, issued_at: datetime) -> str:
        """Confirms a new alert; expires (web.confirm_days after ``issued_at``)."""
        return f"/confirm/{make_token(self.secret, 'confirm', alert_id, issued_at=issued_at)}"

    def stop_path(self, alert_id: int) -> str:
        """Stops one alert, from its section of a digest."""
        return f"/alerts/stop/{make_token(self.secret, 'stop', alert_id)}"

    def unsubscribe_path(self, subscriber_id: int) -> str:
        """Stops every alert of the subscriber (also the RFC 8058 one-click target)."""
        return f"/unsubscribe/{make_token(self.secret, 'unsubscribe', subscriber_id)}"

    def feed_path(self, alert_id: int) -> str:
        """The private Atom feed of one alert's matches."""
        return f"/alerts/feed/{make_token(self.secret, 'feed', alert_id)}"

    def more_path(self, alert_id: int) -> str:
        """A page listing an alert's recent matches: those a digest had no room for."""
        return f"/alerts/more/{make_token(self.secret, 'more', alert_id)}"
