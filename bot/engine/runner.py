"""Drive one job through its states: submit, follow, download, deliver — and settle its money.

Every step starts by reading the job's committed state, so the same code runs a fresh job and resumes one
found half-way after a restart. Each transition is committed before the next side effect, and a job's
final transition is committed in the same transaction as its ledger capture or release: a job can never
end without its money settled, nor be settled twice.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Awaitable, Callable, Iterator
from datetime import UTC, datetime, timedelta
from pathlib import Path

import aiosqlite

from bot.engine.delivery import Clip, Delivery
from bot.engine.states import JobState
from bot.engine.webhooks import Wakeups, callback_url
from bot.ledger import Ledger, UnknownReservation
from bot.media.fit import CannotFit, fit_to_limit, poster_frame
from bot.observe.logs import job_context
from bot.observe.metrics import Metrics
from bot.providers.base import ErrorCode, Provider, ProviderError, TaskHandle, TaskState, TaskStatus
from bot.settings import Settings
from bot.store.db import transaction
from bot.store.deliveries import DeliveryRepository
from bot.store.jobs import Job, JobRepository

log = logging.getLogger(__name__)

FOLLOWING = frozenset({JobState.SUBMITTED, JobState.RUNNING})
ENGINE_ACTOR = "engine"


# Gaps grow ×1.3 (not the ×1.5 of the providers' SDK advice): with the defaults (10 s first, 30 s cap) a 90 s
# generation is noticed about 10 % late with 6 requests, where ×1.5 reaches the cap early and notices it ~20 %
# late (simulated over jittered schedules; measured by `python -m bench`).
POLL_GROWTH = 1.3


def poll_delays(first: float, cap: float, *, growth: float = POLL_GROWTH, jitter: float = 0.2,
                rng: random.Random | None = None) -> Iterator[float]:  # fmt: skip
    """first, first×1.3, … up to cap, each ±20 % so that many jobs do not poll in lockstep."""
    rng = rng or random.Random()
    delay = first
    while True:
        yield max(0.01, delay * (1 + rng.uniform(-jitter, jitter)))
        delay = min(cap, delay * growth)


def parse_iso(text: str) -> datetime:
    return datetime.strptime(text, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def age_s(job: Job) -> float:
    """How long the job has been on its way: from its approval when it waited for one (the wait for a
    moderator does not eat into the job deadline), else from its creation."""
    return (datetime.now(UTC) - parse_iso(job.approved_at or job.created_at)).total_seconds()


class JobRunner:
    def __init__(
        self,
        jobs: JobRepository,
        provider_for: Callable[[str], Provider],
        settings: Settings,
        ledger: Ledger,
        deliveries: DeliveryRepository,
        wakeups: Wakeups | None = None,
        metrics: Metrics | None = None,
    ) -> None:
        self.jobs = jobs
        self.metrics = metrics or Metrics()
        self.provider_for = provider_for
        self.settings = settings
        self.ledger = ledger
        self.deliveries = deliveries
        self.wakeups = wakeups or Wakeups()
        self._sending: set[asyncio.Future[None]] = set()

    def output_path(self, job: Job) -> Path:
        return self.settings.data_dir / "outputs" / f"{job.id}.mp4"

    async def drive(self, job_id: str, delivery: Delivery) -> Job:
        """Run the job until it is finished (or waits for a moderator); returns its latest record."""
        job = await self.jobs.require(job_id)
        # Every line logged while driving it (here, in its provider, in media) carries the job's ids.
        with job_context(job.id, guild_id=job.guild_id, provider=job.provider):
            return await self._run_states(job_id, delivery)

    async def _run_states(self, job_id: str, delivery: Delivery) -> Job:
        while True:
            job = await self.jobs.require(job_id)
            if job.state.finished:
                await self.report_failure(job, delivery)
                return job
            if job.state is JobState.AWAITING_APPROVAL:
                return job
            provider = self.provider_for(job.provider)
            if job.state is JobState.QUEUED:
                await self._submit(job, provider, delivery)
            elif job.state is JobState.SUBMITTING:
                await self._reconcile(job, provider)
            elif job.state in FOLLOWING:
                await self._follow(job, provider, delivery)
            elif job.state is JobState.DOWNLOADING:
                await self._download(job, provider, delivery)
            elif job.state is JobState.DELIVERING:
                await self._deliver(job, delivery)

    # --- settling ------------------------------------------------------------------------------------
    async def finish(
        self,
        job: Job,
        target: JobState,
        *,
        expect: JobState | frozenset[JobState] | None = None,
        error: ProviderError | None = None,
        charge: bool = False,
        detail: str | None = None,
        actor: str = ENGINE_ACTOR,
        also: Callable[[aiosqlite.Connection, Job], Awaitable[object]] | None = None,
    ) -> Job | None:
        """Move to a final state and settle the money in one transaction. Returns None if the job had
        already moved on (a race lost: the winner settled it). `actor` signs the ledger entry (a moderator
        denying a job); `also` writes more in the same transaction (the admin action recording why)."""
        changes: dict[str, object] = {}
        if error is not None:
            changes.update(error_code=error.code.value, error_message=error.message)
        if charge:
            changes["charged_micros"] = job.cost_micros
        async with transaction(self.jobs.db) as conn:
            moved = await self.jobs.transition(
                job.id, target, expect=expect or job.state, detail=detail or (error.code.value if error else None),
                conn=conn, **changes,
            )  # fmt: skip
            if moved is None:
                return None
            try:
                if charge:
                    await self.ledger.capture(job.id, actor=actor, reason=detail or "clip delivered", conn=conn)
                else:
                    why = error.plain if error else f"job {target.value}"
                    await self.ledger.release(job.id, actor=actor, reason=why[:500], conn=conn)
            except UnknownReservation:
                log.warning("job %s has no reservation to settle", job.id)
            if also is not None:
                await also(conn, moved)
        self.metrics.job_finished(moved)  # after the commit: a rolled-back move did not happen
        return moved

    async def report_failure(self, job: Job, delivery: Delivery) -> None:
        """Tell the owner once; the record survives restarts so nobody is told twice."""
        if job.state is JobState.DONE or await self.deliveries.get(job.id, "failure"):
            return
        await delivery.failure(job)
        await self.deliveries.record(job.id, "failure", job.state.value)

    # --- submitting ----------------------------------------------------------------------------------
    async def _submit(self, job: Job, provider: Provider, delivery: Delivery) -> None:
        if age_s(job) > self.settings.job_deadline_s:
            error = ProviderError(ErrorCode.GENERATION_TIMEOUT, "it waited in the queue past the job deadline",
                                  provider=job.provider)  # fmt: skip
            await self.finish(job, JobState.FAILED, error=error)
            return
        request = job.request
        refused = provider.check(request)
        if refused:
            message = "; ".join(str(v) for v in refused)
            await self.finish(job, JobState.FAILED, error=ProviderError(ErrorCode.INVALID_INPUT, message,
                                                                        provider=job.provider))  # fmt: skip
            return
        # Committed before sending: a crash from here on is found in `submitting` and reconciled, never resent.
        moved = await self.jobs.transition(job.id, JobState.SUBMITTING, expect=JobState.QUEUED)
        if moved is None:
            return
        await delivery.progress(moved)
        # Shielded: a shutdown must not cut a send in half and leave the job ambiguous when waiting a
        # moment would have settled it. Engine.stop() waits for these to finish.
        send = asyncio.ensure_future(self._send(job, moved, provider, delivery))
        self._sending.add(send)
        send.add_done_callback(self._sending.discard)
        await asyncio.shield(send)

    async def drain(self, timeout: float) -> None:
        """Let sends in progress finish and record their outcome (called on shutdown)."""
        if self._sending:
            await asyncio.wait(set(self._sending), timeout=timeout)

    async def _send(self, job: Job, moved: Job, provider: Provider, delivery: Delivery) -> None:
        request = job.request
        try:
            webhook = self.webhook_url(job, provider)
            if webhook:
                await provider.prepare_webhooks()
            handle = await provider.submit(request, job_id=job.id, webhook_url=webhook)
        except ProviderError as error:
            if error.code is ErrorCode.SUBMIT_AMBIGUOUS:
                await self._reconcile(moved, provider, error)
            elif error.code.retryable and age_s(job) + (error.retry_after or 0) < self.settings.job_deadline_s:
                # refused for now (rate limit, 5xx): nothing was accepted, so it is safe to send again later
                log.info("job %s: submit refused for now (%s); back in the queue", job.id, error.code)
                await self.jobs.transition(job.id, JobState.QUEUED, expect=JobState.SUBMITTING, detail=error.code.value,
                                           error_message=error.message)  # fmt: skip
                await asyncio.sleep(max(error.retry_after or 0.0, self.settings.poll_first_s))
            else:  # the provider refused it: nothing was accepted, nothing is owed
                await self.finish(moved, JobState.FAILED, error=error)
            return
        except Exception as exc:  # a bug after the request may have left: never assume it did not
            log.exception("job %s: submit crashed", job.id)
            error = ProviderError(ErrorCode.SUBMIT_AMBIGUOUS, f"submit crashed: {exc!r}", provider=job.provider)
            await self._reconcile(moved, provider, error)
            return
        recorded = await self._record_handle(moved, handle)
        if recorded is not None and recorded.cancel_requested_by:
            # cancelled while we were sending: stop it at the provider now that we know its handle
            await self.cancel_at_provider(job.id, recorded.cancel_requested_by)
        elif recorded is not None:
            await delivery.progress(recorded)

    def webhook_url(self, job: Job, provider: Provider) -> str | None:
        if not self.settings.webhook_url or provider.capabilities.webhook == "none":
            return None
        return callback_url(self.settings.webhook_url, job.provider, job.id)

    async def _record_handle(self, job: Job, handle: TaskHandle, detail: str | None = None) -> Job | None:
        return await self.jobs.transition(
            job.id, JobState.SUBMITTED, expect=JobState.SUBMITTING, detail=detail or handle.task_id,
            provider_task_id=handle.task_id, poll_url=handle.poll_url, result_url=handle.result_url,
            cancel_url=handle.cancel_url, handle_json=handle.to_json(),
        )  # fmt: skip

    async def _reconcile(self, job: Job, provider: Provider, cause: ProviderError | None = None) -> None:
        """The job may or may not have reached the provider. Ask it; if it cannot tell, say so — never resend."""
        handle = None
        try:
            handle = await provider.reconcile(job.id)
        except ProviderError as exc:
            log.warning("job %s: reconcile failed: %s", job.id, exc)
        if handle is not None:
            await self._record_handle(job, handle, f"reconciled {handle.task_id}")
            return
        error = cause or ProviderError(
            ErrorCode.SUBMIT_AMBIGUOUS,
            "reelbot stopped while sending this job and the provider cannot say whether it arrived",
            provider=job.provider,
        )
        await self.finish(job, JobState.UNKNOWN, error=error)

    async def cancel_at_provider(self, job_id: str, actor: str) -> Job | None:
        """Stop a job the provider has. Released if the provider confirms; otherwise its result is discarded
        and the money follows what the provider charges. None when the job had already moved on."""
        job = await self.jobs.require(job_id)
        if job.state not in FOLLOWING or not job.handle_json:
            return None if job.state is not JobState.SUBMITTING else job
        provider = self.provider_for(job.provider)
        try:
            stopped = await provider.cancel(TaskHandle.from_json(job.handle_json))
        except ProviderError as exc:
            log.warning("job %s: cancel at the provider failed: %s", job_id, exc)
            stopped = False
        charge = not stopped and job.cost_micros > 0
        message = f"cancelled by {actor}"
        if charge:
            message += f"; {provider.display_name} could not stop it, so it is charged and its result discarded"
        error = ProviderError(ErrorCode.CANCELED, message, provider=job.provider)
        return await self.finish(job, JobState.CANCELLED, expect=FOLLOWING, error=error, charge=charge,
                                        detail=message)  # fmt: skip

    # --- following -----------------------------------------------------------------------------------
    async def _follow(self, job: Job, provider: Provider, delivery: Delivery) -> None:
        assert job.handle_json is not None
        handle = TaskHandle.from_json(job.handle_json)
        if self.webhook_url(job, provider):
            # The provider calls back; polls only guard against a callback that never comes.
            backstop = self.settings.webhook_backstop_s
            delays = poll_delays(backstop, backstop)
        else:
            delays = poll_delays(self.settings.poll_first_s, self.settings.poll_max_s)
        wait = next(delays)
        while True:
            remaining = self.settings.job_deadline_s - age_s(job)
            if remaining <= 0:
                error = ProviderError(ErrorCode.GENERATION_TIMEOUT,
                                      f"no result within the {self.settings.job_deadline_s:.0f} s deadline",
                                      provider=job.provider)  # fmt: skip
                await self.finish(job, JobState.UNKNOWN, expect=FOLLOWING, error=error)
                return
            await self._wait(provider, handle, job.id, min(wait, remaining))
            try:
                state = await provider.poll(handle)
            except ProviderError as exc:  # a failed poll is not a failed task: keep the handle, try later
                log.warning("job %s: poll failed (%s), will retry", job.id, exc.code)
                wait = max(next(delays), exc.retry_after or 0.0)
                continue
            current = await self.jobs.require(job.id)
            if current.state not in FOLLOWING:
                return  # cancelled (or otherwise moved) meanwhile
            if await self._apply(current, state, delivery):
                return
            job = await self.jobs.require(job.id)
            wait = next(delays)

    async def _wait(self, provider: Provider, handle: TaskHandle, job_id: str, timeout: float) -> None:
        """Until the next poll is due, or sooner: the provider says so, or a verified callback arrives."""
        callback = self.wakeups.event(job_id)
        if callback.is_set():
            callback.clear()
            return
        waiters = {
            asyncio.ensure_future(callback.wait()),
            asyncio.ensure_future(provider.wait_for_change(handle, timeout)),
        }
        try:
            await asyncio.wait(waiters, return_when=asyncio.FIRST_COMPLETED)
        finally:
            for waiter in waiters:
                waiter.cancel()
            callback.clear()

    async def _apply(self, job: Job, state: TaskState, delivery: Delivery) -> bool:
        """Record what a poll said; True when the job left the following states."""
        if state.status is TaskStatus.SUCCEEDED:
            moved = await self.jobs.transition(
                job.id, JobState.DOWNLOADING, expect=FOLLOWING, progress=1.0, queue_position=None,
                output_url=state.output_url, nsfw=int(state.nsfw),
            )  # fmt: skip
            if moved is not None:
                await delivery.progress(moved)
            return True
        if state.status is TaskStatus.FAILED:
            error = state.error or ProviderError(ErrorCode.PROVIDER_TRANSIENT, "the task failed", provider=job.provider)
            await self.finish(job, JobState.FAILED, expect=FOLLOWING, error=error)
            return True
        if state.status is TaskStatus.CANCELED:
            error = ProviderError(ErrorCode.CANCELED, "the provider cancelled the task", provider=job.provider)
            await self.finish(job, JobState.CANCELLED, expect=FOLLOWING, error=error)
            return True
        if state.status is TaskStatus.RUNNING and job.state is JobState.SUBMITTED:
            moved = await self.jobs.transition(
                job.id, JobState.RUNNING, expect=JobState.SUBMITTED, progress=state.progress, queue_position=None
            )
            if moved is not None:
                await delivery.progress(moved)
        elif (state.progress, state.queue_position) != (job.progress, job.queue_position):
            await self.jobs.update(job.id, progress=state.progress, queue_position=state.queue_position)
            await delivery.progress(await self.jobs.require(job.id))
        return False

    # --- the clip ------------------------------------------------------------------------------------
    async def _download(self, job: Job, provider: Provider, delivery: Delivery) -> None:
        dest = self.output_path(job)
        state = TaskState(TaskStatus.SUCCEEDED, output_url=job.output_url, nsfw=job.nsfw)
        try:
            await provider.download(state, dest, max_bytes=self.settings.max_output_bytes)
        except ProviderError as error:
            if error.code.retryable and age_s(job) < self.settings.job_deadline_s:
                log.warning("job %s: download failed (%s), will retry", job.id, error.code)
                await asyncio.sleep(self.settings.poll_max_s)
                return  # still DOWNLOADING: drive() comes back here
            # The provider finished (and charged) but its clip cannot be had: the member is not charged.
            await self.finish(job, JobState.FAILED, error=error)
            return
        moved = await self.jobs.transition(job.id, JobState.DELIVERING, expect=JobState.DOWNLOADING,
                                           output_path=str(dest))  # fmt: skip
        if moved is not None:
            await delivery.progress(moved)

    async def _deliver(self, job: Job, delivery: Delivery) -> None:
        assert job.output_path is not None
        clip = await self.fit(job, Path(job.output_path), delivery.size_limit)
        where = await self.deliveries.get(job.id, "clip")
        if where is None:
            where = await delivery.deliver(job, clip)
            await self.deliveries.record(job.id, "clip", where)
        done = await self.finish(job, JobState.DONE, expect=JobState.DELIVERING, charge=True,
                                 detail=f"delivered: {where}")  # fmt: skip
        if done is not None:
            await delivery.progress(done)

    async def fit(self, job: Job, source: Path, limit: int | None) -> Clip:
        size = source.stat().st_size
        if limit is None or size <= limit:
            return Clip(source, size)
        fitted = source.with_name(f"{job.id}.fit-{limit}.mp4")
        # A crash mid-encode leaves bot.media.fit's temporary file (`.<name>.<random>.part.<ext>`) behind, and
        # the redo picks a new random name: clear this job's leftovers (only its lease holder fits its clip).
        for stale in source.parent.glob(f".{job.id}.*.part.*"):
            stale.unlink(missing_ok=True)
        try:
            result = await asyncio.to_thread(fit_to_limit, source, fitted, limit)
            return Clip(result.path, result.size_bytes, transcoded=result.transcoded)
        except Exception as exc:  # CannotFit, or a clip the transcoder cannot read: fall back to a link
            level = logging.INFO if isinstance(exc, CannotFit) else logging.WARNING
            log.log(level, "job %s: clip of %d bytes not fitted to %d: %s", job.id, size, limit, exc)
            try:
                poster: Path | None = await asyncio.to_thread(
                    poster_frame, source, source.with_name(f"{job.id}.poster.jpg")
                )
            except Exception:
                poster = None
            provider = self.provider_for(job.provider)
            ttl = provider.capabilities.output_ttl_s
            expires = None
            if ttl and job.downloading_at:
                expires = (parse_iso(job.downloading_at) + timedelta(seconds=ttl)).strftime("%Y-%m-%d %H:%M UTC")
            return Clip(None, size, link=job.output_url, link_expires_at=expires, poster=poster)
