"""structlog configuration: JSON logs, context from contextvars, and redaction last.

Standard-library loggers (slack_sdk, aiohttp, chromadb, aiosmtpd) are routed through the
same chain with `ProcessorFormatter`, so they are redacted too.
"""

from __future__ import annotations

import logging
import sys
from pathlib import Path
from typing import Any, TextIO

import structlog

from bot.redact import redact_value


class Redact:
    """Masks card numbers, secrets and passwords in every value of a log event."""

    def __init__(self, mask=redact_value):
        self.mask = mask

    GENERATED = frozenset({"timestamp", "level"})  # written by the pipeline itself

    def __call__(self, logger: Any, method: str, event_dict: dict) -> dict:
        return {key: value if key in self.GENERATED else self.mask(value) for key, value in event_dict.items()}


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
