"""Jobs that wait for a moderator: which must, approving and denying them, and releasing those nobody decided.

A job that needs approval is accepted with its money reserved in `awaiting_approval`; the dispatcher never
starts it. Approving is a compare-and-set to `queued` (committed with the admin action) and wakes the
dispatcher; denying and expiring end it `cancelled` through `JobRunner.finish`, which releases the money in
the same transaction as the move and the admin action, and the member is told why. Whoever comes second —
a second moderator, a cancel, the expiry sweep — finds the job moved on and gets a plain error.
"""

from __future__ import annotations

import contextlib
import logging
from collections.abc import Awaitable, Callable, Iterable
from datetime import datetime
from typing import TYPE_CHECKING, Any

import aiosqlite

from bot.engine.runner import parse_iso
from bot.engine.states import JobState
from bot.ledger import SYSTEM_ACTOR, Clock, utc_now
from bot.providers.base import ErrorCode, ProviderError
from bot.store.audit import ActionKind, actions_for_job, record_action
from bot.store.db import now_iso, transaction
from bot.store.jobs import Job

if TYPE_CHECKING:
    from bot.engine.engine import Engine
    from bot.guilds import GuildSettings

log = logging.getLogger(__name__)

DEFAULT_APPROVAL_TIMEOUT_S = 24 * 3600
EXPIRED_REASON = "nobody approved it in time"
MAX_REASON_CHARS = 500


def needs_approval(cost_micros: int, settings: GuildSettings, member_role_ids: Iterable[str]) -> str | None:
    """Why the job must wait for a moderator, in plain words (over the server's approval threshold, or the
    member has none of the roles that generate without approval); None when it may run at once. Pure: the
    rule itself is the settings' own (`GuildSettings.approval_reason`)."""
    return settings.approval_reason(cost_micros, [str(role) for role in member_role_ids])


def approval_timeout_s(settings: Any) -> float:
    return float(getattr(settings, "approval_timeout_s", DEFAULT_APPROVAL_TIMEOUT_S))


class ApprovalError(Exception):
    """Approving or denying a job was refused; the message says why in plain words."""


class UnknownJob(ApprovalError, LookupError):
    pass


class ApprovalNotAllowed(ApprovalError):
    pass


class InvalidDecision(ApprovalError, ValueError):
    pass


class NotAwaitingApproval(ApprovalError):
    """The job was already decided, cancelled or finished; `job` is its current record."""

    def __init__(self, job: Job, message: str) -> None:
        self.job = job
        super().__init__(message)


async def _not_awaiting(db: aiosqlite.Connection, job: Job) -> NotAwaitingApproval:
    """Say what happened to the job instead: who approved or denied it, or how it ended."""
    decisions = [a for a in await actions_for_job(db, job.id) if a.kind in _DECISIONS]
    last = decisions[-1] if decisions else None
    if last is not None and last.kind == ActionKind.JOB_APPROVE:
        text = f"job {job.id} was already approved by {last.actor}"
    elif last is not None and last.kind == ActionKind.JOB_DENY:
        text = f"job {job.id} was already denied by {last.actor}: {last.reason}"
    elif last is not None and last.kind == ActionKind.JOB_APPROVAL_EXPIRED:
        text = f"job {job.id} was released: {EXPIRED_REASON}"
    elif job.state.finished:
        why = f": {job.error_message}" if job.error_message else ""
        text = f"job {job.id} has already ended ({job.state.value}{why})"
    else:
        text = f"job {job.id} is not waiting for approval (it is {job.state.value})"
    return NotAwaitingApproval(job, text)


_DECISIONS = {ActionKind.JOB_APPROVE, ActionKind.JOB_DENY, ActionKind.JOB_APPROVAL_EXPIRED}


