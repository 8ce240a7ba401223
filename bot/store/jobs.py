"""The jobs repository: all SQL about jobs lives here."""

from __future__ import annotations

import json
import logging
import secrets
from dataclasses import dataclass, fields
from typing import Any

import aiosqlite

from bot.engine.states import UNFINISHED, JobState, can_move
from bot.request import GenerationRequest
from bot.store.db import now_iso, transaction

log = logging.getLogger(__name__)


class IllegalTransition(RuntimeError):
    pass


@dataclass(frozen=True)
class Job:
    id: str
    user_id: str
    guild_id: str | None
    channel_id: str | None
    request_json: str
    provider: str
    provider_task_id: str | None
    poll_url: str | None
    result_url: str | None
    cancel_url: str | None
    handle_json: str | None
    state: JobState
    cost_micros: int
    price_is_estimate: bool
    progress: float | None
    queue_position: int | None
    output_path: str | None
    output_url: str | None
    nsfw: bool
    error_code: str | None
    error_message: str | None
    created_at: str
    updated_at: str
    queued_at: str | None
    awaiting_approval_at: str | None
    submitting_at: str | None
    submitted_at: str | None
    running_at: str | None
    downloading_at: str | None
    delivering_at: str | None
    done_at: str | None
    failed_at: str | None
    cancelled_at: str | None
    unknown_at: str | None
    delivery_json: str | None = None
    charged_micros: int = 0
    cancel_requested_by: str | None = None
    lease_owner: str | None = None
    lease_expires_at: str | None = None
    # who let it out of awaiting_approval, and when (migration 0006); its deadline counts from then
    approved_by: str | None = None
    approved_at: str | None = None

    @property
    def request(self) -> GenerationRequest:
        return GenerationRequest.model_validate_json(self.request_json)

    @property
    def handle(self) -> dict[str, Any] | None:
        return json.loads(self.handle_json) if self.handle_json else None

    @property
    def delivery(self) -> dict[str, Any]:
        return json.loads(self.delivery_json) if self.delivery_json else {}

    def entered(self, state: JobState) -> str | None:
        return getattr(self, f"{state.value}_at")

    @classmethod
    def from_row(cls, row: aiosqlite.Row) -> Job:
        values = {name: row[name] for name in row.keys() if name in _FIELDS}
        values["state"] = JobState(values["state"])
        values["price_is_estimate"] = bool(values["price_is_estimate"])
        values["nsfw"] = bool(values["nsfw"])
        return cls(**values)


_FIELDS = {f.name for f in fields(Job)}
# Columns a transition may set besides the state itself (leases have their own methods).
_FIXED = {"id", "user_id", "guild_id", "channel_id", "request_json", "provider", "state", "created_at"}
_UPDATABLE = _FIELDS - _FIXED - {"lease_owner", "lease_expires_at"}


def new_job_id() -> str:
    # 10 base32 characters: short enough to type in /job id:, 50 bits so collisions do not happen in practice
    alphabet = "abcdefghijkmnpqrstuvwxyz23456789"
    return "".join(secrets.choice(alphabet) for _ in range(10))


