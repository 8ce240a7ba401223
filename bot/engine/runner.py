"""Drive one job through its states: submit, follow, download, deliver.

Every step starts by reading the job's committed state, so the same code runs a fresh job and resumes one
found half-way after a restart. Each transition is committed before the next side effect.
"""

from __future__ import annotations

import asyncio
import logging
import random
from collections.abc import Callable
from datetime import UTC, datetime
from pathlib import Path

from bot.engine.delivery import Delivery
from bot.engine.states import JobState
from bot.providers.base import ErrorCode, Provider, ProviderError, TaskHandle, TaskState, TaskStatus
from bot.settings import Settings
from bot.store.jobs import Job, JobRepository

log = logging.getLogger(__name__)

_FOLLOWING = frozenset({JobState.SUBMITTED, JobState.RUNNING})


def poll_delays(
    first: float, cap: float, *, growth: float = 1.5, jitter: float = 0.2, rng: random.Random | None = None
):
    """first, first*1.5, … up to cap, each ±20 % so that many jobs do not poll in lockstep."""
    rng = rng or random.Random()
    delay = first
    while True:
        yield max(0.01, delay * (1 + rng.uniform(-jitter, jitter)))
        delay = min(cap, delay * growth)


def _age_s(job: Job) -> float:
    created = datetime.strptime(job.created_at, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)
    return (datetime.now(UTC) - created).total_seconds()


