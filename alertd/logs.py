"""Logging set-up: one line per event; -v turns on debug."""

from __future__ import annotations

import logging.config
from typing import Any


def default_log_config(verbose: bool, level: str = "INFO") -> dict[str, Any]:
    return {
        "version": 1,
        "disable_existing_loggers": False,
        "formatters": {
            "line": {"format": "%(asctime)s %(levelname)s %(name)s: %(message)s"},
        },
        "handlers": {
            "stderr": {
                "class": "logging.StreamHandler",
                "formatter": "line",
                "stream": "ext://sys.stderr",
            }
        },
        "loggers": {"alertd": {"level": "DEBUG" if verbose else level, "handlers": ["stderr"]}},
    }


def setup_logging(verbose: bool, level: str = "INFO") -> None:
    logging.config.dictConfig(default_log_config(verbose, level))
