"""/healthz and /metrics on a real App: real database, real engine, the WaveSpeed loopback API."""

from __future__ import annotations

import asyncio
import json
import math
import socket
from collections.abc import AsyncIterator, Sequence
from contextlib import asynccontextmanager
from pathlib import Path
from typing import Any

import httpx
import pytest
from prometheus_client.parser import text_string_to_metric_families

from bot.engine.engine import Engine
from bot.engine.states import JobState
from bot.ledger import InsufficientQuota
from bot.money import usd
from bot.observe.health import Check, database_check, engine_check, gateway_check, run_checks
from bot.observe.server import OpsServer, serving, start_ops_server
from bot.request import GenerationRequest
from bot.services import App, open_app
from bot.settings import SettingsError, load_settings
from tests.fakes.delivery import RecordingDelivery
from tests.fakes.providers.harness import Status
from tests.fakes.providers.wavespeed import FakeWaveSpeed
from tests.log_capture import captured_logs

FIXTURES = Path(__file__).parents[1] / "fixtures"
FAST = {"REELBOT_POLL_FIRST_S": "0.02", "REELBOT_POLL_MAX_S": "0.05", "REELBOT_HTTP_TIMEOUT_S": "0.5",
        "REELBOT_HTTP_SUBMIT_TIMEOUT_S": "0.5", "REELBOT_HTTP_BACKOFF_S": "0.01",
        "REELBOT_HTTP_RETRIES": "3"}  # fmt: skip
# Snowflake-shaped ids: none may ever show up as a label value.
USER, GUILD, POOR_USER = "284756102938475610", "918273645546372819", "384756102938475611"
FAMILIES = {
    "reelbot_jobs", "reelbot_job_duration_seconds", "reelbot_provider_http_requests", "reelbot_ledger_reservations",
    "reelbot_discord_rest_429", "reelbot_discord_global_rate_limits", "reelbot_interaction_ack_seconds",
}  # fmt: skip


@pytest.fixture
async def fake_ws() -> AsyncIterator[FakeWaveSpeed]:
    fake = FakeWaveSpeed()
    await fake.start()
    yield fake
    await fake.stop()


@asynccontextmanager
async def opened(tmp_path: Path, fake: FakeWaveSpeed) -> AsyncIterator[tuple[App, Engine, RecordingDelivery]]:
    settings = load_settings(REELBOT_DB=str(tmp_path / "r.db"), REELBOT_DATA_DIR=str(tmp_path / "data"),
                             REELBOT_HTTP_PORT="0", REELBOT_HTTP_HOST="127.0.0.1",
                             **{**FAST, **fake.settings_env()})  # fmt: skip
    delivery = RecordingDelivery(tmp_path / "out")
    async with open_app(settings) as app:
        yield app, app.engine(lambda job: delivery, tick_s=0.05), delivery


@asynccontextmanager
async def ops(app: App, checks: Sequence[Check]) -> AsyncIterator[httpx.AsyncClient]:
    async with serving(app.settings, app.metrics, app.jobs, checks) as server:
        assert isinstance(server, OpsServer) and server.port
        async with httpx.AsyncClient(base_url=f"http://127.0.0.1:{server.port}") as client:
            yield client


async def a_request(app: App) -> GenerationRequest:
    image = await app.media.ingest(FIXTURES / "coffee.png")
    return GenerationRequest.create(prompt="Figure 1 steams", images=[image], duration=3)


async def funded(app: App, user: str, dollars: str) -> None:
    account = await app.ledger.account_for_user(GUILD, user)
    await app.ledger.grant(account, usd(dollars), actor="test", reason="test funds")


def families(text: str) -> dict[str, Any]:
    return {family.name: family for family in text_string_to_metric_families(text)}


def value(app: App, name: str, **labels: str) -> float:
    return app.metrics.registry.get_sample_value(name, labels) or 0.0


# --- /healthz -----------------------------------------------------------------------------------------------


async def test_healthz_is_ok_then_names_a_closed_database(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, _):
        await engine.start()
        async with ops(app, [database_check(app.db), engine_check(engine)]) as client:
            ok = await client.get("/healthz")
            assert ok.status_code == 200
            assert ok.json() == {"status": "ok", "checks": {"database": [], "engine": []}, "reasons": []}
            await engine.stop()
            await app.db.close()
            down = await client.get("/healthz")
        assert down.status_code == 503
        body = down.json()
        assert body["status"] == "unhealthy"
        assert body["checks"]["database"] == ["SELECT 1 failed: no active connection"]
        assert "database: SELECT 1 failed: no active connection" in body["reasons"]


class _ExplodingWake(asyncio.Event):
    """Stands in for the engine's wake-up event and breaks the dispatcher the next time it waits."""

    async def wait(self) -> bool:
        raise RuntimeError("dispatcher exploded")


