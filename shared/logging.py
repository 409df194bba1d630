"""structlog set-up: JSON lines (or a console renderer on a TTY) with context variables merged,
for our own loggers and the standard-library loggers of the libraries alike.

Handlers call `bind_message_context()` at the start of every message so that the answer's
`correlation_id` rides on every log line the message causes.
"""

from __future__ import annotations

import logging
import re
import sys
from typing import Any

import structlog

_SECRET_URL = re.compile(r"(/rest/\d+/)[^/\s\"']+")
_SECRET_KEYS = ("token", "secret", "password", "webhook_url")


def redact(text: str) -> str:
    """Mask the secret part of inbound-webhook URLs (`/rest/<user>/<secret>/`)."""
    return _SECRET_URL.sub(r"\1***", text)


def _redact_processor(
    _logger: Any, _name: str, event_dict: structlog.types.EventDict
) -> structlog.types.EventDict:
    for key, value in list(event_dict.items()):
        if any(part in key.lower() for part in _SECRET_KEYS):
            event_dict[key] = "***"
        elif isinstance(value, str) and "/rest/" in value:
            event_dict[key] = redact(value)
    return event_dict


class _StderrLogger:
    """Writes each rendered line to whatever `sys.stderr` is *now* (tests swap it)."""

    def msg(self, message: str) -> None:
        print(message, file=sys.stderr, flush=True)

    log = debug = info = warn = warning = error = critical = exception = fatal = msg


def _stderr_logger(*_args: Any) -> _StderrLogger:
    return _StderrLogger()


def configure_logging(
    level: str = "info", fmt: str | None = None, service: str | None = None
) -> None:
    """Configure structlog for this process; `fmt=None` picks console on a TTY, JSON otherwise.

    Libraries that log through the standard library (uvicorn, aio-pika, httpx, faststream) go
    through the same processors and renderer, so with JSON every line of the process is JSON,
    with the `service` and the message's `correlation_id` and without secrets.
    """
    use_console = fmt == "console" or (fmt is None and sys.stderr.isatty())
    renderer: structlog.types.Processor = (
        structlog.dev.ConsoleRenderer() if use_console else structlog.processors.JSONRenderer()
    )
    stamp: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
    ]
    render: list[structlog.types.Processor] = [
        structlog.processors.format_exc_info,
        _redact_processor,
        renderer,
    ]
    structlog.configure(
        processors=[*stamp, *render],
        wrapper_class=structlog.make_filtering_bound_logger(
            logging.getLevelNamesMapping()[level.upper()]
        ),
        logger_factory=_stderr_logger,
        # Not cached: a logger that logged once keeps the level it was first used with, so a
        # process that configures logging again (the tests, with another level) would lose lines.
        cache_logger_on_first_use=False,
    )
    structlog.contextvars.clear_contextvars()
    if service:
        structlog.contextvars.bind_contextvars(service=service)
    # Libraries stay quiet below warnings, even one that sets its own logger to DEBUG: the
    # handler has the level too.
    handler = logging.StreamHandler(sys.stderr)
    handler.setLevel(logging.WARNING)
    handler.setFormatter(
        structlog.stdlib.ProcessorFormatter(
            foreign_pre_chain=[*stamp, structlog.stdlib.add_logger_name],
            processors=[structlog.stdlib.ProcessorFormatter.remove_processors_meta, *render],
        )
    )
    logging.basicConfig(level=logging.WARNING, handlers=[handler])


def bind_message_context(**values: Any) -> None:
    """Replace the per-message context (keeps the process-wide `service` binding)."""
    service = structlog.contextvars.get_contextvars().get("service")
    structlog.contextvars.clear_contextvars()
    if service is not None:
        structlog.contextvars.bind_contextvars(service=service)
    structlog.contextvars.bind_contextvars(**values)


def get_logger(name: str | None = None) -> Any:
    """A structlog logger (typed loosely: structlog's bound loggers are dynamic)."""
    return structlog.get_logger(name)
