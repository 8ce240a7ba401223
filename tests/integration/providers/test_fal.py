"""fal specifics: the exact request, CDN uploads, queue URLs, result endpoint, cancel, error types, webhooks."""

from __future__ import annotations

import base64
import hashlib
import json
import time
from pathlib import Path

import pytest
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PrivateKey
from cryptography.hazmat.primitives.serialization import Encoding, PublicFormat

from bot.engine.states import JobState
from bot.providers.base import ProviderError, TaskStatus, WebhookRejected
from bot.request import Element, Shot
from tests.fakes.providers.harness import Status, Step
from tests.integration.providers.conftest import open_harness

FIXTURES = Path(__file__).parents[2] / "fixtures"
REQUESTS = "/fal-ai/kling-video/requests/"


@pytest.fixture
async def fal(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    async with open_harness("fal", tmp_path, monkeypatch) as h:
        yield h


async def test_exact_submit_request(fal) -> None:
    images = await fal.images("astronaut.png", "coffee.png", "rocket.jpg")
    request = await fal.request(prompt="Figure 1 holds image 2 under <<<image_3>>>", images=images, tier="pro",
                                duration=7, sound=True, aspect_ratio="9:16")  # fmt: skip
    job, _ = await fal.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    submit = fal.fake.last("submit")
    assert (submit.method, submit.path) == ("POST", "/fal-ai/kling-video/o3/pro/reference-to-video")
    assert submit.headers["Authorization"] == "Key test-key"
    body = submit.json()
    assert body["prompt"] == "@Image1 holds @Image2 under @Image3"
    assert body["duration"] == "7"  # a string enum on fal
    assert body["generate_audio"] is True and body["aspect_ratio"] == "9:16"
    assert (
        all(url.startswith(fal.fake.base_url + "/cdn/") for url in body["image_urls"]) and len(body["image_urls"]) == 3
    )
    for absent in ("shot_type", "multi_prompt", "elements", "start_image_url", "end_image_url"):
        assert absent not in body
    # local files: one storage token (with the key), then raw uploads to the CDN (with the token)
    assert fal.fake.count("upload-token") == 1 and fal.fake.count("upload") == 3
    assert fal.fake.last("upload-token").headers["Authorization"] == "Key test-key"
    assert fal.fake.last("upload").headers["Authorization"] == f"Bearer {fal.fake.cdn_token}"
    # the returned status/result URLs (without the endpoint's sub-path) are the ones polled
    polls = [r for r in fal.fake.requests if r.kind == "poll"]
    assert polls and all(r.path.startswith(REQUESTS) and r.path.endswith("/status") for r in polls)
    assert fal.fake.count("result") == 1 and fal.fake.last("result").path.startswith(REQUESTS)
    assert fal.fake.problems == []


async def test_shots_elements_and_frames(fal) -> None:
    astronaut, coffee, rocket = await fal.images("astronaut.png", "coffee.png", "rocket.jpg")
    shots = (Shot(prompt="@Element1 walks in", duration=2), Shot(prompt="close-up of Figure 1", duration=3))
    request = await fal.request(prompt=None, multi_prompt=shots, images=[coffee],
                                elements=(Element(frontal=astronaut, references=(rocket,)),),
                                start_frame=rocket, end_frame=coffee)  # fmt: skip
    job, _ = await fal.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    submit = fal.fake.last("submit")
    assert submit.path == "/fal-ai/kling-video/o3/standard/reference-to-video"
    body = submit.json()
    assert "prompt" not in body and body["shot_type"] == "customize" and body["duration"] == "5"
    assert body["multi_prompt"] == [{"prompt": "@Element1 walks in", "duration": "2"},
                                    {"prompt": "close-up of @Image1", "duration": "3"}]  # fmt: skip
    (element,) = body["elements"]
    assert element["frontal_image_url"].startswith(fal.fake.base_url + "/cdn/")
    assert body["start_image_url"] == element["reference_image_urls"][0]  # the same file, uploaded once
    assert body["end_image_url"] == body["image_urls"][0]
    assert body["generate_audio"] is False
    assert fal.fake.count("upload") == 3 and fal.fake.count("upload-token") == 1
    assert fal.fake.problems == []


async def test_parameters_fal_cannot_take_are_refused_before_sending(fal) -> None:
    video = await fal.app.media.ingest(FIXTURES / "motion_ref.mp4")
    request = await fal.request(video=video, elements=(Element(element_id="el-42"),))
    refused = [str(v) for v in fal.provider.check(request)]
    assert "video: fal does not accept a reference video" in refused
    assert "elements: fal does not accept element ids, only element images" in refused
    job, _ = await fal.run(request)
    assert job.state is JobState.FAILED and job.error_code == "INVALID_INPUT"
    assert fal.fake.count("submit") == 0 and fal.fake.count("upload") == 0 and fal.fake.count("upload-token") == 0


def _detail(kind: str, msg: str) -> dict:
    return {"detail": [{"loc": ["body", "prompt"], "msg": msg, "type": kind}]}


@pytest.mark.parametrize(
    ("status", "body", "headers", "code", "message"),
    [
        (401, {"detail": "No user found for Key ID and Secret"}, {}, "AUTH", "No user found for Key ID and Secret"),
        (403, {"detail": "User is locked. Reason: Exhausted balance."}, {}, "INSUFFICIENT_FUNDS",
         "User is locked. Reason: Exhausted balance."),
        (422, _detail("content_policy_violation", "The prompt was flagged"), {"X-Fal-Retryable": "false"},
         "CONTENT_POLICY", "The prompt was flagged"),
        (422, _detail("image_too_small", "Image must be at least 300 px"), {}, "INVALID_INPUT",
         "Image must be at least 300 px"),
        (422, _detail("file_download_error", "Could not download image_urls[0]"), {}, "INPUT_FETCH_FAILED",
         "Could not download image_urls[0]"),
        (400, _detail("downstream_busy", "Try again"), {"X-Fal-Retryable": "true"}, "PROVIDER_TRANSIENT", "Try again"),
        (429, {"detail": "Rate limit exceeded"}, {"Retry-After": "2"}, "RATE_LIMITED", "Rate limit exceeded"),
        (503, {"detail": "No runner available", "error_type": "runner_scheduling_failure"}, {},
         "PROVIDER_TRANSIENT", "No runner available"),
    ],
)  # fmt: skip
async def test_error_types_decide_the_code(
    fal, status: int, body: dict, headers: dict, code: str, message: str
) -> None:
    fal.fake.fail_next("submit", Status(status, body, headers))
    with pytest.raises(ProviderError) as caught:
        await fal.provider.submit(await fal.request(), job_id="j1")
    assert caught.value.code == code and caught.value.message == message and caught.value.http_status == status
    assert fal.fake.count("submit") == 1


async def test_queue_position_and_status_words(fal) -> None:
    fal.fake.script = [Step("queued", queue_position=7), Step("running"), Step("succeeded")]
    handle = await fal.provider.submit(await fal.request(), job_id="j1")
    assert handle.poll_url == f"{fal.fake.base_url}{REQUESTS}{handle.task_id}/status"
    assert handle.result_url == f"{fal.fake.base_url}{REQUESTS}{handle.task_id}"
    queued, running, done = [await fal.provider.poll(handle) for _ in range(3)]
    assert (queued.status, queued.queue_position) == (TaskStatus.QUEUED, 7)
    assert running.status is TaskStatus.RUNNING
    assert done.status is TaskStatus.SUCCEEDED and done.output_url == f"{fal.fake.base_url}/files/{handle.task_id}.mp4"
    assert fal.fake.count("result") == 1  # the result is fetched once, when the status says COMPLETED


async def test_a_result_endpoint_hiccup_is_retried(fal) -> None:
    fal.fake.fail_next("result", Status(503, {"detail": "upstream busy"}), Status(502))
    job, _ = await fal.run()
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    assert fal.fake.count("result") >= 3 and fal.fake.count("submit") == 1


async def test_a_failed_result_body_is_the_failure(fal) -> None:
    """COMPLETED without an error on the status, but the result is a typed 422: the request failed."""
    fal.fake.fail_next("result", Status(422, _detail("content_policy_violation", "output flagged as unsafe")))
    job, _ = await fal.run()
    assert job.state is JobState.FAILED and job.error_code == "CONTENT_POLICY"
    assert job.error_message == "output flagged as unsafe"


async def test_failed_status_keeps_fals_words_and_reads_the_result_once(fal) -> None:
    fal.fake.script = [Step("running"), Step("failed", message="Kling backend returned an error")]
    job, _ = await fal.run()
    assert job.state is JobState.FAILED and job.error_code == "PROVIDER_TRANSIENT"
    assert job.error_message == "Kling backend returned an error"
    assert fal.fake.count("result") == 1  # no retries on a result we already know failed


async def test_cancel_only_while_queued(fal) -> None:
    fal.fake.script = [Step("queued", queue_position=3)]
    handle = await fal.provider.submit(await fal.request(), job_id="j1")
    assert (await fal.provider.poll(handle)).status is TaskStatus.QUEUED
    assert await fal.provider.cancel(handle) is True
    cancel = fal.fake.last("cancel")
    assert (cancel.method, cancel.path) == ("PUT", f"{REQUESTS}{handle.task_id}/cancel")
    assert cancel.headers["Authorization"] == "Key test-key"
    assert (await fal.provider.poll(handle)).status is TaskStatus.CANCELED

    fal.fake.script = [Step("running")]
    running = await fal.provider.submit(await fal.request(), job_id="j2")
    await fal.provider.poll(running)
    assert await fal.provider.cancel(running) is False  # 400 ALREADY_COMPLETED once processing started


async def test_urls_from_another_host_are_not_trusted_with_the_key(fal) -> None:
    assert fal.provider._ours("https://elsewhere.example/fal-ai/kling-video/requests/x/status") is None
    own = f"{fal.fake.base_url}{REQUESTS}x/status"
    assert fal.provider._ours(own) == own


# --- webhooks ---------------------------------------------------------------------------------------


def _jwk(key: Ed25519PrivateKey) -> dict:
    raw = key.public_key().public_bytes(Encoding.Raw, PublicFormat.Raw)
    return {"kty": "OKP", "crv": "Ed25519", "x": base64.urlsafe_b64encode(raw).rstrip(b"=").decode(), "kid": "k1"}


def _signed(key: Ed25519PrivateKey, body: bytes, request_id: str, *, at: float | None = None) -> dict[str, str]:
    timestamp = str(int(at if at is not None else time.time()))
    message = "\n".join([request_id, "user-1", timestamp, hashlib.sha256(body).hexdigest()]).encode()
    return {
        "X-Fal-Webhook-Request-Id": request_id,
        "X-Fal-Webhook-User-Id": "user-1",
        "X-Fal-Webhook-Timestamp": timestamp,
        "X-Fal-Webhook-Signature": key.sign(message).hex(),
    }


async def test_webhook_signatures(fal) -> None:
    key = Ed25519PrivateKey.generate()
    fal.fake.jwks = {"keys": [_jwk(key)]}
    provider = fal.provider
    with pytest.raises(WebhookRejected, match="not loaded"):
        provider.parse_webhook({}, b"{}")
    await provider.prepare_webhooks()
    await provider.prepare_webhooks()
    assert fal.fake.count("jwks") == 1  # cached
    assert "Authorization" not in fal.fake.last("jwks").headers  # public keys: the API key is not sent

    payload = {"request_id": "req-1", "gateway_request_id": "req-1", "status": "OK",
               "payload": {"video": {"url": "https://v3.fal.media/files/out.mp4"}}}  # fmt: skip
    body = json.dumps(payload).encode()
    event = provider.parse_webhook(_signed(key, body, "req-1"), body)
    assert event.task_id == "req-1" and event.state is not None
    assert event.state.status is TaskStatus.SUCCEEDED and event.state.output_url == "https://v3.fal.media/files/out.mp4"

    with pytest.raises(WebhookRejected, match="replay"):
        provider.parse_webhook(_signed(key, body, "req-1"), body)
    with pytest.raises(WebhookRejected, match="does not match"):
        provider.parse_webhook(_signed(Ed25519PrivateKey.generate(), body, "req-2"), body)
    with pytest.raises(WebhookRejected, match="too old"):
        provider.parse_webhook(_signed(key, body, "req-1", at=time.time() - 301), body)
    tampered = body.replace(b"out.mp4", b"evil.mp4")
    with pytest.raises(WebhookRejected, match="does not match"):
        provider.parse_webhook(_signed(key, body, "req-1", at=time.time() - 1), tampered)
    with pytest.raises(WebhookRejected, match="another request"):
        provider.parse_webhook(_signed(key, body, "req-9"), body)


async def test_webhook_error_payloads_and_stale_keys(fal) -> None:
    key = Ed25519PrivateKey.generate()
    fal.fake.jwks = {"keys": [_jwk(key)]}
    provider = fal.provider
    await provider.prepare_webhooks()

    failed = {"request_id": "req-3", "status": "ERROR", "error": "Invalid status code: 422",
              "payload": _detail("content_policy_violation", "The output was flagged")}  # fmt: skip
    body = json.dumps(failed).encode()
    state = provider.parse_webhook(_signed(key, body, "req-3"), body).state
    assert state is not None and state.status is TaskStatus.FAILED
    assert (
        state.error is not None
        and state.error.code == "CONTENT_POLICY"
        and state.error.message == "The output was flagged"
    )

    too_big = json.dumps({"request_id": "req-4", "status": "OK", "payload": None,
                          "payload_error": "payload too large"}).encode()  # fmt: skip
    assert provider.parse_webhook(_signed(key, too_big, "req-4"), too_big).state is None  # confirm by polling

    provider._jwks_fetched_at -= 24 * 3600 + 1  # keys cached for at most a day
    fresh = json.dumps({"request_id": "req-5", "status": "OK", "payload": {"video": {"url": "u"}}}).encode()
    with pytest.raises(WebhookRejected, match="older than a day"):
        provider.parse_webhook(_signed(key, fresh, "req-5"), fresh)
    await provider.prepare_webhooks()
    assert fal.fake.count("jwks") == 2
    assert provider.parse_webhook(_signed(key, fresh, "req-5"), fresh).task_id == "req-5"


async def test_a_rejected_cdn_token_is_renewed(fal) -> None:
    fal.fake.fail_next("upload", Status(401, {"detail": "token expired"}))
    with pytest.raises(ProviderError) as caught:
        await fal.provider.submit(await fal.request(), job_id="j1")
    assert caught.value.code == "AUTH" and fal.fake.count("submit") == 0
    await fal.provider.submit(await fal.request(), job_id="j2")
    assert fal.fake.count("upload-token") == 2 and fal.fake.count("submit") == 1
