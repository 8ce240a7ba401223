"""Where finished clips and failures go: the engine calls a Delivery; the CLI and Discord implement it."""

from __future__ import annotations

from dataclasses import dataclass
from pathlib import Path
from typing import Protocol

from bot.store.jobs import Job


@dataclass(frozen=True)
class Clip:
    """What to hand over: the file (fitted under the delivery's limit), or a link when nothing fits."""

    path: Path | None
    size_bytes: int = 0
    transcoded: bool = False
    link: str | None = None  # the full clip at the provider, when it could not be attached
    link_expires_at: str | None = None
    poster: Path | None = None  # a still frame to show beside the link


class Delivery(Protocol):
    # The largest file this delivery can take (e.g. Discord's upload limit); None means no limit.
    size_limit: int | None

    async def progress(self, job: Job) -> None:
        """The job changed state or reported progress; cheap, may be throttled by the implementation."""

    async def deliver(self, job: Job, clip: Clip) -> str:
        """Hand over the finished clip; returns where it went (a path, a message link).
        May be called again for the same job after a crash: implementations must not duplicate it."""

    async def failure(self, job: Job) -> None:
        """Tell the owner the job ended without a clip (failed, cancelled or unknown), and why."""