async def approve_job(engine: Engine, job_id: str, *, moderator_id: str) -> Job:
    """awaiting_approval -> queued (compare-and-set, with a `job_approve` admin action), then wake the
    dispatcher. Raises UnknownJob, ApprovalNotAllowed (one's own job) or NotAwaitingApproval."""
    jobs = engine.jobs
    async with transaction(jobs.db) as conn:
        job = await jobs.get(job_id, conn=conn)
        if job is None:
            raise UnknownJob(f"there is no job {job_id}")
        if job.user_id == moderator_id:
            raise ApprovalNotAllowed("you cannot approve your own job; another moderator has to")
        moved = await jobs.transition(
            job_id, JobState.QUEUED, expect=JobState.AWAITING_APPROVAL, detail=f"approved by {moderator_id}",
            conn=conn, approved_by=moderator_id, approved_at=now_iso(),
        )  # fmt: skip
        if moved is not None:
            await record_action(
                jobs.db, guild_id=job.guild_id, actor=moderator_id, kind=ActionKind.JOB_APPROVE, target=job.user_id,
                amount_micros=job.cost_micros, reason=f"approved job {job.id}", detail={"job_id": job.id},
                conn=conn,
            )  # fmt: skip
    if moved is None:
        raise await _not_awaiting(jobs.db, await jobs.require(job_id))
    engine.wake()
    with contextlib.suppress(Exception):  # the status message moves on from "waiting for approval"
        await engine.delivery_for(moved).progress(moved)
    return moved


def _decision_recorder(
    kind: ActionKind, actor: str, reason: str
) -> Callable[[aiosqlite.Connection, Job], Awaitable[object]]:
    async def record(conn: aiosqlite.Connection, job: Job) -> None:
        await record_action(
            conn, guild_id=job.guild_id, actor=actor, kind=kind, target=job.user_id, amount_micros=job.cost_micros,
            reason=reason, detail={"job_id": job.id}, conn=conn,
        )  # fmt: skip

    return record


async def _release(engine: Engine, job: Job, *, actor: str, message: str, kind: ActionKind, reason: str) -> Job | None:
    """End a waiting job `cancelled`: the release and the admin action commit with the move; then tell the
    member (the runner's one-time failure report)."""
    error = ProviderError(ErrorCode.CANCELED, message, provider=job.provider)
    moved = await engine.runner.finish(
        job, JobState.CANCELLED, expect=JobState.AWAITING_APPROVAL, error=error, actor=actor, detail=message,
        also=_decision_recorder(kind, actor, reason),
    )  # fmt: skip
    if moved is not None:
        engine.wake()
        try:
            await engine.runner.report_failure(moved, engine.delivery_for(moved))
        except Exception:  # recorded as unreported: the engine's start-up reports it again
            log.exception("job %s: could not tell the member it was released", job.id)
    return moved


async def deny_job(engine: Engine, job_id: str, *, moderator_id: str, reason: str) -> Job:
    """awaiting_approval -> cancelled, its money released, the member told `reason`. Raises UnknownJob,
    NotAwaitingApproval, or InvalidDecision (a ValueError) without a reason."""
    text = " ".join((reason or "").split())[:MAX_REASON_CHARS]
    if not text:
        raise InvalidDecision("say why the job is denied (the member is told)")
    job = await engine.jobs.get(job_id)
    if job is None:
        raise UnknownJob(f"there is no job {job_id}")
    moved = await _release(engine, job, actor=moderator_id, message=f"a moderator declined it: {text}",
                           kind=ActionKind.JOB_DENY, reason=text)  # fmt: skip
    if moved is None:
        raise await _not_awaiting(engine.jobs.db, await engine.jobs.require(job_id))
    return moved


class ApprovalExpiry:
    """The engine's periodic sweep: release jobs that waited for approval longer than their server allows."""

    __name__ = "expire_job_approvals"  # how the engine's maintenance loop names it in logs

    def __init__(
        self,
        engine: Engine,
        settings_for: Callable[[str | None], Awaitable[Any]],
        *,
        clock: Clock = utc_now,
    ) -> None:
        self.engine = engine
        self.settings_for = settings_for
        self.clock = clock

    async def __call__(self) -> list[Job]:
        """Release what is overdue; returns the jobs released by this call."""
        waiting = await self.engine.jobs.list_in({JobState.AWAITING_APPROVAL})
        if not waiting:
            return []
        now: datetime = self.clock()
        timeouts: dict[str | None, float] = {}
        released = []
        for job in waiting:
            if job.guild_id not in timeouts:
                timeouts[job.guild_id] = approval_timeout_s(await self.settings_for(job.guild_id))
            since = parse_iso(job.awaiting_approval_at or job.created_at)
            if (now - since).total_seconds() < timeouts[job.guild_id]:
                continue
            moved = await _release(self.engine, job, actor=SYSTEM_ACTOR, message=EXPIRED_REASON,
                                   kind=ActionKind.JOB_APPROVAL_EXPIRED, reason=EXPIRED_REASON)  # fmt: skip
            if moved is not None:  # None: a moderator decided it meanwhile
                released.append(moved)
        return released
