"""Counting Discord REST 429s from discord.py's own log records, without importing discord.py.

discord.py handles rate limits inside `HTTPClient.request` and tells nobody but its `discord.http` logger.
A handler on that logger sees exactly the records it writes for a 429 (discord.py 2.x, discord/http.py):

    'We are being rate limited. %s %s responded with 429. Retrying in %.2f seconds.'
    'We are being rate limited. %s %s responded with 429. Timeout of %.2f was too long, erroring instead.'
    'Global rate limit has been hit. Retrying in %.2f seconds.'   (after the first, for a global limit)

Matching the unformatted template (`record.msg`) ignores the method, URL and seconds, and is untouched by
redaction or formatting (handlers on discord.http run before the root's redacting one). This is sturdier
than wrapping the HTTP client, whose internals change between releases;
tests/integration/test_discord_rate_limits.py drives the real discord.py client into a 429, so a change of
wording is caught.
"""

from __future__ import annotations

import logging
from collections.abc import Callable

from bot.observe.metrics import Metrics

LOGGER = "discord.http"
RATE_LIMITED = "We are being rate limited."
GLOBAL = "Global rate limit has been hit."
GAVE_UP = "erroring instead"


class RateLimitCounter(logging.Handler):
    def __init__(self, metrics: Metrics) -> None:
        super().__init__(logging.WARNING)
        self.metrics = metrics

    def emit(self, record: logging.LogRecord) -> None:
        template = record.msg if isinstance(record.msg, str) else ""
        if template.startswith(RATE_LIMITED):
            self.metrics.discord_rate_limited("raised" if GAVE_UP in template else "retried")
        elif template.startswith(GLOBAL):
            self.metrics.discord_global_rate_limit()


def count_discord_rate_limits(metrics: Metrics) -> Callable[[], None]:
    """Start counting; returns the function that stops it (call it when the bot closes)."""
    logger = logging.getLogger(LOGGER)
    handler = RateLimitCounter(metrics)
    logger.addHandler(handler)
    if logger.getEffectiveLevel() > logging.WARNING:
        logger.setLevel(logging.WARNING)  # the warnings must be created to be counted

    def stop() -> None:
        logger.removeHandler(handler)

    return stop
