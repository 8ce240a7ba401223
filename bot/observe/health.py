"""Health checks: named async callables, each returning the problems it found (none: healthy).

`reelbot run` and `reelbot worker` register different lists (the worker has no gateway); /healthz runs them
all at once, each under a short timeout, and reports every problem by check name.
"""

from __future__ import annotations

import asyncio
import math
from collections.abc import Awaitable, Callable, Sequence
from dataclasses import dataclass
from typing import Any, Protocol

import aiosqlite

CHECK_TIMEOUT_S = 2.0


@dataclass(frozen=True)
class Check:
    name: str
    run: Callable[[], Awaitable[list[str]]]


class HasHealth(Protocol):
    def health(self) -> list[str]: ...


async def _run_one(check: Check, timeout_s: float) -> list[str]:
    try:
        async with asyncio.timeout(timeout_s):
            return list(await check.run())
    except TimeoutError:
        return [f"no answer within {timeout_s:g} s"]
    except Exception as exc:  # a check that breaks is itself a problem worth reporting, not a 500
        return [f"the check failed: {exc!r}"]


async def run_checks(checks: Sequence[Check], *, timeout_s: float = CHECK_TIMEOUT_S) -> dict[str, list[str]]:
    """{check name: problems}; all checks run concurrently, so one slow check costs one timeout."""
    results = await asyncio.gather(*(_run_one(check, timeout_s) for check in checks))
    return {check.name: problems for check, problems in zip(checks, results, strict=True)}


def database_check(db: aiosqlite.Connection) -> Check:
    """The database answers a trivial query (the per-check timeout bounds a locked or stuck connection)."""

    async def run() -> list[str]:
        try:
            async with db.execute("SELECT 1") as cursor:
                row = await cursor.fetchone()
        except Exception as exc:
            return [f"SELECT 1 failed: {exc}"]
        return [] if row is not None and row[0] == 1 else [f"SELECT 1 answered {row!r}"]

    return Check("database", run)


def engine_check(engine: HasHealth) -> Check:
    """The engine's own loops (dispatcher, lease renewal) are alive: `Engine.health()`."""

    async def run() -> list[str]:
        return engine.health()

    return Check("engine", run)


def gateway_check(client: Any) -> Check:
    """A discord.py client is connected: ready, not closed, and its heartbeats acknowledged (finite latency).
    Duck-typed so the core need not import discord.py."""

    async def run() -> list[str]:
        if client.is_closed():
            return ["the Discord client is closed"]
        problems = []
        if not client.is_ready():
            problems.append("the Discord gateway is not ready")
        latency = client.latency
        if not isinstance(latency, int | float) or not math.isfinite(latency):
            problems.append("no heartbeat acknowledged by the Discord gateway")
        return problems

    return Check("gateway", run)
