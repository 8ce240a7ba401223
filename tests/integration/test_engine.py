"""The engine on a real database with real renders: money follows outcomes, restarts resume, races resolve."""

from __future__ import annotations

import asyncio
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import pytest

from bot.engine.engine import CannotCancel, Engine, NotAllowed
from bot.engine.states import JobState
from bot.ledger import InsufficientQuota
from bot.media.inspect import probe_video
from bot.money import usd
from bot.request import GenerationRequest
from bot.services import App, open_app
from bot.settings import load_settings
from tests.fakes.delivery import RecordingDelivery
from tests.fakes.providers.harness import Hang, Step
from tests.fakes.providers.wavespeed import FakeWaveSpeed

FIXTURES = Path(__file__).parents[1] / "fixtures"
FAST = {"REELBOT_POLL_FIRST_S": "0.02", "REELBOT_POLL_MAX_S": "0.05", "REELBOT_HTTP_TIMEOUT_S": "0.5",
        "REELBOT_HTTP_SUBMIT_TIMEOUT_S": "0.5", "REELBOT_HTTP_BACKOFF_S": "0.01", "REELBOT_HTTP_RETRIES": "3",
        "WAVESPEED_API_KEY": "test-key", "WAVESPEED_BASE_URL": "http://127.0.0.1:9"}  # fmt: skip


@asynccontextmanager
async def opened(tmp_path: Path, **env: str) -> AsyncIterator[tuple[App, Engine, RecordingDelivery]]:
    settings = load_settings(REELBOT_DB=str(tmp_path / "r.db"), REELBOT_DATA_DIR=str(tmp_path / "data"),
                             **{**FAST, **env})  # fmt: skip
    delivery = RecordingDelivery(tmp_path / "out")
    async with open_app(settings) as app:
        yield app, app.engine(lambda job: delivery, tick_s=0.05), delivery


async def funded(app: App, user: str, dollars: str, guild: str = "g1") -> str:
    account = await app.ledger.account_for_user(guild, user)
    await app.ledger.grant(account, usd(dollars), actor="test", reason="test funds")
    return account


async def a_request(app: App, **fields: Any) -> GenerationRequest:
    fields.setdefault("images", [await app.media.ingest(FIXTURES / "coffee.png")])
    fields.setdefault("prompt", "Figure 1 steams")
    fields.setdefault("duration", 3)
    return GenerationRequest.create(**fields)


async def wait_for(app: App, job_id: str, states: set[JobState], timeout: float = 30) -> None:
    async with asyncio.timeout(timeout):
        while (await app.jobs.require(job_id)).state not in states:  # noqa: ASYNC110 - watching the database
            await asyncio.sleep(0.02)


@pytest.fixture
async def fake_ws() -> AsyncIterator[FakeWaveSpeed]:
    fake = FakeWaveSpeed()
    await fake.start()
    yield fake
    await fake.stop()


def ws_env(fake: FakeWaveSpeed) -> dict[str, str]:
    return fake.settings_env()


async def test_a_job_runs_and_is_charged_once(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, delivery):
        account = await funded(app, "u1", "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1")
        assert (await app.ledger.balance(account)).reserved == usd("0.252")  # 3 s standard
        await engine.run_until_idle()
        final = await app.jobs.require(job.id)
        assert final.state is JobState.DONE and final.charged_micros == usd("0.252")
        balance = await app.ledger.balance(account)
        assert (balance.balance, balance.reserved) == (usd("0.748"), 0)
        assert [job_id for job_id, _ in delivery.delivered] == [job.id]
        assert await app.ledger.verify() == []


async def test_provider_failure_costs_nothing(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    fake_ws.script = [Step("running"), Step("failed", message="GPU fell over")]
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, delivery):
        account = await funded(app, "u1", "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1")
        await engine.run_until_idle()
        final = await app.jobs.require(job.id)
        assert final.state is JobState.FAILED and "GPU fell over" in (final.error_message or "")
        assert final.charged_micros == 0
        assert (await app.ledger.balance(account)).available == usd("1.00")
        assert [j.id for j in delivery.failures] == [job.id]


async def test_exhausted_quota_is_refused_with_the_numbers_and_nothing_recorded(tmp_path: Path) -> None:
    async with opened(tmp_path) as (app, engine, _):
        await funded(app, "u1", "0.10")
        request = await a_request(app)
        with pytest.raises(InsufficientQuota) as refused:
            await engine.accept(request, provider="wavespeed", user_id="u1", guild_id="g1")
        assert "$0.252" in str(refused.value) and "$0.10" in str(refused.value)
        assert await app.jobs.list_recent() == []


