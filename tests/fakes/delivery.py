"""A Delivery that records what the engine tells it (the CLI and Discord have their own)."""

from __future__ import annotations

import shutil
from dataclasses import dataclass, field
from pathlib import Path

from bot.engine.delivery import Clip
from bot.store.jobs import Job


@dataclass
class RecordingDelivery:
    folder: Path
    size_limit: int | None = None
    progress_states: list[str] = field(default_factory=list)
    delivered: list[tuple[str, Path]] = field(default_factory=list)
    links: list[tuple[str, Clip]] = field(default_factory=list)
    failures: list[Job] = field(default_factory=list)

    async def progress(self, job: Job) -> None:
        self.progress_states.append(job.state.value)

    async def deliver(self, job: Job, clip: Clip) -> str:
        if clip.path is None:
            self.links.append((job.id, clip))
            return str(clip.link)
        self.folder.mkdir(parents=True, exist_ok=True)
        target = self.folder / f"{job.id}.mp4"
        shutil.copyfile(clip.path, target)
        self.delivered.append((job.id, target))
        return str(target)

    async def failure(self, job: Job) -> None:
        self.failures.append(job)
