"""Where finished clips and failures go: the engine calls a Delivery; the CLI and Discord implement it."""

from __future__ import annotations

from pathlib import Path
from typing import Protocol

from bot.store.jobs import Job


class Delivery(Protocol):
    # The largest file this delivery can take (e.g. Discord's upload limit); None means no limit.
    size_limit: int | None

    async def progress(self, job: Job) -> None:
        """The job changed state or reported progress; cheap, may be throttled by the implementation."""

    async def deliver(self, job: Job, clip: Path) -> str:
        """Hand over the finished clip; returns where it went (a path, a message link). Must be idempotent."""

    async def failure(self, job: Job) -> None:
        """Tell the owner the job ended without a clip (failed, cancelled or unknown), and why."""
