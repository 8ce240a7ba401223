"""`reelbot run`'s operations side, on the real bot against the loopback Discord: /healthz with the gateway
check, /metrics with Discord's 429s and the /generate acknowledgement time, and no member or server ids."""

from __future__ import annotations

import asyncio

import httpx
import pytest

from bot.engine.states import JobState
from tests.integration.discord.conftest import World, image

MESSAGES = r"^/api/v10/channels/\d+/messages$|^/channels/\d+/messages$"


def sample(app, name: str, **labels: str) -> float:  # type: ignore[no-untyped-def]
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


async def test_run_serves_health_and_metrics(world: World) -> None:
    fake = world.fake
    rule = fake.rate_limit_next("POST", MESSAGES, retry_after=0.05)  # the clip's upload meets a 429
    async with world.bot(REELBOT_HTTP_PORT="0", REELBOT_HTTP_HOST="127.0.0.1") as (bot, app, _run):
        assert bot.ops is not None and bot.ops.port
        base = f"http://127.0.0.1:{bot.ops.port}"
        async with httpx.AsyncClient(base_url=base) as client:
            health = await client.get("/healthz")
            assert health.status_code == 200, health.text
            assert health.json()["checks"] == {"gateway": [], "database": [], "engine": []}

            ix = await fake.slash(world.alice, world.channel, "generate", {"prompt": "Figure 1", "duration": 3},
                                  attachments={"image1": image("coffee.png")})  # fmt: skip
            await ix.response()
            thread = (await fake.wait_for(lambda: fake.threads, timeout=10, what="a thread"))[0]
            await fake.wait_for(lambda: [m for m in fake.messages(thread) if m.attachments], timeout=60,
                                what="the clip")  # fmt: skip
            async with asyncio.timeout(10):  # the clip is posted a moment before the job is recorded done
                while [job.state for job in await app.jobs.list_recent()] != [JobState.DONE]:  # noqa: ASYNC110
                    await asyncio.sleep(0.02)
            metrics = (await client.get("/metrics")).text
    assert rule.served == 1
    assert sample(app, "reelbot_discord_rest_429_total", outcome="retried") == 1
    assert sample(app, "reelbot_interaction_ack_seconds_count", command="generate", response="defer") == 1
    assert 0 <= sample(app, "reelbot_interaction_ack_seconds_sum", command="generate", response="defer") < 3
    assert 'reelbot_jobs{provider="local",state="done"} 1.0' in metrics
    for private in (world.alice.id, world.guild.id, world.channel.id, thread.id):
        assert str(private) not in metrics
    async with httpx.AsyncClient() as client:
        with pytest.raises(httpx.ConnectError):  # closing the bot closed the endpoint too
            await client.get(f"{base}/healthz", timeout=2)


async def test_a_refusal_is_timed_as_a_message(world: World) -> None:
    async with world.bot() as (bot, app, _run):
        assert bot.ops is None  # off unless REELBOT_HTTP_PORT is set
        ix = await world.fake.slash(world.alice, world.channel, "generate", {"prompt": "Figure 1"},
                                    attachments={"image1": ("notes.pdf", b"%PDF-1.4", "application/pdf")})  # fmt: skip
        assert (await ix.response()).ephemeral
    assert sample(app, "reelbot_interaction_ack_seconds_count", command="generate", response="message") == 1
    assert sample(app, "reelbot_interaction_ack_seconds_count", command="generate", response="defer") == 0
