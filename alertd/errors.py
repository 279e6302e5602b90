"""One error tree for alertd: transient errors are retried, permanent ones are recorded."""

from __future__ import annotations


class AlertdError(Exception):
    """Base class of every error alertd raises on purpose."""


class ConfigError(AlertdError):
    """The configuration is unreadable or invalid; start-up stops."""


class UsageError(AlertdError):
    """Bad input from a person (an address, a query, a frequency): nothing was written."""


class QueryError(UsageError):
    """An alert query that cannot be parsed; `position` is the 0-based offset of the fault."""

    def __init__(self, message: str, position: int | None = None) -> None:
        self.message = message
        self.position = position
        where = f" (at character {position + 1})" if position is not None else ""
        super().__init__(f"{message}{where}")


class TransientError(AlertdError):
    """Worth retrying later: the next poll or the next delivery attempt may succeed."""


class PermanentError(AlertdError):
    """Retrying will not help: record it and move on."""


class SourceUnavailable(TransientError):
    """A source could not be fetched (timeout, connection error, 5xx, 429)."""


class SourceInvalid(PermanentError):
    """A source answered with something that is not what we expect (broken JSON, wrong shape)."""


class SmtpReplyError(AlertdError):
    """A delivery error, with the SMTP reply code behind it when a server gave one."""

    def __init__(self, message: str, code: int | None = None) -> None:
        self.code = code
        super().__init__(message)


class StopBatch(AlertdError):
    """Sending cannot go on (server unreachable, our login or sender refused): stop the run.

    The messages claimed but not sent go back to the queue as they were; no recipient's
    message is counted as failed.
    """


class DeliveryDeferred(SmtpReplyError, TransientError):
    """The mail server asked us to try again later (4xx, timeout, dropped connection)."""


class MailServerUnavailable(StopBatch, TransientError):
    """The mail server (or Maildir) cannot be reached at all: stop the batch, retry later."""


class DeliveryRejected(SmtpReplyError, PermanentError):
    """The mail server refused this recipient for good (5xx on RCPT or DATA)."""


class DeliveryHalted(SmtpReplyError, StopBatch):
    """The mail server refuses us, not the recipient (auth, sender, policy): stop the batch."""


class HeaderInjection(PermanentError):
    """A value meant for a mail header holds a line break, or is not a single address."""


class TemplateError(PermanentError):
    """A digest template failed to load or render."""
