"""The operations endpoint (REELBOT_HTTP_PORT): GET /healthz and GET /metrics on a small aiohttp server.

/healthz is 200 when every registered check finds nothing wrong, else 503 naming each problem; /metrics is
the Prometheus text exposition of the App's registry, with the job counts read from the database first.
"""

from __future__ import annotations

import asyncio
import contextlib
import logging
from collections.abc import AsyncIterator, Sequence
from typing import Any

from aiohttp import web

from bot.observe.health import Check, run_checks
from bot.observe.metrics import Metrics
from bot.settings import SettingsError
from bot.store.jobs import JobRepository

log = logging.getLogger(__name__)

REFRESH_TIMEOUT_S = 2.0


class OpsServer:
    def __init__(self, *, metrics: Metrics, jobs: JobRepository, checks: Sequence[Check]) -> None:
        self.metrics = metrics
        self.jobs = jobs
        self.checks = list(checks)
        self.port: int | None = None
        self._runner: web.AppRunner | None = None

    async def healthz(self, request: web.Request) -> web.Response:
        results = await run_checks(self.checks)
        reasons = [f"{name}: {problem}" for name, problems in results.items() for problem in problems]
        body = {"status": "unhealthy" if reasons else "ok", "checks": results, "reasons": reasons}
        if reasons:
            log.warning("health check failed: %s", "; ".join(reasons))
        return web.json_response(body, status=503 if reasons else 200)

    async def metrics_page(self, request: web.Request) -> web.Response:
        try:
            async with asyncio.timeout(REFRESH_TIMEOUT_S):
                await self.metrics.refresh(self.jobs)
        except Exception as exc:  # still serve the counters; the job gauge keeps its last counts
            log.warning("could not count jobs for /metrics: %r", exc)
        body, content_type = self.metrics.exposition(request.headers.get("Accept"))
        return web.Response(body=body, headers={"Content-Type": content_type})

    async def start(self, host: str, port: int) -> int:
        """Listen; returns the bound port (port 0 picks a free one, for tests)."""
        app = web.Application()
        app.router.add_get("/healthz", self.healthz)
        app.router.add_get("/metrics", self.metrics_page)
        self._runner = web.AppRunner(app, access_log=None)  # a scrape every few seconds is not news
        await self._runner.setup()
        site = web.TCPSite(self._runner, host, port)
        await site.start()
        server: Any = site._server  # aiohttp keeps the bound sockets here; the public API has no port
        self.port = int(server.sockets[0].getsockname()[1]) if port == 0 else port
        log.info("serving /healthz and /metrics on %s:%d", host, self.port)
        return self.port

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()
            self._runner = None


async def start_ops_server(settings: Any, metrics: Metrics, jobs: JobRepository,
                           checks: Sequence[Check]) -> OpsServer | None:  # fmt: skip
    """The server when REELBOT_HTTP_PORT is set, else None (it is off by default)."""
    if settings.http_port is None:
        return None
    server = OpsServer(metrics=metrics, jobs=jobs, checks=checks)
    try:
        await server.start(settings.http_host, settings.http_port)
    except OSError as exc:  # the port is taken, or the host is not ours: say which setting to change
        await server.stop()
        raise SettingsError(f"REELBOT_HTTP_PORT={settings.http_port}: cannot listen on "
                            f"{settings.http_host}:{settings.http_port} ({exc.strerror or exc})") from None  # fmt: skip
    return server


@contextlib.asynccontextmanager
async def serving(settings: Any, metrics: Metrics, jobs: JobRepository,
                  checks: Sequence[Check]) -> AsyncIterator[OpsServer | None]:  # fmt: skip
    server = await start_ops_server(settings, metrics, jobs, checks)
    try:
        yield server
    finally:
        if server is not None:
            await server.stop()
