"""Every error alertd raises on purpose, in one tree whose bases are the caller's decisions."""

# AlertdError
# ├── ConfigError                  a person must fix the configuration
# ├── UsageError                   a person gave bad input; nothing was written
# │   └── QueryError, InvalidToken (TokenExpired), NotYours
# ├── TransientError               retry later
# │   ├── RetryLater               ... and when is known (retry_after_s)
# │   │   ├── RateLimited, Busy
# │   │   └── SourceThrottled      (also SourceUnavailable)
# │   ├── SourceUnavailable        (also SourceError)
# │   ├── DatabaseUnavailable, DeliveryDeferred
# │   └── MailServerUnavailable    (also StopBatch)
# └── PermanentError               record it (bounce) and move on
#     ├── SourceInvalid (SourceGone)  (also SourceError)
#     ├── DeliveryRejected, TemplateError, HeaderInjection
#     ├── ReportUnreadable, NotOurs   a bounce we cannot read, or about no subscriber of ours
#     └── DeliveryHalted           (also StopBatch)
#
# Beside the bases, three classes say what an error is about, whatever the decision:
# SourceError is any failed fetch of a source, and carries its URL and HTTP status: catch it
# for "the fetch failed". SmtpReplyError carries the SMTP reply code of the delivery errors.
# StopBatch marks the failures that are nobody's message in particular (the mail server is
# down or refuses us): catch it before TransientError/PermanentError and stop the whole batch.

from __future__ import annotations


class AlertdError(Exception):
    """Base class of every error alertd raises on purpose."""


class ConfigError(AlertdError):
    """The configuration is unreadable or invalid; start-up stops."""


class UsageError(AlertdError):
    """Bad input from a person (an address, a query, a frequency): nothing was written."""


class TransientError(AlertdError):
    """Worth retrying later: the next poll or the next delivery attempt may succeed."""


class PermanentError(AlertdError):
    """Retrying will not help: record it and move on."""


class StopBatch(AlertdError):
    """Not this message's fault but the mail server's: stop the batch, leave the rest queued."""


class RetryLater(TransientError):
    """Worth retrying, and the one refusing said when: after ``retry_after_s`` seconds."""

    def __init__(self, message: str, retry_after_s: int) -> None:
        self.retry_after_s = retry_after_s
        super().__init__(message)


class SourceError(AlertdError):
    """A source could not be fetched or read. ``url`` is the address the message names
    (without any user:password), ``status`` the HTTP status of its answer: None when there was
    no answer (a timeout, a refused connection), or when the error is raised where neither is
    known (an item with a bad field)."""

    def __init__(self, message: str, *, url: str | None = None, status: int | None = None) -> None:
        self.url = url
        self.status = status
        super().__init__(message)


class SmtpReplyError(AlertdError):
    """An error that carries the SMTP reply code (None when there was no reply: a timeout)."""

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


# People


class QueryError(UsageError):
    """An alert query that cannot be parsed; `position` is the 0-based offset of the fault."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.message = message
        self.position = position
        where = f" (at character {position + 1})" if position is not None else ""
        super().__init__(f"{message}{where}")


class InvalidToken(UsageError):
    """The token was altered, made with another key, or is for another action."""


class TokenExpired(InvalidToken):
    """The token is genuine but older than its kind allows."""


class NotYours(UsageError):
    """No such alert among this subscriber's active alerts."""


class RateLimited(RetryLater):
    """Too many requests from one client; try again after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"too many requests: try again in {retry_after_s} s", retry_after_s)


class Busy(RetryLater):
    """Costly work (a preview) is at its concurrency limit: refused, not queued; try again
    after ``retry_after_s`` seconds."""

    def __init__(self, retry_after_s: int) -> None:
        super().__init__(f"busy: try again in {retry_after_s} s", retry_after_s)


# Sources


class SourceUnavailable(SourceError, TransientError):
    """A source could not be fetched (timeout, connection error, 5xx, 429)."""


class SourceThrottled(SourceUnavailable, RetryLater):
    """A source answered 429 or 5xx and said when to come back (Retry-After)."""

    def __init__(self, message: str, *, url: str, status: int, retry_after_s: int) -> None:
        # Set here, not by the bases' __init__s: the two take different arguments.
        self.url, self.status, self.retry_after_s = url, status, retry_after_s
        Exception.__init__(self, message)


class SourceInvalid(SourceError, PermanentError):
    """A source answered with something that is not what we expect (broken JSON, wrong shape)."""


class SourceGone(SourceInvalid):
    """A source answered 410 Gone: it will not come back (a feed is disabled)."""


# The database


class DatabaseUnavailable(TransientError):
    """The database cannot be reached (down, refusing connections, a file that cannot be
    opened): nothing was done."""


# Digests and mail


class TemplateError(PermanentError):
    """A digest template failed to load or render."""


class HeaderInjection(PermanentError, ValueError):
    """A value meant for a mail header holds a line break, or is not a single address."""


class DeliveryDeferred(SmtpReplyError, TransientError):
    """The mail server asked us to try again later (4xx, timeout, dropped connection)."""


class DeliveryRejected(SmtpReplyError, PermanentError):
    """The mail server refused this recipient for good (5xx on RCPT or DATA)."""


class MailServerUnavailable(StopBatch, TransientError):
    """The mail server (or Maildir) cannot be reached at all: stop the batch, retry later."""


class DeliveryHalted(SmtpReplyError, StopBatch, PermanentError):
    """The mail server refuses us, not the recipient (auth, sender, policy): stop the batch."""


# Bounces


class ReportUnreadable(PermanentError):
    """The message is no delivery status notification or abuse report alertd can read."""


class NotOurs(PermanentError):
    """The report carries no valid VERP tag of ours: it is about no subscriber."""