async def test_concurrent_acceptance_never_overspends(tmp_path: Path) -> None:
    async with opened(tmp_path) as (app, engine, _):
        account = await funded(app, "u1", "2.52")  # exactly 10 jobs of $0.252
        request = await a_request(app)

        async def attempt() -> bool:
            try:
                await engine.accept(request, provider="wavespeed", user_id="u1", guild_id="g1")
                return True
            except InsufficientQuota:
                return False

        results = await asyncio.gather(*(attempt() for _ in range(40)))
        assert sum(results) == 10
        assert (await app.ledger.balance(account)).available == 0
        assert len(await app.jobs.list_recent(limit=100)) == 10


async def test_output_is_fitted_under_the_delivery_limit(tmp_path: Path) -> None:
    async with opened(tmp_path) as (app, engine, delivery):
        delivery.size_limit = 150_000
        job = await engine.accept(await a_request(app, duration=4), provider="local", user_id="local")
        await engine.run_until_idle()
        assert (await app.jobs.require(job.id)).state is JobState.DONE
        clip = delivery.delivered[0][1]
        info = probe_video(clip)
        assert clip.stat().st_size <= 150_000 and abs(info.duration_s - 4) <= 0.1 and info.codec == "h264"


async def test_cancel_queued_job_releases_at_once(tmp_path: Path) -> None:
    async with opened(tmp_path) as (app, engine, _):
        account = await funded(app, "u1", "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1",
                                  state=JobState.QUEUED)  # fmt: skip
        with pytest.raises(NotAllowed):
            await engine.cancel(job.id, actor="someone-else")
        cancelled = await engine.cancel(job.id, actor="u1")
        assert cancelled.state is JobState.CANCELLED
        assert (await app.ledger.balance(account)).available == usd("1.00")
        with pytest.raises(CannotCancel, match="already ended"):
            await engine.cancel(job.id, actor="u1")


async def test_cancel_running_job_without_provider_cancel_is_charged(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    fake_ws.script = [Step("running", 0.1)] * 1000  # never finishes on its own
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, delivery):
        account = await funded(app, "u1", "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1")
        await engine.start()
        await wait_for(app, job.id, {JobState.RUNNING})
        cancelled = await engine.cancel(job.id, actor="u1")
        assert cancelled.state is JobState.CANCELLED and "could not stop it" in (cancelled.error_message or "")
        # WaveSpeed documents no cancel: the task runs on and is billed, so the member pays and the result is dropped
        assert (await app.ledger.balance(account)).balance == usd("0.748")
        await asyncio.sleep(0.2)
        assert delivery.delivered == [] and await app.ledger.verify() == []


async def test_cancel_running_local_job_is_released(tmp_path: Path) -> None:
    async with opened(tmp_path) as (app, engine, _delivery):
        job = await engine.accept(await a_request(app, duration=15), provider="local", user_id="local")
        await engine.start()
        await wait_for(app, job.id, {JobState.SUBMITTED, JobState.RUNNING})
        cancelled = await engine.cancel(job.id, actor="local")
        assert cancelled.state is JobState.CANCELLED and cancelled.charged_micros == 0


async def test_cancel_racing_completion_has_exactly_one_winner(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    fake_ws.script = [Step("running", 0.5), Step("succeeded")]
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, delivery):
        account = await funded(app, "u1", "5.00")
        outcomes = []
        for _ in range(6):
            job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1")
            await engine.start()
            await wait_for(app, job.id, {JobState.SUBMITTED, JobState.RUNNING, JobState.DOWNLOADING,
                                         JobState.DELIVERING, JobState.DONE})  # fmt: skip
            try:
                await engine.cancel(job.id, actor="u1")
            except CannotCancel:
                pass
            await engine.stop()
            await engine.run_until_idle()
            final = await app.jobs.require(job.id)
            outcomes.append(final.state)
            assert final.state in (JobState.DONE, JobState.CANCELLED)
            entries = await app.ledger.store.job_entries(job.id)
            assert sum(e.kind in ("capture", "release") for e in entries) == 1
            assert (final.state is JobState.DONE) == (job.id in [j for j, _ in delivery.delivered])
        assert await app.ledger.verify() == []
        assert (await app.ledger.balance(account)).reserved == 0


