"""Set reelbot's logging up on a string buffer for a test, and put the root logger back afterwards."""

from __future__ import annotations

import io
import logging
from collections.abc import Iterator
from contextlib import contextmanager
from typing import Any

from bot.observe.logs import LogFormat, setup_logging

TOUCHED = ("", "discord", "discord.http")


@contextmanager
def captured_logs(fmt: LogFormat, level: str = "DEBUG", settings: Any = None) -> Iterator[io.StringIO]:
    saved = {name: logging.getLogger(name).level for name in TOUCHED}
    before = list(logging.getLogger().handlers)
    stream = io.StringIO()
    setup_logging(level, fmt, stream=stream, settings=settings)
    try:
        yield stream
    finally:
        root = logging.getLogger()
        for handler in [h for h in root.handlers if h not in before]:
            root.removeHandler(handler)
        for name, value in saved.items():
            logging.getLogger(name).setLevel(value)
