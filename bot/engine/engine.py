"""The job engine: accepts jobs with their money reserved, starts them fairly, resumes them after a
restart, cancels them, and never lets two processes drive the same job.
"""

from __future__ import annotations

import asyncio
import contextlib
import dataclasses
import logging
import os
import secrets
import socket
from collections.abc import Awaitable, Callable, Sequence
from datetime import UTC, datetime, timedelta
from typing import TYPE_CHECKING, Any

from bot.engine import approvals
from bot.engine.delivery import Delivery
from bot.engine.runner import JobRunner
from bot.engine.scheduler import HOLDS_PROVIDER_SLOT, IN_FLIGHT, Caps, queue_positions, startable
from bot.engine.states import JobState
from bot.engine.webhooks import WebhookReceiver, listen_address
from bot.ledger import InsufficientQuota, Ledger
from bot.observe.logs import job_context
from bot.providers.base import ErrorCode, Provider, ProviderError
from bot.request import GenerationRequest, InvalidRequest
from bot.spend_cap import SpendCapReached
from bot.store.db import transaction
from bot.store.jobs import Job, JobRepository, new_job_id

if TYPE_CHECKING:
    from bot.funding import Funding

log = logging.getLogger(__name__)

LEASE_S = 60.0
RESPAWN_AFTER_CRASH_S = 30.0
MAX_CRASHES = 3  # a job that keeps hitting a bug is failed (and released) rather than retried for ever
# States an engine drives on its own; QUEUED waits for the scheduler, AWAITING_APPROVAL for a moderator.
RESUMABLE = IN_FLIGHT
# The engine's long-lived tasks, as /healthz names them.
LOOP_NAMES = {"engine-dispatch": "dispatcher", "engine-leases": "lease renewal loop"}


class NotAllowed(Exception):
    """The person may not do this to the job (e.g. cancel someone else's)."""


class CannotCancel(Exception):
    pass


def _stamp(seconds_from_now: float) -> str:
    moment = datetime.now(UTC) + timedelta(seconds=seconds_from_now)
    return moment.strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


def _pid_alive(pid: int) -> bool:
    try:
        os.kill(pid, 0)
    except ProcessLookupError:
        return False
    except PermissionError:
        return True
    return True


