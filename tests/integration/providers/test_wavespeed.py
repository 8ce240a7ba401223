"""WaveSpeed specifics: the exact request, reference rewriting, refusals, uploads, webhook signatures."""

from __future__ import annotations

import hashlib
import hmac
import json
import time
from pathlib import Path

import pytest

from bot.engine.states import JobState
from bot.providers.base import WebhookRejected
from bot.request import Element, InvalidRequest, Shot
from tests.integration.providers.conftest import open_harness


@pytest.fixture
async def ws(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    async with open_harness("wavespeed", tmp_path, monkeypatch) as h:
        yield h


async def test_exact_submit_request(ws) -> None:
    images = await ws.images("astronaut.png", "coffee.png", "rocket.jpg")
    request = await ws.request(prompt="@Image1 holds image 2 under <<<image_3>>>", images=images, tier="pro",
                               duration=7, sound=True, aspect_ratio="9:16")  # fmt: skip
    job, _ = await ws.run(request)
    assert job.state is JobState.DONE
    submit = ws.fake.last("submit")
    assert submit.method == "POST"
    assert submit.path == "/api/v3/kwaivgi/kling-video-o3-pro/reference-to-video"
    assert submit.headers["Authorization"] == "Bearer test-key"
    body = submit.json()
    assert body["prompt"] == "Figure 1 holds Figure 2 under Figure 3"
    assert body["duration"] == 7 and isinstance(body["duration"], int)
    assert body["sound"] is True and body["aspect_ratio"] == "9:16" and body["shot_type"] == "intelligent"
    assert len(body["images"]) == 3 and all(url.startswith(ws.fake.base_url + "/uploads/") for url in body["images"])
    assert ws.fake.count("upload") == 3  # local files go through WaveSpeed's media upload
    assert "video" not in body and "keep_original_sound" not in body


async def test_video_reference_and_multi_prompt(ws) -> None:
    video = await ws.app.media.ingest(Path(__file__).parents[2] / "fixtures" / "motion_ref.mp4")
    images = await ws.images("astronaut.png")
    shots = (Shot(prompt="Figure 1 walks in", duration=2), Shot(prompt="close-up", duration=3))
    request = await ws.request(prompt=None, multi_prompt=shots, images=images, video=video, keep_original_sound=False)
    job, _ = await ws.run(request)
    assert job.state is JobState.DONE
    body = ws.fake.last("submit").json()
    assert body["video"].startswith(ws.fake.base_url) and body["keep_original_sound"] is False
    assert "sound" not in body
    assert body["multi_prompt"] == [
        {"index": 1, "prompt": "Figure 1 walks in", "duration": 2},
        {"index": 2, "prompt": "close-up", "duration": 3},
    ]


async def test_uploads_are_reused_for_the_same_file(ws) -> None:
    images = await ws.images("astronaut.png")
    await ws.run(await ws.request(prompt="Figure 1", images=images))
    await ws.run(await ws.request(prompt="Figure 1 again", images=images))
    assert ws.fake.count("upload") == 1 and ws.fake.count("submit") == 2


async def test_parameters_wavespeed_cannot_take_are_refused_before_sending(ws) -> None:
    images = await ws.images("astronaut.png", "coffee.png")
    request = await ws.request(start_frame=images[0], elements=(Element(element_id="123"),))
    refused = [str(v) for v in ws.provider.check(request)]
    assert "start_frame: WaveSpeed does not accept start or end frames" in refused
    assert "elements: WaveSpeed takes elements only on the pro tier" in refused
    job, _ = await ws.run(request)
    assert job.state is JobState.FAILED and job.error_code == "INVALID_INPUT"
    assert "WaveSpeed does not accept start or end frames" in (job.error_message or "")
    assert ws.fake.count("submit") == 0 and ws.fake.count("upload") == 0


async def test_auth_failure_is_named(ws) -> None:
    ws.fake.api_key = "another-key"
    job, _ = await ws.run()
    assert job.state is JobState.FAILED and job.error_code == "AUTH" and "Unauthorized" in (job.error_message or "")


def _signed(secret: str, body: bytes, *, webhook_id: str = "msg_1", at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    key = secret.removeprefix("whsec_").encode()
    digest = hmac.new(key, f"{webhook_id}.{timestamp}.".encode() + body, hashlib.sha256).hexdigest()
    return {"webhook-id": webhook_id, "webhook-timestamp": timestamp, "webhook-signature": f"v3,{digest}"}


async def test_webhook_signatures(ws) -> None:
    provider = ws.provider
    await provider.prepare_webhooks()  # fetches the secret from GET /api/v3/webhook/secret
    secret = ws.fake.webhook_secret
    payload = {"id": "ws000001", "status": "completed", "outputs": ["https://x/out.mp4"], "has_nsfw_contents": [True]}
    body = json.dumps(payload).encode()

    event = provider.parse_webhook(_signed(secret, body), body)
    assert event.task_id == "ws000001" and event.state is not None and event.state.nsfw is True

    with pytest.raises(WebhookRejected, match="replay"):
        provider.parse_webhook(_signed(secret, body), body)  # same webhook-id again
    with pytest.raises(WebhookRejected, match="does not match"):
        provider.parse_webhook(_signed("whsec_forged", body, webhook_id="msg_2"), body)
    with pytest.raises(WebhookRejected, match="too old"):
        provider.parse_webhook(_signed(secret, body, webhook_id="msg_3", at=time.time() - 301), body)
    tampered = body.replace(b"completed", b"failed")
    with pytest.raises(WebhookRejected, match="does not match"):
        provider.parse_webhook(_signed(secret, body, webhook_id="msg_4"), tampered)


async def test_request_model_rules_still_apply(ws) -> None:
    with pytest.raises(InvalidRequest):
        await ws.request(duration=16)
