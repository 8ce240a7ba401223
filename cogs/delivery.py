"""Delivering to Discord: the status message, the clip in the thread, failures in plain words.

Everything here uses the bot's own token (channel and thread messages), never the interaction token, so a
job that ends hours later is delivered all the same. Messages carry a nonce derived from the job id with
`enforce_nonce`, so a delivery redone after a crash does not post twice.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
import time
from typing import TYPE_CHECKING

import discord

from bot.engine.delivery import Clip
from bot.engine.states import JobState
from bot.store.jobs import Job
from cogs.messages import failure_text, result_text, status_embed
from cogs.views import result_view, status_view

if TYPE_CHECKING:
    from bot.app import ReelBot

log = logging.getLogger(__name__)


def nonce(job_id: str, what: str) -> str:
    return f"rb-{job_id}-{what}"[:25]


class StatusEditor:
    """Keeps each job's status message current without tripping Discord's edit limits: a state change is
    shown within a couple of seconds, progress alone at most every ten, the final state at once."""

    def __init__(self, bot: ReelBot) -> None:
        self.bot = bot
        self._latest: dict[str, Job] = {}
        self._last_edit: dict[str, float] = {}
        self._last_state: dict[str, JobState] = {}
        self._pending: dict[str, asyncio.Task[None]] = {}
        self._gone: set[str] = set()
        self.edits = 0

    async def update(self, job: Job) -> None:
        target = job.delivery.get("status")
        if not target or job.id in self._gone:
            return
        self._latest[job.id] = job
        changed = self._last_state.get(job.id) != job.state
        settings = self.bot.app.settings
        if job.state.finished:
            gap = 0.0
        else:
            gap = settings.status_state_edit_s if changed else settings.status_progress_edit_s
        wait = self._last_edit.get(job.id, 0.0) + gap - time.monotonic()
        if wait <= 0:
            pending = self._pending.pop(job.id, None)
            if pending is not None and pending is not asyncio.current_task():
                pending.cancel()
            await self._edit(job.id)
        elif job.id not in self._pending:
            self._pending[job.id] = asyncio.create_task(self._later(job.id, wait))

    async def _later(self, job_id: str, wait: float) -> None:
        await asyncio.sleep(wait)
        self._pending.pop(job_id, None)
        await self._edit(job_id)

    async def _edit(self, job_id: str) -> None:
        job = self._latest.get(job_id)
        if job is None:
            return
        target = job.delivery["status"]
        message = self.bot.get_partial_messageable(int(target["channel_id"])).get_partial_message(
            int(target["message_id"])
        )
        provider = self.bot.app.provider(job.provider)
        embed = status_embed(job, provider_name=provider.display_name, preview=provider.is_preview)
        self._last_edit[job_id] = time.monotonic()
        self._last_state[job_id] = job.state
        try:
            await message.edit(content=None, embed=embed, view=None if job.state.finished else status_view(job.id))
            self.edits += 1
        except (discord.NotFound, discord.Forbidden) as exc:
            log.info("job %s: status message can no longer be edited (%s)", job_id, exc)
            self._gone.add(job_id)
        except discord.HTTPException as exc:
            log.warning("job %s: status edit failed: %s", job_id, exc)
        if job.state.finished:
            self._latest.pop(job_id, None)

    async def close(self) -> None:
        for task in self._pending.values():
            task.cancel()
        for task in self._pending.values():
            with contextlib.suppress(asyncio.CancelledError):
                await task


class DiscordDelivery:
    """The engine's delivery for jobs started from Discord. Built per job from its recorded target."""

    def __init__(self, bot: ReelBot, job: Job) -> None:
        self.bot = bot
        self.size_limit: int | None = job.delivery.get("size_limit")

    def _channel(self, job: Job) -> discord.PartialMessageable:
        target = job.delivery
        channel_id = target.get("channel_id") or job.channel_id
        return self.bot.get_partial_messageable(int(channel_id))

    async def progress(self, job: Job) -> None:
        await self.bot.status_editor.update(job)

    async def deliver(self, job: Job, clip: Clip) -> str:
        provider = self.bot.app.provider(job.provider)
        text = result_text(job, provider_name=provider.display_name, preview=provider.is_preview,
                           transcoded=clip.transcoded)  # fmt: skip
        channel = self._channel(job)
        files: list[discord.File] = []
        if job.nsfw and not job.delivery.get("nsfw_ok"):
            text += "\nThe provider flagged this clip as NSFW; it is not shown in a channel that is not age-restricted."
        elif clip.path is not None:
            files.append(discord.File(clip.path, filename=f"reelbot-{job.id}.mp4"))
        else:
            expiry = f" (the link works until {clip.link_expires_at})" if clip.link_expires_at else ""
            text += f"\nThe clip is too large to upload here. Full clip: {clip.link}{expiry}"
            if clip.poster is not None:
                files.append(discord.File(clip.poster, filename=f"reelbot-{job.id}.jpg"))
        message = await channel.send(content=text, files=files, view=result_view(job.id), nonce=nonce(job.id, "clip"))
        return f"discord:{channel.id}/{message.id}"

    async def failure(self, job: Job) -> None:
        with contextlib.suppress(discord.HTTPException):
            await self._channel(job).send(
                content=failure_text(job),
                nonce=nonce(job.id, "fail"),
                allowed_mentions=discord.AllowedMentions(users=True, roles=False, everyone=False),
            )
        await self.bot.status_editor.update(job)
