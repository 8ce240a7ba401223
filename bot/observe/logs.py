"""Logging, set up once at the entry point: one JSON object per line or readable text, secrets redacted in
both, and the job being driven (job_id, guild_id, provider) attached to every record logged while the
engine drives it.

The job fields come from a context variable the engine sets around each job's task, so every line logged
on its behalf — engine, runner, provider HTTP, media — carries them without each call passing `extra=`.
A call may still pass `extra={"job_id": ...}`; what it passes wins.
"""

from __future__ import annotations

import contextlib
import contextvars
import json
import logging
import sys
from collections.abc import Iterator
from datetime import UTC, datetime
from typing import IO, Any, Literal

from bot.observe.redact import RedactFilter, Redactor

LogFormat = Literal["text", "json"]
CONTEXT_FIELDS = ("job_id", "guild_id", "provider")
TEXT_FORMAT = "[{asctime}] [{levelname:<7}] {name}: {message}{context}"

_job: contextvars.ContextVar[dict[str, str] | None] = contextvars.ContextVar("reelbot_log_job", default=None)
# One redactor for the process: secrets learnt from settings apply to every handler set up here.
redactor = Redactor()


@contextlib.contextmanager
def job_context(job_id: str, *, guild_id: str | None = None, provider: str | None = None) -> Iterator[None]:
    """Attach the job's ids to every record logged inside (and in tasks started inside)."""
    fields = {"job_id": job_id}
    if guild_id:
        fields["guild_id"] = guild_id
    if provider:
        fields["provider"] = provider
    token = _job.set(fields)
    try:
        yield
    finally:
        _job.reset(token)


class ContextFilter(logging.Filter):
    """Copies the current job's fields onto the record, unless the call passed its own."""

    def filter(self, record: logging.LogRecord) -> bool:
        for key, value in (_job.get() or {}).items():
            if not hasattr(record, key):
                setattr(record, key, value)
        return True


def _context(record: logging.LogRecord) -> dict[str, str]:
    return {key: str(value) for key in CONTEXT_FIELDS if (value := getattr(record, key, None)) is not None}


class JsonFormatter(logging.Formatter):
    """One JSON object per line: time, level, logger, message, the job fields present, and any traceback."""

    def format(self, record: logging.LogRecord) -> str:
        entry: dict[str, Any] = {
            "time": datetime.fromtimestamp(record.created, UTC).isoformat(timespec="milliseconds").replace(
                "+00:00", "Z"
            ),
            "level": record.levelname,
            "logger": record.name,
            "message": record.getMessage(),
            **_context(record),
        }
        if record.exc_info and not record.exc_text:
            record.exc_text = self.formatException(record.exc_info)
        if record.exc_text:
            entry["exc_info"] = record.exc_text
        if record.stack_info:
            entry["stack_info"] = record.stack_info
        return json.dumps(entry, ensure_ascii=False, default=str)


class TextFormatter(logging.Formatter):
    """The readable format, with the job fields appended when present."""

    def __init__(self) -> None:
        super().__init__(TEXT_FORMAT, style="{")

    def formatMessage(self, record: logging.LogRecord) -> str:
        context = _context(record)
        record.context = "".join(f" {key}={value}" for key, value in context.items()) if context else ""
        return super().formatMessage(record)


class _ReelbotHandler(logging.StreamHandler):  # type: ignore[type-arg]
    """Marks the handler this module installed, so setting up again replaces it instead of adding another."""


def setup_logging(level: str | int = "INFO", fmt: LogFormat = "text", *, stream: IO[str] | None = None,
                  settings: Any = None) -> logging.Handler:  # fmt: skip
    """Configure the root logger once for the process (calling again replaces what the last call set up).
    `settings`: its secret values are masked in every record."""
    if settings is not None:
        redactor.add_settings(settings)
    handler = _ReelbotHandler(stream or sys.stderr)
    handler.setFormatter(JsonFormatter() if fmt == "json" else TextFormatter())
    handler.addFilter(ContextFilter())
    handler.addFilter(RedactFilter(redactor))
    numeric = logging.getLevelName(level.upper()) if isinstance(level, str) else level
    if not isinstance(numeric, int):
        raise ValueError(f"REELBOT_LOG_LEVEL={level!r} is not a log level (DEBUG, INFO, WARNING, ERROR)")
    # The handler's own level is what is shown; loggers below may create more (see discord.http below).
    handler.setLevel(numeric)
    root = logging.getLogger()
    for old in [h for h in root.handlers if isinstance(h, _ReelbotHandler)]:
        root.removeHandler(old)
        old.close()
    root.addHandler(handler)
    root.setLevel(numeric)
    # discord.py: connection events are worth keeping; its HTTP layer's debug/info lines carry payloads.
    # These are set on the loggers, not the handler, so discord.http's warnings exist even when the chosen
    # level hides them: the 429 counter (bot.observe.discord_limits) is fed by them.
    logging.getLogger("discord").setLevel(logging.INFO)
    logging.getLogger("discord.http").setLevel(logging.WARNING)
    return handler
