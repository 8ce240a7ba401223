"""Callbacks through the receiver: a verified one wakes the job at once (the engine then re-polls), a
forged or unsigned one changes nothing, duplicates are harmless, and polling stays the backstop."""

from __future__ import annotations

import asyncio
import hashlib
import hmac
import json
import socket
import time
from pathlib import Path

import httpx
import pytest

from bot.engine.states import JobState
from bot.request import GenerationRequest
from bot.services import open_app
from bot.settings import load_settings
from tests.fakes.delivery import RecordingDelivery
from tests.fakes.providers.harness import Step
from tests.fakes.providers.wavespeed import FakeWaveSpeed

FIXTURES = Path(__file__).parents[1] / "fixtures"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def signed(secret: str, body: bytes, webhook_id: str) -> dict[str, str]:
    timestamp = str(int(time.time()))
    digest = hmac.new(secret.removeprefix("whsec_").encode(), f"{webhook_id}.{timestamp}.".encode() + body,
                      hashlib.sha256).hexdigest()  # fmt: skip
    return {"webhook-id": webhook_id, "webhook-timestamp": timestamp, "webhook-signature": f"v3,{digest}",
            "content-type": "application/json"}  # fmt: skip


@pytest.fixture
async def setup(tmp_path: Path):
    fake = FakeWaveSpeed()
    await fake.start()
    port = free_port()
    settings = load_settings(
        REELBOT_DB=str(tmp_path / "r.db"), REELBOT_DATA_DIR=str(tmp_path / "data"),
        REELBOT_POLL_FIRST_S="30", REELBOT_POLL_MAX_S="30",  # polling alone would take 30 s
        REELBOT_WEBHOOK_URL=f"http://127.0.0.1:{port}", REELBOT_WEBHOOK_LISTEN=f"127.0.0.1:{port}",
        **fake.settings_env(),
    )  # fmt: skip
    delivery = RecordingDelivery(tmp_path / "out")
    async with open_app(settings) as app:
        engine = app.engine(lambda job: delivery, tick_s=0.05)
        account = await app.ledger.account_for_user("g", "u1")
        await app.ledger.grant(account, 5_000_000, actor="test", reason="funds")
        image = await app.media.ingest(FIXTURES / "coffee.png")
        request = GenerationRequest.create(prompt="Figure 1", images=[image], duration=3)
        await engine.start()
        yield fake, app, engine, request, delivery, f"http://127.0.0.1:{port}"
        await engine.stop()
    await fake.stop()


async def submitted(app, job_id: str) -> None:
    async with asyncio.timeout(10):
        while (await app.jobs.require(job_id)).state is not JobState.SUBMITTED:  # noqa: ASYNC110
            await asyncio.sleep(0.02)


async def test_a_signed_callback_finishes_the_job_without_waiting_for_the_poll(setup) -> None:
    fake, app, engine, request, delivery, base = setup
    fake.script = [Step("succeeded")]
    job = await engine.accept(request, provider="wavespeed", user_id="u1", guild_id="g")
    await submitted(app, job.id)
    registered = fake.last("submit").query["webhook"]
    assert registered == f"{base}/webhooks/wavespeed/{job.id}"
    task = next(iter(fake.tasks.values()))
    body = json.dumps({"id": task.id, "status": "completed", "outputs": [fake.output_url(task)]}).encode()
    started = time.monotonic()
    async with httpx.AsyncClient() as client:
        answer = await client.post(registered, content=body, headers=signed(fake.webhook_secret, body, "d1"))
        assert answer.status_code == 200
        async with asyncio.timeout(10):
            while (await app.jobs.require(job.id)).state is not JobState.DONE:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        noticed = time.monotonic() - started
        assert noticed < 5  # far sooner than the 30 s poll
        assert fake.count("poll") == 1 and fake.count("submit") == 1  # woken, then one confirming poll
        replay = await client.post(registered, content=body, headers=signed(fake.webhook_secret, body, "d1"))
        assert replay.status_code == 401  # the same delivery id again
    assert [j for j, _ in delivery.delivered] == [job.id]


async def test_forged_and_misdirected_callbacks_change_nothing(setup) -> None:
    fake, app, engine, request, _, base = setup
    fake.script = [Step("running")] * 100
    job = await engine.accept(request, provider="wavespeed", user_id="u1", guild_id="g")
    await submitted(app, job.id)
    url = f"{base}/webhooks/wavespeed/{job.id}"
    body = json.dumps({"id": "someone-else", "status": "completed", "outputs": ["http://evil/x.mp4"]}).encode()
    async with httpx.AsyncClient() as client:
        forged = await client.post(url, content=body, headers=signed("whsec_not-the-secret", body, "f1"))
        unsigned = await client.post(url, content=body)
        unknown = await client.post(f"{base}/webhooks/wavespeed/nosuchjob", content=body)
        wrong_task = await client.post(url, content=body, headers=signed(fake.webhook_secret, body, "f2"))
    assert (forged.status_code, unsigned.status_code, unknown.status_code) == (401, 401, 404)
    assert wrong_task.status_code == 409  # validly signed, but for another task
    await asyncio.sleep(0.3)
    assert fake.count("poll") == 0  # nothing woke the follower
    assert (await app.jobs.require(job.id)).state is JobState.SUBMITTED


async def test_without_a_callback_the_backstop_poll_still_finishes_the_job(tmp_path: Path) -> None:
    fake = FakeWaveSpeed()
    await fake.start()
    fake.script = [Step("succeeded")]
    port = free_port()
    settings = load_settings(
        REELBOT_DB=str(tmp_path / "r.db"), REELBOT_DATA_DIR=str(tmp_path / "data"),
        REELBOT_POLL_FIRST_S="30", REELBOT_POLL_MAX_S="30", REELBOT_WEBHOOK_BACKSTOP_S="0.3",
        REELBOT_WEBHOOK_URL=f"http://127.0.0.1:{port}", REELBOT_WEBHOOK_LISTEN=f"127.0.0.1:{port}",
        **fake.settings_env(),
    )  # fmt: skip
    try:
        async with open_app(settings) as app:
            engine = app.engine(lambda job: RecordingDelivery(tmp_path / "out"), tick_s=0.05)
            image = await app.media.ingest(FIXTURES / "coffee.png")
            job = await engine.accept(GenerationRequest.create(prompt="Figure 1", images=[image], duration=3),
                                      provider="wavespeed", user_id="local")  # fmt: skip
            async with asyncio.timeout(15):
                await engine.run_until_idle()
            assert (await app.jobs.require(job.id)).state is JobState.DONE
            assert fake.last("submit").query.get("webhook")  # a callback was registered, none came
            assert fake.count("poll") == 1  # the backstop's one poll, 0.3 s in — not the 30 s schedule
    finally:
        await fake.stop()
