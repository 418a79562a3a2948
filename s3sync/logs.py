"""structlog configuration, in one place.

Events are verbs with data (``upload.succeeded key=... bytes=... duration_ms=...``).
Output is JSON lines when stderr is not a terminal or ``S3_LOG_FORMAT=json`` (what journald
and log shippers want), readable console lines on a terminal.

Secrets never reach the output: a processor replaces any configured secret value found in
any field, and botocore's own DEBUG logging (which prints credentials and signatures) is
never enabled, whatever ``S3_LOG_LEVEL`` says.
"""

from __future__ import annotations

import logging
import sys
from collections.abc import Iterable, MutableMapping
from typing import Any, TextIO

import structlog

__all__ = ["configure_logging", "redactor"]

_LEVELS = {"debug": logging.DEBUG, "info": logging.INFO, "warning": logging.WARNING, "error": logging.ERROR}
_MASK = "********"


def redactor(secrets: Iterable[str]) -> structlog.types.Processor:
    """A processor that masks every occurrence of the given secret strings in event fields."""
    values = sorted({s for s in secrets if s and len(s) >= 4}, key=len, reverse=True)

    def _scrub(value: Any) -> Any:
        if isinstance(value, str):
            for secret in values:
                if secret in value:
                    value = value.replace(secret, _MASK)
            return value
        if isinstance(value, dict):
            return {k: _scrub(v) for k, v in value.items()}
        if isinstance(value, list | tuple):
            return type(value)(_scrub(v) for v in value)
        if isinstance(value, BaseException):
            return _scrub(f"{type(value).__name__}: {value}")
        return value

    def process(logger: Any, method: str, event_dict: MutableMapping[str, Any]) -> MutableMapping[str, Any]:
        if not values:
            return event_dict
        for k in list(event_dict):
            event_dict[k] = _scrub(event_dict[k])
        return event_dict

    return process


def configure_logging(
    fmt: str = "auto",
    level: str = "info",
    *,
    stream: TextIO | None = None,
    secrets: Iterable[str] = (),
) -> None:
    """Configure structlog (and the stdlib root logger) for the process.

    ``fmt`` is ``auto`` (JSON unless ``stream`` is a terminal), ``json`` or ``console``.
    """
    out = stream if stream is not None else sys.stderr
    as_json = fmt == "json" or (fmt == "auto" and not _isatty(out))
    threshold = _LEVELS.get(level, logging.INFO)
    processors: list[structlog.types.Processor] = [
        structlog.contextvars.merge_contextvars,
        structlog.processors.add_log_level,
        structlog.processors.TimeStamper(fmt="iso", utc=True),
        redactor(secrets),
    ]
    if as_json:
        processors += [structlog.processors.format_exc_info, structlog.processors.JSONRenderer(sort_keys=False)]
    else:
        processors.append(structlog.dev.ConsoleRenderer(colors=_isatty(out)))
    structlog.configure(
        processors=processors,
        wrapper_class=structlog.make_filtering_bound_logger(threshold),
        logger_factory=structlog.PrintLoggerFactory(file=out),
        cache_logger_on_first_use=False,
    )
    # Third-party stdlib loggers: warnings only, and never botocore/urllib3 debug output.
    logging.basicConfig(level=logging.WARNING, stream=out, format="%(levelname)s %(name)s: %(message)s", force=True)
    for noisy in ("botocore", "boto3", "urllib3", "s3transfer", "watchdog"):
        logging.getLogger(noisy).setLevel(logging.WARNING)


def _isatty(stream: TextIO) -> bool:
    try:
        return stream.isatty()
    except (AttributeError, ValueError):
        return False
