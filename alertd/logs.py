"""Logging set-up: one line per event, as text or JSON; -v turns on debug."""

from __future__ import annotations

import json
import logging
import logging.config
from datetime import UTC, datetime
from typing import Any

from alertd.redact import redact

TEXT_FORMAT = "%(asctime)s %(levelname)s %(name)s: %(message)s"


class TextFormatter(logging.Formatter):
    """The plain format, with the password of any URL in a line hidden."""

    def format(self, record: logging.LogRecord) -> str:
        return redact(super().format(record))


class JsonFormatter(logging.Formatter):
    """One JSON object per line, for log shippers."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(),
            "level": record.levelname,
            "logger": record.name,
            "message": redact(record.getMessage()),
        }
        if record.exc_info:
            entry["exception"] = redact(self.formatException(record.exc_info))
        return json.dumps(entry, ensure_ascii=False)


def default_log_config(verbose: bool, level: str = "INFO", fmt: str = "text") -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "text": {"()": TextFormatter, "fmt": TEXT_FORMAT},
            "json": {"()": JsonFormatter},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": fmt,
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"alertd": {"level": "DEBUG" if verbose else level, "handlers": ["stderr"]}},
    }


def setup_logging(verbose: bool, level: str = "INFO", fmt: str = "text") -> None:
    logging.config.dictConfig(default_log_config(verbose, level, fmt))