class Engine:
    def __init__(
        self,
        *,
        jobs: JobRepository,
        ledger: Ledger,
        runner: JobRunner,
        provider_for: Callable[[str], Provider],
        delivery_for: Callable[[Job], Delivery],
        caps: Caps,
        tick_s: float = 5.0,
        receiver: WebhookReceiver | None = None,
        funding: Funding | None = None,
    ) -> None:
        self.jobs = jobs
        # Who pays for a job (spend cap, role allowances, the pool); None: the member's own account only.
        self.funding = funding
        # Told (once per UTC day, across processes) when the daily spend cap first refuses a job.
        self.on_spend_cap_reached: Callable[[SpendCapReached], Awaitable[None]] | None = None
        # Housekeeping run from the dispatch loop at most once per tick (e.g. expiring pool grants).
        self.maintenance: list[Callable[[], Awaitable[object]]] = []
        self._maintained_at: float | None = None
        self.ledger = ledger
        self.runner = runner
        self.metrics = runner.metrics  # one set of metrics per App, reached through its runner
        self.provider_for = provider_for
        self.delivery_for = delivery_for
        self.caps = caps
        self.tick_s = tick_s
        self.receiver = receiver
        self.webhook_port: int | None = None
        self.owner = f"{socket.gethostname()}:{os.getpid()}:{secrets.token_hex(3)}"
        self._tasks: dict[str, asyncio.Task[None]] = {}
        self._crashes: dict[str, int] = {}
        self._wake = asyncio.Event()
        self._loops: list[asyncio.Task[None]] = []
        self._idle = asyncio.Event()

    # --- accepting ----------------------------------------------------------------------------------
    async def accept(
        self,
        request: GenerationRequest,
        *,
        provider: str,
        user_id: str,
        guild_id: str | None = None,
        channel_id: str | None = None,
        delivery: dict[str, Any] | None = None,
        state: JobState = JobState.QUEUED,
        role_ids: Sequence[str] | None = None,
    ) -> Job:
        """Price the request, reserve its cost and record the job — all in one transaction, so money is
        never held for a job that does not exist, nor a job queued without its money held.
        Raises InvalidRequest (the provider cannot take it), InsufficientQuota (PoolDrawRefused when the pool
        cannot cover the rest) or SpendCapReached. `role_ids`: the member's roles, for their roles' allowance."""
        adapter = self.provider_for(provider)
        refused = adapter.check(request)
        if refused:
            raise InvalidRequest(refused)
        quote = adapter.quote(request)
        job_id = new_job_id()
        try:
            async with transaction(self.jobs.db) as conn:
                job = await self.jobs.create(
                    request=request, provider=provider, user_id=user_id, guild_id=guild_id, channel_id=channel_id,
                    cost_micros=quote.micros, price_is_estimate=quote.estimate, state=state, job_id=job_id,
                    delivery=delivery, conn=conn,
                )  # fmt: skip
                reason = f"{quote.basis} on {provider}"
                if self.funding is not None:  # the daily spend cap, the roles' allowance, the pool for the rest
                    await self.funding.reserve_job(
                        conn, job_id=job_id, guild_id=guild_id or "", user_id=user_id, amount=quote.micros,
                        actor=user_id, reason=reason, role_ids=role_ids,
                    )  # fmt: skip
                else:
                    account = await self.ledger.account_for_user(guild_id or "", user_id, conn=conn)
                    await self.ledger.reserve(account, quote.micros, job_id=job_id, actor=user_id, reason=reason,
                                              conn=conn)  # fmt: skip
        except InsufficientQuota:
            self.metrics.reservation("refused")
            raise
        except SpendCapReached as refused:
            self.metrics.reservation("refused")
            await self._spend_cap_reached(refused)
            raise
        self.metrics.reservation("accepted")  # counted once committed: a rolled-back hold is no reservation
        self.wake()
        return job

    async def _spend_cap_reached(self, refused: SpendCapReached) -> None:
        """Remember the day's refusal (the job's own transaction was rolled back) and tell the owners once."""
        if self.funding is None:
            return
        try:
            await self.funding.spend_cap.record_refusal(refused)
            if self.on_spend_cap_reached is not None and await self.funding.spend_cap.mark_owner_told(refused.day):
                await self.on_spend_cap_reached(refused)
        except Exception:
            log.exception("could not record or report that the daily spend cap was reached")

    # --- running ------------------------------------------------------------------------------------
    def wake(self) -> None:
        self._wake.set()

    async def start(self) -> None:
        """Resume what was in flight, report failures nobody heard of, then keep dispatching."""
        for job in await self.jobs.list_in(RESUMABLE):
            await self._spawn(job.id)
        since = _stamp(-7 * 24 * 3600)
        for job in await self.jobs.unreported_failures(since):
            with contextlib.suppress(Exception):
                await self.runner.report_failure(job, self.delivery_for(job))
        self._loops = [
            asyncio.create_task(self._dispatch_loop(), name="engine-dispatch"),
            asyncio.create_task(self._lease_loop(), name="engine-leases"),
        ]
        if self.receiver is not None:
            host, port = listen_address(self.receiver.public_url, self.runner.settings.webhook_listen)
            self.webhook_port = await self.receiver.start(host, port)

    async def stop(self) -> None:
        """Stop driving; unfinished jobs stay where they are and the next start resumes them."""
        if self.receiver is not None:
            await self.receiver.stop()
        for task in [*self._loops, *self._tasks.values()]:
            task.cancel()
        for task in [*self._loops, *self._tasks.values()]:
            with contextlib.suppress(asyncio.CancelledError, Exception):
                await task
        await self.runner.drain(self.runner.settings.http_submit_timeout_s + 5)
        for job_id in list(self._tasks):
            await self.jobs.release_lease(job_id, self.owner)
        self._tasks.clear()

    async def run_until_idle(self, *, poll_s: float = 0.2) -> None:
        """For `reelbot worker --until-idle`: run until nothing is queued or in flight."""
        await self.start()
        try:
            while True:
                await asyncio.sleep(poll_s)
                if self._tasks:
                    continue
                pending = await self.jobs.list_in(RESUMABLE | {JobState.QUEUED})
                if not pending:
                    return
        finally:
            await self.stop()

    async def run_one(self, job_id: str, delivery: Delivery) -> Job:
        """Drive a single job in this process (the CLI's `generate`), under a lease like any other."""
        owners = await self._dead_owners()
        if not await self.jobs.claim(job_id, self.owner, _stamp(LEASE_S), dead_owners=owners):
            raise RuntimeError(f"job {job_id} is being driven by another process")
        renew = asyncio.create_task(self._lease_loop())
        try:
            return await self.runner.drive(job_id, delivery)
        finally:
            renew.cancel()
            with contextlib.suppress(asyncio.CancelledError):
                await renew
            await self.jobs.release_lease(job_id, self.owner)

    async def _dispatch_loop(self) -> None:
        while True:
            try:
                await self._dispatch()
            except Exception:
                log.exception("dispatch failed; trying again")
            await self._maintain()
            # asyncio.timeout, not wait_for: on 3.11 wait_for can swallow the cancel that stop() sends
            with contextlib.suppress(TimeoutError):
                async with asyncio.timeout(self.tick_s):
                    await self._wake.wait()
            self._wake.clear()

    async def _dispatch(self) -> None:
        queued = await self.jobs.list_in({JobState.QUEUED})
        active = await self.jobs.list_in(IN_FLIGHT)
        # Jobs with a live task here count as taking their slot even before their first transition.
        claimed = [dataclasses.replace(j, state=JobState.SUBMITTING) for j in queued if j.id in self._tasks]
        waiting = [j for j in queued if j.id not in self._tasks]
        for job in startable(waiting, [*active, *claimed], self.caps):
            await self._spawn(job.id)
        still_waiting = [j for j in waiting if j.id not in self._tasks]
        for job_id, position in queue_positions(still_waiting).items():
            job = next(j for j in still_waiting if j.id == job_id)
            if job.queue_position != position:
                await self.jobs.update(job_id, queue_position=position)
                with contextlib.suppress(Exception):
                    await self.delivery_for(job).progress(await self.jobs.require(job_id))

    async def _maintain(self) -> None:
        """Run the periodic housekeeping (wakes make ticks frequent: at most once per tick_s)."""
        now = asyncio.get_running_loop().time()
        if not self.maintenance or (self._maintained_at is not None and now - self._maintained_at < self.tick_s):
            return
        self._maintained_at = now
        for task in self.maintenance:
            try:
                await task()
            except Exception:
                log.exception("periodic maintenance %s failed; trying again next tick", getattr(task, "__name__", task))

    async def _dead_owners(self) -> set[str]:
        """Lease owners on this host whose process is gone (killed, crashed): their jobs are free now."""
        host = socket.gethostname()
        dead = set()
        for owner in await self.jobs.lease_owners():
            owner_host, _, rest = owner.partition(":")
            pid = rest.partition(":")[0]
            if owner_host == host and pid.isdigit() and int(pid) != os.getpid() and not _pid_alive(int(pid)):
                dead.add(owner)
        return dead

    async def _spawn(self, job_id: str) -> None:
        if job_id in self._tasks:
            return
        if not await self.jobs.claim(job_id, self.owner, _stamp(LEASE_S), dead_owners=await self._dead_owners()):
            return  # another live process drives it
        self._tasks[job_id] = asyncio.create_task(self._drive(job_id), name=f"job-{job_id}")

    async def _drive(self, job_id: str) -> None:
        retry = False
        try:
            job = await self.jobs.require(job_id)
            await self.runner.drive(job_id, self.delivery_for(job))
        except asyncio.CancelledError:
            raise
        except Exception as exc:
            retry = await self._crashed(job_id, exc)
        finally:
            if self._tasks.get(job_id) is asyncio.current_task():
                self._tasks.pop(job_id, None)
                with contextlib.suppress(Exception):  # the database may be closing on shutdown
                    await self.jobs.release_lease(job_id, self.owner)
                self.wake()
        if retry:
            await asyncio.sleep(RESPAWN_AFTER_CRASH_S)
            await self._spawn(job_id)

    async def _crashed(self, job_id: str, exc: Exception) -> bool:
        """A bug, not a provider failure: keep the job (and its money) where it is and try again later —
        unless it keeps happening, then fail it with a reference so the owner is told and not charged."""
        count = self._crashes[job_id] = self._crashes.get(job_id, 0) + 1
        reference = f"{job_id}-{count}"
        with job_context(job_id):
            log.exception("job %s: the engine hit an error (ref %s)", job_id, reference, exc_info=exc)
        if count < MAX_CRASHES:
            return True
        job = await self.jobs.require(job_id)
        if not job.state.finished:
            error = ProviderError(ErrorCode.INTERNAL, f"reelbot hit an internal error (reference {reference})",
                                  provider=job.provider)  # fmt: skip
            failed = await self.runner.finish(job, JobState.FAILED, error=error)
            if failed is not None:
                with contextlib.suppress(Exception):
                    await self.runner.report_failure(failed, self.delivery_for(failed))
        return False

    async def _lease_loop(self) -> None:
        while True:
            await asyncio.sleep(LEASE_S / 3)
            with contextlib.suppress(Exception):
                await self.jobs.renew(self.owner, _stamp(LEASE_S))

    # --- cancelling ---------------------------------------------------------------------------------
    async def cancel(self, job_id: str, *, actor: str, moderator: bool = False) -> Job:
        """Cancel for the owner (or a moderator). Queued: at once, released. At the provider: cancelled
        there if it can be (released), otherwise the result is discarded and the money follows what the
        provider charges. Raises NotAllowed / CannotCancel with a plain reason."""
        job = await self.jobs.get(job_id)
        if job is None:
            raise CannotCancel(f"there is no job {job_id}")
        if actor != job.user_id and not moderator:
            raise NotAllowed("only the member who started this job, or a moderator, can cancel it")
        for _ in range(5):  # the job may move while we act: follow it to a final answer
            job = await self.jobs.require(job_id)
            if job.state.finished:
                raise CannotCancel(f"job {job_id} has already ended ({job.state.value})")
            if job.state in (JobState.DOWNLOADING, JobState.DELIVERING):
                raise CannotCancel(f"job {job_id} has already finished generating; the clip is on its way")
            error = ProviderError(ErrorCode.CANCELED, f"cancelled by {actor}", provider=job.provider)
            if job.state in (JobState.QUEUED, JobState.AWAITING_APPROVAL):
                moved = await self.runner.finish(job, JobState.CANCELLED, error=error)
            elif job.state is JobState.SUBMITTING:
                # Not yet known to the provider: the runner cancels it there as soon as the handle is recorded.
                await self.jobs.update(job_id, cancel_requested_by=actor)
                moved = await self.runner.cancel_at_provider(job_id, actor)
            else:
                moved = await self.runner.cancel_at_provider(job_id, actor)
            if moved is not None:
                self.wake()
                return moved
        raise CannotCancel(f"job {job_id} kept changing state; try again")

    # --- approval (bot.engine.approvals) -------------------------------------------------------------
    async def approve_job(self, job_id: str, *, moderator_id: str) -> Job:
        """A moderator lets a job waiting for approval run: it joins the queue. Raises ApprovalError."""
        return await approvals.approve_job(self, job_id, moderator_id=moderator_id)

    async def deny_job(self, job_id: str, *, moderator_id: str, reason: str) -> Job:
        """A moderator refuses a waiting job: cancelled, released, the member told why. Raises ApprovalError."""
        return await approvals.deny_job(self, job_id, moderator_id=moderator_id, reason=reason)

    # --- for displays -------------------------------------------------------------------------------
    async def position(self, job_id: str) -> int | None:
        return queue_positions(await self.jobs.list_in({JobState.QUEUED})).get(job_id)

    def in_flight(self) -> int:
        return len(self._tasks)

    # --- for /healthz -------------------------------------------------------------------------------
    def health(self) -> list[str]:
        """What is wrong with the engine's own loops, in plain words; empty while it dispatches and renews
        its leases. (A loop that dies leaves jobs queued and leases lapsing with no error anywhere else.)"""
        if not self._loops:
            return ["the engine is not running"]
        problems = []
        for task in self._loops:
            what = LOOP_NAMES.get(task.get_name(), task.get_name())
            if not task.done():
                continue
            if task.cancelled():
                problems.append(f"the {what} was cancelled")
            elif (error := task.exception()) is not None:
                problems.append(f"the {what} died: {error!r}")
            else:
                problems.append(f"the {what} stopped")
        return problems


__all__ = ["HOLDS_PROVIDER_SLOT", "CannotCancel", "Caps", "Engine", "NotAllowed"]