class JobRepository:
    def __init__(self, db: aiosqlite.Connection) -> None:
        self.db = db

    async def create(
        self,
        *,
        request: GenerationRequest,
        provider: str,
        user_id: str,
        cost_micros: int,
        price_is_estimate: bool = False,
        guild_id: str | None = None,
        channel_id: str | None = None,
        state: JobState = JobState.QUEUED,
        job_id: str | None = None,
        delivery: dict[str, Any] | None = None,
        conn: aiosqlite.Connection | None = None,
    ) -> Job:
        """Insert a new job. Pass `conn` when the caller already holds a transaction (e.g. with a reservation)."""
        job_id = job_id or new_job_id()
        at = now_iso()
        sql = (
            "INSERT INTO jobs (id, user_id, guild_id, channel_id, request_json, provider, state, cost_micros,"
            f" price_is_estimate, delivery_json, created_at, updated_at, {state.value}_at)"
            " VALUES (?,?,?,?,?,?,?,?,?,?,?,?,?)"
        )
        params = (
            job_id, user_id, guild_id, channel_id, request.model_dump_json(), provider, state.value,
            cost_micros, int(price_is_estimate), json.dumps(delivery) if delivery else None, at, at, at,
        )  # fmt: skip
        if conn is not None:
            await conn.execute(sql, params)
            await self._event(conn, job_id, None, state, "created", at)
        else:
            async with transaction(self.db):
                await self.db.execute(sql, params)
                await self._event(self.db, job_id, None, state, "created", at)
        job = await self.get(job_id, conn=conn)
        assert job is not None
        return job

    async def get(self, job_id: str, *, conn: aiosqlite.Connection | None = None) -> Job | None:
        async with (conn or self.db).execute("SELECT * FROM jobs WHERE id = ?", (job_id,)) as cursor:
            row = await cursor.fetchone()
        return Job.from_row(row) if row else None

    async def require(self, job_id: str) -> Job:
        job = await self.get(job_id)
        if job is None:
            raise KeyError(f"no job with id {job_id!r}")
        return job

    async def transition(
        self,
        job_id: str,
        target: JobState,
        *,
        expect: JobState | frozenset[JobState] | set[JobState] | None = None,
        detail: str | None = None,
        conn: aiosqlite.Connection | None = None,
        **changes: Any,
    ) -> Job | None:
        """Move a job to `target` in one committed write, with its timestamp and any other columns.

        Compare-and-set: returns None (and changes nothing) when the job is no longer in an expected state,
        which is how a cancel racing a completion resolves to exactly one winner.
        """
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        if conn is None:
            async with transaction(self.db):
                return await self._transition(self.db, job_id, target, expect, detail, changes)
        return await self._transition(conn, job_id, target, expect, detail, changes)

    async def _transition(
        self,
        conn: aiosqlite.Connection,
        job_id: str,
        target: JobState,
        expect: JobState | frozenset[JobState] | set[JobState] | None,
        detail: str | None,
        changes: dict[str, Any],
    ) -> Job | None:
        current = await self.get(job_id, conn=conn)
        if current is None:
            raise KeyError(f"no job with id {job_id!r}")
        allowed = {expect} if isinstance(expect, JobState) else set(expect or ())
        if allowed and current.state not in allowed:
            return None
        if current.state != target and not can_move(current.state, target):
            if allowed:
                raise IllegalTransition(f"job {job_id}: {current.state} -> {target} is not a legal move")
            return None
        at = now_iso()
        columns = {**changes, "state": target.value, "updated_at": at}
        if current.state != target:
            columns[f"{target.value}_at"] = at
        assignments = ", ".join(f"{name} = ?" for name in columns)
        await conn.execute(
            f"UPDATE jobs SET {assignments} WHERE id = ? AND state = ?",
            (*columns.values(), job_id, current.state.value),
        )
        if current.state != target:
            await self._event(conn, job_id, current.state, target, detail, at)
            # Every move of every job, whoever makes it (engine, cancel, moderator), with the job's ids as fields.
            log.info("job %s: %s -> %s%s", job_id, current.state.value, target.value, f" ({detail})" if detail else "",
                     extra={"job_id": job_id, "guild_id": current.guild_id, "provider": current.provider})  # fmt: skip
        return await self.get(job_id, conn=conn)

    async def update(self, job_id: str, **changes: Any) -> None:
        """Change columns without moving state (progress, queue position)."""
        unknown = set(changes) - _UPDATABLE
        if unknown:
            raise ValueError(f"not updatable: {sorted(unknown)}")
        columns = {**changes, "updated_at": now_iso()}
        assignments = ", ".join(f"{name} = ?" for name in columns)
        async with transaction(self.db):
            await self.db.execute(f"UPDATE jobs SET {assignments} WHERE id = ?", (*columns.values(), job_id))

    async def claim(self, job_id: str, owner: str, until: str, *, dead_owners: set[str] = frozenset()) -> bool:
        """Take the job's lease if it is free, ours, expired, or held by a process known to be gone."""
        marks = ",".join("?" for _ in dead_owners)
        dead = f" OR lease_owner IN ({marks})" if dead_owners else ""
        async with transaction(self.db):
            cursor = await self.db.execute(
                "UPDATE jobs SET lease_owner = ?, lease_expires_at = ? WHERE id = ? AND (lease_owner IS NULL"
                f" OR lease_owner = ? OR lease_expires_at < ?{dead})",
                (owner, until, job_id, owner, now_iso(), *dead_owners),
            )
            return cursor.rowcount == 1

    async def renew(self, owner: str, until: str) -> None:
        async with transaction(self.db):
            await self.db.execute("UPDATE jobs SET lease_expires_at = ? WHERE lease_owner = ?", (until, owner))

    async def release_lease(self, job_id: str, owner: str) -> None:
        async with transaction(self.db):
            await self.db.execute(
                "UPDATE jobs SET lease_owner = NULL, lease_expires_at = NULL WHERE id = ? AND lease_owner = ?",
                (job_id, owner),
            )

    async def lease_owners(self) -> set[str]:
        async with self.db.execute("SELECT DISTINCT lease_owner FROM jobs WHERE lease_owner IS NOT NULL") as cursor:
            return {str(row[0]) for row in await cursor.fetchall()}

    async def list_in(self, states: frozenset[JobState] | set[JobState]) -> list[Job]:
        marks = ",".join("?" for _ in states)
        sql = f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at, id"
        async with self.db.execute(sql, tuple(s.value for s in states)) as cursor:
            return [Job.from_row(row) for row in await cursor.fetchall()]

    async def unreported_failures(self, since: str) -> list[Job]:
        """Jobs that ended without a clip and whose owner has not been told yet (e.g. after a crash)."""
        sql = (
            "SELECT * FROM jobs WHERE state IN ('failed', 'cancelled', 'unknown') AND updated_at >= ?"
            " AND NOT EXISTS (SELECT 1 FROM deliveries d WHERE d.job_id = jobs.id AND d.what = 'failure')"
            " ORDER BY updated_at"
        )
        async with self.db.execute(sql, (since,)) as cursor:
            return [Job.from_row(row) for row in await cursor.fetchall()]

    async def count_by_state_and_provider(self) -> dict[tuple[str, str], int]:
        """{(state, provider): jobs}, for the metrics gauge: one GROUP BY, one pass, whatever the table's size."""
        sql = "SELECT state, provider, COUNT(*) FROM jobs GROUP BY state, provider"
        async with self.db.execute(sql) as cursor:
            return {(str(row[0]), str(row[1])): int(row[2]) for row in await cursor.fetchall()}

    async def list_unfinished(self) -> list[Job]:
        marks = ",".join("?" for _ in UNFINISHED)
        sql = f"SELECT * FROM jobs WHERE state IN ({marks}) ORDER BY created_at"
        async with self.db.execute(sql, tuple(s.value for s in UNFINISHED)) as cursor:
            return [Job.from_row(row) for row in await cursor.fetchall()]

    async def list_recent(self, *, user_id: str | None = None, limit: int = 20) -> list[Job]:
        if user_id is None:
            sql, params = "SELECT * FROM jobs ORDER BY created_at DESC, id LIMIT ?", (limit,)
        else:
            sql = "SELECT * FROM jobs WHERE user_id = ? ORDER BY created_at DESC, id LIMIT ?"
            params = (user_id, limit)  # type: ignore[assignment]
        async with self.db.execute(sql, params) as cursor:
            return [Job.from_row(row) for row in await cursor.fetchall()]

    async def events(self, job_id: str) -> list[tuple[str, str | None, str, str | None]]:
        sql = "SELECT at, from_state, to_state, detail FROM job_events WHERE job_id = ? ORDER BY id"
        async with self.db.execute(sql, (job_id,)) as cursor:
            return [tuple(row) for row in await cursor.fetchall()]  # type: ignore[misc]

    @staticmethod
    async def _event(
        conn: aiosqlite.Connection, job_id: str, source: JobState | None, target: JobState, detail: str | None, at: str
    ) -> None:
        await conn.execute(
            "INSERT INTO job_events (job_id, at, from_state, to_state, detail) VALUES (?,?,?,?,?)",
            (job_id, at, source.value if source else None, target.value, detail),
        )
