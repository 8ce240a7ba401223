"""The webhook receiver: providers call back when a task changes, so reelbot hears of a finished clip at
once instead of at the next poll.

A callback never moves a job by itself. It is verified (signature, or the per-job token in its URL), then
it wakes the job's follower, which polls the provider and acts on what the poll says. So a forged call
can do nothing, a duplicate is harmless, and polling carries on as the backstop if callbacks never come.
"""

from __future__ import annotations

import asyncio
import logging
from collections.abc import Callable
from urllib.parse import urlsplit

from aiohttp import web

from bot.providers.base import Provider, TaskHandle, WebhookRejected
from bot.store.jobs import JobRepository

log = logging.getLogger(__name__)

MAX_BODY = 1024 * 1024


class Wakeups:
    """One event per job being followed; a verified callback sets it."""

    def __init__(self) -> None:
        self._events: dict[str, asyncio.Event] = {}

    def event(self, job_id: str) -> asyncio.Event:
        return self._events.setdefault(job_id, asyncio.Event())

    def wake(self, job_id: str) -> None:
        event = self._events.get(job_id)
        if event is not None:
            event.set()

    def forget(self, job_id: str) -> None:
        self._events.pop(job_id, None)


def callback_url(public_base: str, provider: str, job_id: str) -> str:
    """Where a provider should call back for one job (adapters append their per-job token)."""
    return f"{public_base.rstrip('/')}/webhooks/{provider}/{job_id}"


class WebhookReceiver:
    def __init__(
        self,
        *,
        jobs: JobRepository,
        provider_for: Callable[[str], Provider],
        wakeups: Wakeups,
        public_url: str,
    ) -> None:
        self.jobs = jobs
        self.provider_for = provider_for
        self.wakeups = wakeups
        self.public_url = public_url
        self.accepted = 0
        self.rejected = 0
        self.app = web.Application(client_max_size=MAX_BODY)
        self.app.router.add_post("/webhooks/{provider}/{job_id}", self.receive)
        self._runner: web.AppRunner | None = None

    async def start(self, host: str, port: int) -> int:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        return int(site._server.sockets[0].getsockname()[1])  # type: ignore[union-attr]

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    async def receive(self, request: web.Request) -> web.Response:
        provider_name, job_id = request.match_info["provider"], request.match_info["job_id"]
        body = await request.read()
        job = await self.jobs.get(job_id)
        if job is None or job.provider != provider_name:
            self.rejected += 1
            return web.json_response({"error": "unknown job"}, status=404)
        handle = TaskHandle.from_json(job.handle_json) if job.handle_json else None
        try:
            provider = self.provider_for(provider_name)
            event = provider.parse_webhook(request.headers, body, token=request.query.get("token"), handle=handle)
        except WebhookRejected as exc:
            self.rejected += 1
            log.warning("webhook for job %s rejected: %s", job_id, exc)
            return web.json_response({"error": "rejected"}, status=401)
        except Exception:
            self.rejected += 1
            log.exception("webhook for job %s could not be read", job_id)
            return web.json_response({"error": "unreadable"}, status=400)
        if handle is not None and event.task_id and event.task_id != handle.task_id:
            self.rejected += 1
            return web.json_response({"error": "task does not belong to this job"}, status=409)
        self.accepted += 1
        self.wakeups.wake(job_id)  # the follower re-polls and acts on what the provider says
        return web.json_response({"ok": True})


def listen_address(public_url: str, bind: str | None) -> tuple[str, int]:
    """Where to bind: REELBOT_WEBHOOK_LISTEN (host:port), else all interfaces on the public URL's port."""
    if bind:
        host, _, port = bind.rpartition(":")
        return host or "0.0.0.0", int(port)
    parts = urlsplit(public_url)
    return "0.0.0.0", parts.port or (443 if parts.scheme == "https" else 80)