async def test_healthz_names_a_dead_dispatcher(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, _):
        await engine.start()
        async with ops(app, [database_check(app.db), engine_check(engine)]) as client:
            assert (await client.get("/healthz")).status_code == 200
            engine._wake = _ExplodingWake()
            engine.wake()
            dispatcher = engine._loops[0]
            async with asyncio.timeout(5):
                while not dispatcher.done():  # noqa: ASYNC110 - waiting for the loop to die
                    await asyncio.sleep(0.01)
            down = await client.get("/healthz")
        assert down.status_code == 503
        assert down.json()["checks"] == {
            "database": [], "engine": ["the dispatcher died: RuntimeError('dispatcher exploded')"],
        }  # fmt: skip
        assert engine.health() == ["the dispatcher died: RuntimeError('dispatcher exploded')"]


async def test_engine_health_before_start_and_after_stop(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (_, engine, _):
        assert engine.health() == ["the engine is not running"]
        await engine.start()
        assert engine.health() == []
        await engine.stop()
        assert engine.health() == ["the dispatcher was cancelled", "the lease renewal loop was cancelled"]


class _Client:
    """What gateway_check reads from a discord.py client."""

    def __init__(self, *, ready: bool, closed: bool = False, latency: float = 0.05) -> None:
        self.ready, self.closed, self.latency = ready, closed, latency

    def is_ready(self) -> bool:
        return self.ready

    def is_closed(self) -> bool:
        return self.closed


@pytest.mark.parametrize(
    ("client", "problems"),
    [
        (_Client(ready=True), []),
        (_Client(ready=False, latency=math.inf), ["the Discord gateway is not ready",
                                                  "no heartbeat acknowledged by the Discord gateway"]),
        (_Client(ready=True, latency=math.nan), ["no heartbeat acknowledged by the Discord gateway"]),
        (_Client(ready=True, closed=True), ["the Discord client is closed"]),
    ],
)  # fmt: skip
async def test_gateway_check(client: _Client, problems: list[str]) -> None:
    assert await gateway_check(client).run() == problems


async def test_a_check_that_hangs_or_breaks_is_a_reason_not_a_500(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async def hangs() -> list[str]:
        await asyncio.sleep(60)
        return []

    async def breaks() -> list[str]:
        raise KeyError("gone")

    checks = [Check("slow", hangs), Check("broken", breaks)]
    results = await run_checks(checks, timeout_s=0.1)
    assert results == {"slow": ["no answer within 0.1 s"], "broken": ["the check failed: KeyError('gone')"]}
    async with opened(tmp_path, fake_ws) as (app, _, _), ops(app, [Check("broken", breaks)]) as client:
        response = await client.get("/healthz")
    assert response.status_code == 503
    assert response.json()["reasons"] == ["broken: the check failed: KeyError('gone')"]


# --- /metrics ---------------------------------------------------------------------------------------------


async def test_a_job_moves_the_gauges_the_histogram_and_the_provider_counter(
    tmp_path: Path, fake_ws: FakeWaveSpeed
) -> None:
    fake_ws.fail_next("poll", Status(500))  # one failed poll: counted, retried
    async with opened(tmp_path, fake_ws) as (app, engine, delivery), ops(app, []) as client:
        await funded(app, USER, "1.00")
        job = await engine.accept(await a_request(app), provider="wavespeed", user_id=USER, guild_id=GUILD)
        with pytest.raises(InsufficientQuota):
            await engine.accept(await a_request(app), provider="wavespeed", user_id=POOR_USER, guild_id=GUILD)
        before = families((await client.get("/metrics")).text)
        assert {(s.labels["state"], s.value) for s in before["reelbot_jobs"].samples
                if s.labels["provider"] == "wavespeed" and s.value} == {("queued", 1)}  # fmt: skip

        await engine.run_until_idle()
        assert (await app.jobs.require(job.id)).state is JobState.DONE and delivery.delivered
        response = await client.get("/metrics")
        assert response.status_code == 200 and response.headers["content-type"].startswith("text/plain")
        after = families(response.text)

    jobs = {(s.labels["state"], s.labels["provider"]): s.value for s in after["reelbot_jobs"].samples}
    assert jobs[("done", "wavespeed")] == 1 and jobs[("queued", "wavespeed")] == 0
    assert len(jobs) == len(JobState)  # every state is reported, at 0 when empty
    assert value(app, "reelbot_job_duration_seconds_count", provider="wavespeed", state="done") == 1
    assert value(app, "reelbot_job_duration_seconds_sum", provider="wavespeed", state="done") > 0

    def requests(method: str, status: str) -> float:
        return value(app, "reelbot_provider_http_requests_total", provider="wavespeed", method=method,
                     status_class=f"{status[0]}xx", status=status)  # fmt: skip

    assert requests("POST", "200") == fake_ws.count("upload") + fake_ws.count("submit") == 2
    assert requests("GET", "500") == 1
    assert requests("GET", "200") + requests("GET", "500") == fake_ws.count("poll")
    assert value(app, "reelbot_ledger_reservations_total", outcome="accepted") == 1
    assert value(app, "reelbot_ledger_reservations_total", outcome="refused") == 1


async def test_metrics_carry_every_family_and_no_member_or_server_id(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path, fake_ws) as (app, engine, _), ops(app, []) as client:
        await funded(app, USER, "1.00")
        await engine.accept(await a_request(app), provider="wavespeed", user_id=USER, guild_id=GUILD)
        with pytest.raises(InsufficientQuota):
            await engine.accept(await a_request(app), provider="wavespeed", user_id=POOR_USER, guild_id=GUILD)
        await engine.run_until_idle()
        app.metrics.observe_ack(0.4)
        app.metrics.observe_ack(0.02, response="message")
        app.metrics.discord_rate_limited("retried")
        text = (await client.get("/metrics")).text
        openmetrics = await client.get("/metrics", headers={"Accept": "application/openmetrics-text; version=1.0.0"})
    found = families(text)
    assert FAMILIES <= set(found)
    label_values = {v for family in found.values() for sample in family.samples for v in sample.labels.values()}
    assert not label_values & {USER, GUILD, POOR_USER}
    assert USER not in text and GUILD not in text and POOR_USER not in text
    assert value(app, "reelbot_interaction_ack_seconds_count", command="generate", response="defer") == 1
    assert value(app, "reelbot_discord_rest_429_total", outcome="retried") == 1
    assert openmetrics.headers["content-type"].startswith("application/openmetrics-text")
    assert openmetrics.text.rstrip().endswith("# EOF")


async def test_each_app_has_its_own_registry(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    async with opened(tmp_path / "a", fake_ws) as (first, _, _), opened(tmp_path / "b", fake_ws) as (second, _, _):
        first.metrics.reservation("accepted")
        assert value(first, "reelbot_ledger_reservations_total", outcome="accepted") == 1
        assert value(second, "reelbot_ledger_reservations_total", outcome="accepted") == 0


async def test_engine_log_lines_carry_the_job(tmp_path: Path, fake_ws: FakeWaveSpeed) -> None:
    fake_ws.fail_next("poll", Status(503))
    with captured_logs("json") as out:
        async with opened(tmp_path, fake_ws) as (app, engine, _):
            await funded(app, USER, "1.00")
            job = await engine.accept(await a_request(app), provider="wavespeed", user_id=USER, guild_id=GUILD)
            await engine.run_until_idle()
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    provider_lines = [line for line in lines if line["logger"] == "bot.providers.http"]
    moves = [line for line in lines if line["logger"] == "bot.store.jobs"]
    assert provider_lines and any("retry" in line["message"] for line in provider_lines)
    assert [line["message"].split(": ", 1)[1].split(" (")[0] for line in moves] == [
        "queued -> submitting", "submitting -> submitted", "submitted -> running", "running -> downloading",
        "downloading -> delivering", "delivering -> done",
    ]  # fmt: skip
    for line in provider_lines + moves:
        assert (line["job_id"], line["guild_id"], line["provider"]) == (job.id, GUILD, "wavespeed"), line


async def test_the_endpoint_is_off_by_default_and_a_taken_port_names_the_setting(
    tmp_path: Path, fake_ws: FakeWaveSpeed
) -> None:
    async with opened(tmp_path, fake_ws) as (app, _, _):
        off = app.settings.model_copy(update={"http_port": None})
        assert await start_ops_server(off, app.metrics, app.jobs, []) is None
        with socket.socket() as taken:
            taken.bind(("127.0.0.1", 0))
            taken.listen()
            port = taken.getsockname()[1]
            busy = app.settings.model_copy(update={"http_port": port})
            with pytest.raises(SettingsError, match=f"^REELBOT_HTTP_PORT={port}: cannot listen on 127.0.0.1:{port}"):
                await start_ops_server(busy, app.metrics, app.jobs, [])


def test_settings_defaults(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("REELBOT_HTTP_PORT", "REELBOT_HTTP_HOST", "REELBOT_LOG_FORMAT"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert (settings.http_port, settings.http_host, settings.log_format) == (None, "0.0.0.0", "text")
    with pytest.raises(SettingsError, match="REELBOT_LOG_FORMAT"):
        load_settings(REELBOT_LOG_FORMAT="xml")