class JobRunner:
    def __init__(
        self,
        jobs: JobRepository,
        provider_for: Callable[[str], Provider],
        settings: Settings,
    ) -> None:
        self.jobs = jobs
        self.provider_for = provider_for
        self.settings = settings

    def output_path(self, job: Job) -> Path:
        return self.settings.data_dir / "outputs" / f"{job.id}.mp4"

    async def drive(self, job_id: str, delivery: Delivery) -> Job:
        """Run the job until it is finished; returns its final record."""
        while True:
            job = await self.jobs.require(job_id)
            if job.state.finished:
                return job
            provider = self.provider_for(job.provider)
            if job.state is JobState.QUEUED:
                await self._submit(job, provider, delivery)
            elif job.state is JobState.SUBMITTING:
                await self._reconcile(job, provider)
            elif job.state in _FOLLOWING:
                await self._follow(job, provider, delivery)
            elif job.state is JobState.DOWNLOADING:
                await self._download(job, provider, delivery)
            elif job.state is JobState.DELIVERING:
                await self._deliver(job, delivery)
            elif job.state is JobState.AWAITING_APPROVAL:
                return job  # someone else decides; the job is picked up again when approved
            latest = await self.jobs.require(job_id)
            if latest.state.finished and latest.state is not JobState.DONE:
                await delivery.failure(latest)
                return latest

    async def _fail(self, job: Job, state: JobState, error: ProviderError) -> None:
        await self.jobs.transition(
            job.id, state, expect=job.state, detail=error.code.value,
            error_code=error.code.value, error_message=error.message,
        )  # fmt: skip

    async def _submit(self, job: Job, provider: Provider, delivery: Delivery) -> None:
        request = job.request
        refused = provider.check(request)
        if refused:
            message = "; ".join(str(v) for v in refused)
            await self._fail(
                job, JobState.FAILED, ProviderError(ErrorCode.INVALID_INPUT, message, provider=job.provider)
            )
            return
        # Committed before sending: a crash from here on is found in `submitting` and reconciled, never resent.
        moved = await self.jobs.transition(job.id, JobState.SUBMITTING, expect=JobState.QUEUED)
        if moved is None:
            return
        await delivery.progress(moved)
        try:
            handle = await provider.submit(request, job_id=job.id, webhook_url=None)
        except ProviderError as error:
            if error.code is ErrorCode.SUBMIT_AMBIGUOUS:
                await self._reconcile(moved, provider, error)
            elif error.code.retryable and _age_s(job) + (error.retry_after or 0) < self.settings.job_deadline_s:
                # refused for now (rate limit, 5xx): nothing was accepted, so it is safe to send again later
                log.info("job %s: submit refused for now (%s); back in the queue", job.id, error.code)
                await self.jobs.transition(job.id, JobState.QUEUED, expect=JobState.SUBMITTING, detail=error.code.value,
                                           error_message=error.message)  # fmt: skip
                await asyncio.sleep(max(error.retry_after or 0.0, self.settings.poll_first_s))
            else:  # the provider refused it: nothing was accepted, nothing is owed
                await self._fail(moved, JobState.FAILED, error)
            return
        except Exception as exc:  # a bug after the request may have left: never assume it did not
            log.exception("job %s: submit crashed", job.id)
            error = ProviderError(ErrorCode.SUBMIT_AMBIGUOUS, f"submit crashed: {exc!r}", provider=job.provider)
            await self._reconcile(moved, provider, error)
            return
        await self._record_handle(moved, handle, delivery)

    async def _record_handle(self, job: Job, handle: TaskHandle, delivery: Delivery) -> None:
        moved = await self.jobs.transition(
            job.id, JobState.SUBMITTED, expect=JobState.SUBMITTING, detail=handle.task_id,
            provider_task_id=handle.task_id, poll_url=handle.poll_url, result_url=handle.result_url,
            cancel_url=handle.cancel_url, handle_json=handle.to_json(),
        )  # fmt: skip
        if moved is not None:
            await delivery.progress(moved)

    async def _reconcile(self, job: Job, provider: Provider, cause: ProviderError | None = None) -> None:
        """The job may or may not have reached the provider. Ask it; if it cannot tell, say so — never resend."""
        handle = None
        try:
            handle = await provider.reconcile(job.id)
        except ProviderError as exc:
            log.warning("job %s: reconcile failed: %s", job.id, exc)
        if handle is not None:
            await self.jobs.transition(
                job.id, JobState.SUBMITTED, expect=JobState.SUBMITTING, detail=f"reconciled {handle.task_id}",
                provider_task_id=handle.task_id, poll_url=handle.poll_url, result_url=handle.result_url,
                cancel_url=handle.cancel_url, handle_json=handle.to_json(),
            )  # fmt: skip
            return
        error = cause or ProviderError(
            ErrorCode.SUBMIT_AMBIGUOUS,
            "reelbot stopped while sending this job and the provider cannot say whether it arrived",
            provider=job.provider,
        )
        await self._fail(job, JobState.UNKNOWN, error)

    async def _follow(self, job: Job, provider: Provider, delivery: Delivery) -> None:
        assert job.handle_json is not None
        handle = TaskHandle.from_json(job.handle_json)
        delays = poll_delays(self.settings.poll_first_s, self.settings.poll_max_s)
        wait = next(delays)
        while True:
            remaining = self.settings.job_deadline_s - _age_s(job)
            if remaining <= 0:
                error = ProviderError(
                    ErrorCode.GENERATION_TIMEOUT,
                    f"no result within the {self.settings.job_deadline_s:.0f} s deadline",
                    provider=job.provider,
                )
                await self._fail(job, JobState.UNKNOWN, error)
                return
            await provider.wait_for_change(handle, min(wait, remaining))
            try:
                state = await provider.poll(handle)
            except ProviderError as exc:  # a failed poll is not a failed task: keep the handle, try later
                log.warning("job %s: poll failed (%s), will retry", job.id, exc)
                wait = max(next(delays), exc.retry_after or 0.0)
                continue
            current = await self.jobs.require(job.id)
            if current.state not in _FOLLOWING:
                return  # cancelled (or otherwise moved) meanwhile
            if await self._apply(current, state, delivery):
                return
            job = await self.jobs.require(job.id)
            wait = next(delays)

    async def _apply(self, job: Job, state: TaskState, delivery: Delivery) -> bool:
        """Record what a poll said; True when the job left the following states."""
        if state.status is TaskStatus.SUCCEEDED:
            moved = await self.jobs.transition(
                job.id, JobState.DOWNLOADING, expect=_FOLLOWING, progress=1.0, queue_position=None,
                output_url=state.output_url, nsfw=int(state.nsfw),
            )  # fmt: skip
            if moved is not None:
                await delivery.progress(moved)
            return True
        if state.status is TaskStatus.FAILED:
            error = state.error or ProviderError(ErrorCode.PROVIDER_TRANSIENT, "the task failed", provider=job.provider)
            await self._fail(job, JobState.FAILED, error)
            return True
        if state.status is TaskStatus.CANCELED:
            error = ProviderError(ErrorCode.CANCELED, "the provider cancelled the task", provider=job.provider)
            await self._fail(job, JobState.CANCELLED, error)
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

    async def _download(self, job: Job, provider: Provider, delivery: Delivery) -> None:
        dest = self.output_path(job)
        state = TaskState(TaskStatus.SUCCEEDED, output_url=job.output_url, nsfw=job.nsfw)
        try:
            await provider.download(state, dest, max_bytes=self.settings.max_output_bytes)
        except ProviderError as error:
            await self._fail(job, JobState.FAILED, error)
            return
        moved = await self.jobs.transition(
            job.id, JobState.DELIVERING, expect=JobState.DOWNLOADING, output_path=str(dest)
        )
        if moved is not None:
            await delivery.progress(moved)

    async def _deliver(self, job: Job, delivery: Delivery) -> None:
        assert job.output_path is not None
        where = await delivery.deliver(job, Path(job.output_path))
        await self.jobs.transition(job.id, JobState.DONE, expect=JobState.DELIVERING, detail=where)
