"""structlog configuration: JSON logs, context from contextvars, and redaction last.

Standard-library loggers (slack_sdk, aiohttp, chromadb, aiosmtpd) are routed through the
same chain with `ProcessorFormatter`, so they are redacted too: card numbers, secrets and
passwords are masked and email addresses shortened (`a***@example.com`). Libraries that
log their debug output at INFO (`CHATTY_LOGGERS`) have those records demoted to DEBUG.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from bot.redact import redact_log_value


class Redact:
    """Masks card numbers, secrets, passwords and email addresses in every value of a log event."""

    def __init__(self, mask=redact_log_value):
        self.mask = mask

    GENERATED = frozenset({"timestamp", "level"})  # written by the pipeline itself

    def __call__(self, logger: Any, method: str, event_dict: dict) -> dict:
        return {key: value if key in self.GENERATED else self.mask(value) for key, value in event_dict.items()}


# Third-party loggers whose INFO records are debug output: aiosmtpd logs every SMTP command
# line, sender and recipient addresses included ("mail.log"); bm25s logs indexing and
# query chatter; the encoder and Chroma log model loading and telemetry; apscheduler logs
# every job run (Deskhand logs its own `scheduler_started` and each job's result).
CHATTY_LOGGERS = ("mail.log", "mail.debug", "bm25s", "sentence_transformers", "chromadb", "httpx", "apscheduler")


def _chatty(name: str) -> bool:
    return any(name == chatty or name.startswith(chatty + ".") for chatty in CHATTY_LOGGERS)


class DemoteChatter(logging.Filter):
    """Turns the INFO records of `CHATTY_LOGGERS` into DEBUG ones, so they show only when
    DEBUG is asked for; their warnings and errors pass unchanged."""

    def __init__(self, level: int):
        super().__init__()
        self.level = level

    def filter(self, record: logging.LogRecord) -> bool:
        if record.levelno == logging.INFO and _chatty(record.name):
            record.levelno, record.levelname = logging.DEBUG, "DEBUG"
            return logging.DEBUG >= self.level
        return True


def _shared_processors() -> list:
    return [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        structlog.processors.format_exc_info,
    ]


def configure_logging(level: str = "INFO", stream: TextIO | None = None, log_file: Path | None = None) -> None:
    """Configure structlog and stdlib logging. Logs go to stderr (or `log_file`) as JSON."""
    # Redact must be the last processor before rendering: everything that adds data
    # (contextvars, exception formatting) runs before it.
    renderer_chain = [Redact(), structlog.processors.JSONRenderer()]
    structlog.configure(
        processors=[*_shared_processors(), structlog.stdlib.ProcessorFormatter.wrap_for_formatter],
        logger_factory=structlog.stdlib.LoggerFactory(),
        wrapper_class=structlog.stdlib.BoundLogger,
        cache_logger_on_first_use=False,
    )
    formatter = structlog.stdlib.ProcessorFormatter(
        foreign_pre_chain=_shared_processors(),
        processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *renderer_chain],
    )
    if log_file:
        log_file.parent.mkdir(parents=True, exist_ok=True)
        handler: logging.Handler = logging.FileHandler(log_file)
    else:
        handler = logging.StreamHandler(stream or sys.stderr)
    handler.setFormatter(formatter)
    # The handler has the level too: a library that sets its own logger to DEBUG (bm25s does,
    # on import) would otherwise write its debug lines into an INFO log.
    handler.setLevel(level.upper())
    handler.addFilter(DemoteChatter(handler.level))
    root = logging.getLogger()
    for old in list(root.handlers):
        if getattr(old, "_deskhand", False):
            root.removeHandler(old)
            old.close()
    handler._deskhand = True  # type: ignore[attr-defined]
    root.addHandler(handler)
    root.setLevel(level.upper())


def get_logger(name: str = "deskhand") -> structlog.stdlib.BoundLogger:
    return structlog.get_logger(name)