async def test_deadline_while_following_ends_unknown_and_released(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    fake_ws.script = [Step("running", 0.1)] * 1000
    async with opened(tmp_path, REELBOT_JOB_DEADLINE_S="1", **ws_env(fake_ws)) as (app, engine, delivery):
        account = await funded(app, "u1", "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1")
        await engine.run_until_idle()
        final = await app.jobs.require(job.id)
        assert final.state is JobState.UNKNOWN and final.error_code == "GENERATION_TIMEOUT"
        assert (await app.ledger.balance(account)).available == usd("1.00")
        assert [j.id for j in delivery.failures] == [job.id]


async def test_restart_resumes_and_delivers_once(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    fake_ws.script = [Step("queued")] * 8 + [Step("running", 0.5)] * 4 + [Step("succeeded")]
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, delivery):
        account = await funded(app, "u1", "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1")
        await engine.start()
        await wait_for(app, job.id, {JobState.SUBMITTED})
        await engine.stop()  # like a shutdown mid-job
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, delivery):
        await engine.run_until_idle()
        assert (await app.jobs.require(job.id)).state is JobState.DONE
        assert [j for j, _ in delivery.delivered] == [job.id]
        assert fake_ws.count("submit") == 1
        assert (await app.ledger.balance(account)).balance == usd("0.748")


async def test_job_found_submitting_after_a_crash_is_unknown_released_and_reported(
    tmp_path: Path, fake_ws: FakeWaveSpeed
) -> None:
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, delivery):
        account = await funded(app, "u1", "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1")
        await app.jobs.transition(job.id, JobState.SUBMITTING)  # as if the process died while sending
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, delivery):
        await engine.run_until_idle()
        final = await app.jobs.require(job.id)
        assert final.state is JobState.UNKNOWN and final.error_code == "SUBMIT_AMBIGUOUS"
        assert fake_ws.count("submit") == 0  # never resent
        assert (await app.ledger.balance(account)).available == usd("1.00")
        assert [j.id for j in delivery.failures] == [job.id]
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, delivery):
        await engine.run_until_idle()
        assert delivery.failures == []  # reported once, not again on the next start


async def test_ambiguous_submit_is_never_resent(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    fake_ws.fail_next("submit", Hang(3))
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, _):
        account = await funded(app, "u1", "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1")
        await engine.run_until_idle()
        assert (await app.jobs.require(job.id)).state is JobState.UNKNOWN
        assert fake_ws.count("submit") == 1
        assert (await app.ledger.balance(account)).available == usd("1.00")


async def test_two_engines_never_drive_the_same_job(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    fake_ws.script = [Step("running", 0.5)] * 5 + [Step("succeeded")]
    async with opened(tmp_path, **ws_env(fake_ws)) as (app_a, engine_a, delivery_a):
        await funded(app_a, "u1", "1.00")
        jobs = [await engine_a.accept(await a_request(app_a), provider="wavespeed", user_id=f"u{i}", guild_id="g1")
                for i in (1,)]  # fmt: skip
        async with opened(tmp_path, **ws_env(fake_ws)) as (_app_b, engine_b, delivery_b):
            await asyncio.gather(engine_a.run_until_idle(), engine_b.run_until_idle())
            assert len(delivery_a.delivered) + len(delivery_b.delivered) == len(jobs)
            assert fake_ws.count("submit") == len(jobs)


async def test_fair_queue_positions_are_recorded(tmp_path: Path) -> None:
    async with opened(tmp_path, REELBOT_USER_MAX_JOBS="1", LOCAL_MAX_CONCURRENCY="1") as (app, engine, _delivery):
        request = await a_request(app)
        alice = [await engine.accept(request, provider="local", user_id="local") for _ in range(3)]
        await engine.start()
        await asyncio.sleep(0.3)
        positions = [(await app.jobs.require(j.id)).queue_position for j in alice[1:]]
        assert positions == [1, 2]
        await engine.stop()


async def test_a_stop_during_a_submit_lets_it_finish_instead_of_leaving_it_ambiguous(
    tmp_path: Path, fake_ws: FakeWaveSpeed
) -> None:
    from tests.fakes.providers.harness import Slow

    fake_ws.fail_next("submit", Slow(0.4))  # the provider takes a moment to answer the submit
    fake_ws.script = [Step("running")] * 1000
    async with opened(tmp_path, **ws_env(fake_ws)) as (app, engine, _):
        await funded(app, "u1", "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id="u1", guild_id="g1")
        await engine.start()
        await wait_for(app, job.id, {JobState.SUBMITTING})
        await engine.stop()  # a shutdown while the request is on the wire
        stopped = await app.jobs.require(job.id)
        assert stopped.state is JobState.SUBMITTED and stopped.provider_task_id  # recorded, not ambiguous
        assert fake_ws.count("submit") == 1
