"""EvoLink specifics: the exact request, uploads, references, refusals, error bodies, callback tokens."""

from __future__ import annotations

import json
from pathlib import Path
from urllib.parse import parse_qs, urlsplit

import pytest

from bot.engine.states import JobState
from bot.providers.base import ErrorCode, ProviderError, TaskStatus, WebhookRejected
from bot.request import Element, Shot
from tests.fakes.providers.harness import Status, Step
from tests.integration.providers.conftest import open_harness

FIXTURES = Path(__file__).parents[2] / "fixtures"


@pytest.fixture
async def evo(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    async with open_harness("evolink", tmp_path, monkeypatch) as h:
        yield h


async def test_exact_submit_request(evo) -> None:
    images = await evo.images("astronaut.png", "coffee.png", "rocket.jpg")
    request = await evo.request(prompt="@Image1 holds image 2 under <<<image_3>>>", images=images, tier="pro",
                                duration=7, sound=True, aspect_ratio="9:16")  # fmt: skip
    job, _ = await evo.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    submit = evo.fake.last("submit")
    assert (submit.method, submit.path) == ("POST", "/v1/videos/generations")
    assert submit.headers["Authorization"] == "Bearer test-key"
    body = submit.json()
    assert body["model"] == "kling-o3-reference-to-video"
    assert body["prompt"] == "@Image1 holds @Image2 under @Image3"
    assert body["duration"] == 7 and isinstance(body["duration"], int)
    assert body["generate_audio"] is True and body["aspect_ratio"] == "9:16" and body["quality"] == "1080p"
    assert [url.rsplit("/", 1)[0] for url in body["image_urls"]] == [evo.fake.base_url + "/uploads"] * 3
    assert evo.fake.count("upload") == 3  # local images go through the file API's stream upload
    assert evo.fake.last("upload").path == "/api/v1/files/upload/stream"
    for absent in ("video_url", "keep_original_sound", "callback_url", "shot_type", "multi_prompt"):
        assert absent not in body
    assert evo.fake.problems == []


async def test_elements_frames_shots_and_4k(evo) -> None:
    astronaut, coffee, rocket = await evo.images("astronaut.png", "coffee.png", "rocket.jpg")
    shots = (Shot(prompt="@Element1 walks in", duration=2), Shot(prompt="close-up of Figure 1", duration=3))
    request = await evo.request(prompt=None, multi_prompt=shots, images=[coffee], tier="4k",
                                elements=(Element(frontal=astronaut, references=(rocket,)),),
                                start_frame=rocket, end_frame=coffee)  # fmt: skip
    job, _ = await evo.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    body = evo.fake.last("submit").json()
    assert "prompt" not in body and body["quality"] == "4k"
    assert body["multi_prompt"] == [{"prompt": "@Element1 walks in", "duration": 2},
                                    {"prompt": "close-up of @Image1", "duration": 3}]  # fmt: skip
    (element,) = body["elements"]
    assert set(element) == {"frontal_image_url", "reference_image_urls"} and len(element["reference_image_urls"]) == 1
    assert body["image_start"] == element["reference_image_urls"][0]  # the same file, uploaded once
    assert body["image_end"] == body["image_urls"][0]
    assert evo.fake.count("upload") == 3
    assert evo.fake.problems == []


async def test_reference_video_is_sent_by_its_public_url(evo) -> None:
    video = await evo.app.media.ingest(FIXTURES / "motion_ref.mp4")
    video = video.model_copy(update={"source_url": "https://cdn.example.com/motion.mp4"})
    request = await evo.request(video=video, keep_original_sound=False)
    job, _ = await evo.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    body = evo.fake.last("submit").json()
    assert body["video_url"] == "https://cdn.example.com/motion.mp4" and body["keep_original_sound"] is False
    assert "generate_audio" not in body
    assert evo.fake.count("upload") == 2  # the two images only: the file API takes no videos


async def test_a_published_copy_of_the_video_is_preferred(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> None:
    published = "https://media.reelbot.test/m"
    async with open_harness("evolink", tmp_path, monkeypatch, REELBOT_PUBLIC_MEDIA_URL=published) as h:
        video = await h.app.media.ingest(FIXTURES / "motion_ref.mp4")
        video = video.model_copy(update={"source_url": "https://cdn.discordapp.com/attachments/1/2/motion.mp4"})
        job, _ = await h.run(await h.request(video=video))
        assert job.state is JobState.DONE, (job.error_code, job.error_message)
        assert h.fake.last("submit").json()["video_url"] == f"{published}/{Path(video.path).name}"


async def test_parameters_evolink_cannot_take_are_refused_before_sending(evo) -> None:
    video = await evo.app.media.ingest(FIXTURES / "motion_ref.mp4")  # no public URL
    request = await evo.request(video=video, duration=12, elements=(Element(element_id="el-42"),))
    refused = [str(v) for v in evo.provider.check(request)]
    assert "elements: EvoLink does not accept element ids, only element images" in refused
    assert any(r.startswith("video: EvoLink needs a public https:// URL") for r in refused)
    assert "duration: EvoLink makes at most 10 s with a reference video (12 s asked)" in refused
    job, _ = await evo.run(request)
    assert job.state is JobState.FAILED and job.error_code == "INVALID_INPUT"
    assert "set REELBOT_PUBLIC_MEDIA_URL" in (job.error_message or "")
    assert evo.fake.count("submit") == 0 and evo.fake.count("upload") == 0


@pytest.mark.parametrize(
    ("status", "error", "headers", "code"),
    [
        (401, {"code": "unauthorized", "message": "Invalid API key", "type": "authentication_error"}, {}, "AUTH"),
        (429, {"code": "quota_exceeded", "message": "Credits exhausted, please top up"}, {}, "INSUFFICIENT_FUNDS"),
        (402, {"code": 402, "message": "Insufficient credits", "type": "insufficient_quota_error"}, {},
         "INSUFFICIENT_FUNDS"),
        (429, {"code": 429, "message": "Insufficient balance, recharge to continue"}, {}, "INSUFFICIENT_FUNDS"),
        (429, {"code": "rate_limit_exceeded", "message": "Too many requests"}, {"Retry-After": "3"}, "RATE_LIMITED"),
        (400, {"code": "invalid_parameters", "message": "aspect_ratio is invalid"}, {}, "INVALID_INPUT"),
        (400, {"code": "content_policy_violation", "message": "celebrity detected in image"}, {}, "CONTENT_POLICY"),
        (503, {"code": "service_unavailable", "message": "Service temporarily unavailable"}, {},
         "PROVIDER_TRANSIENT"),
    ],
)  # fmt: skip
async def test_error_bodies_are_read(evo, status: int, error: dict, headers: dict, code: str) -> None:
    evo.fake.fail_next("submit", Status(status, {"error": error}, headers))
    with pytest.raises(ProviderError) as caught:
        await evo.provider.submit(await evo.request(), job_id="j1")
    assert caught.value.code == code and caught.value.message == error["message"]
    assert caught.value.http_status == status and caught.value.provider == "evolink"
    if headers:
        assert caught.value.retry_after == 3.0


async def test_out_of_credits_fails_the_job_with_evolinks_words(evo) -> None:
    body = {"error": {"code": "quota_exceeded", "message": "Credits exhausted, please top up"}}
    evo.fake.fail_next("submit", Status(429, body))
    job, _ = await evo.run()
    assert job.state is JobState.FAILED and job.error_code == "INSUFFICIENT_FUNDS"
    assert job.error_message == "Credits exhausted, please top up"
    assert evo.fake.count("submit") == 1  # never retried blindly


@pytest.mark.parametrize(
    ("failure_code", "code"),
    [
        ("image_processing_error", "INPUT_FETCH_FAILED"),
        ("generation_timeout", "GENERATION_TIMEOUT"),
        ("quota_exceeded", "INSUFFICIENT_FUNDS"),
        ("invalid_parameters", "INVALID_INPUT"),
    ],
)
async def test_task_failure_codes(evo, failure_code: str, code: str) -> None:
    evo.fake.failure_code = failure_code
    evo.fake.script = [Step("running", 0.5), Step("failed", message=f"evolink says {failure_code}")]
    job, _ = await evo.run()
    assert job.state is JobState.FAILED and job.error_code == code
    assert job.error_message == f"evolink says {failure_code}"


async def test_a_cancelled_task_ends_cancelled(evo) -> None:
    evo.fake.script = [Step("queued"), Step("cancelled")]
    job, _ = await evo.run()
    assert job.state is JobState.CANCELLED and job.error_code == "CANCELED"


async def test_progress_is_read_as_a_percentage(evo) -> None:
    evo.fake.script = [Step("queued"), Step("running", 0.42)]
    handle = await evo.provider.submit(await evo.request(), job_id="j1")
    assert handle.task_id.startswith("task-unified-") and handle.poll_url == f"/v1/tasks/{handle.task_id}"
    queued = await evo.provider.poll(handle)
    running = await evo.provider.poll(handle)
    assert queued.status is TaskStatus.QUEUED and queued.progress == 0.0
    assert running.status is TaskStatus.RUNNING and running.progress == pytest.approx(0.42)
    assert evo.fake.last("poll").path == f"/v1/tasks/{handle.task_id}"


async def test_callback_url_carries_a_per_job_token(evo) -> None:
    provider = evo.provider
    handle = await provider.submit(
        await evo.request(), job_id="j1", webhook_url="https://bot.example/hooks/evolink?job=j1"
    )
    callback = evo.fake.last("submit").json()["callback_url"]
    query = parse_qs(urlsplit(callback).query)
    assert callback.startswith("https://bot.example/hooks/evolink?") and query["job"] == ["j1"]
    token = query["token"][0]
    assert handle.extra["webhook_token"] == token and len(token) >= 24

    body = json.dumps({"id": handle.task_id, "status": "completed", "results": ["https://evil.example/x.mp4"]}).encode()
    event = provider.parse_webhook({}, body, token=token, handle=handle)
    assert event.task_id == handle.task_id
    assert event.state is None  # unsigned: the engine re-polls instead of believing the body

    with pytest.raises(WebhookRejected, match="token"):
        provider.parse_webhook({}, body, token="guessed-token", handle=handle)
    with pytest.raises(WebhookRejected, match="token"):
        provider.parse_webhook({}, body, token=None, handle=handle)
    with pytest.raises(WebhookRejected, match="handle"):
        provider.parse_webhook({}, body, token=token)
    other = json.dumps({"id": "task-unified-1-other", "status": "completed"}).encode()
    with pytest.raises(WebhookRejected, match="another task"):
        provider.parse_webhook({}, other, token=token, handle=handle)


async def test_plain_http_callbacks_are_not_sent(evo) -> None:
    handle = await evo.provider.submit(await evo.request(), job_id="j1", webhook_url="http://bot.example/hooks")
    assert "callback_url" not in evo.fake.last("submit").json()
    assert "webhook_token" not in handle.extra
    with pytest.raises(WebhookRejected):  # no token was issued, so none can match
        evo.provider.parse_webhook({}, b"{}", token="anything", handle=handle)


async def test_completed_without_results_is_not_a_success(evo) -> None:
    state = evo.provider.parse_state({"id": "task-unified-1-a", "status": "completed", "progress": 100, "results": []})
    assert state.status is TaskStatus.FAILED and state.error is not None
    assert state.error.code is ErrorCode.OUTPUT_INVALID


async def test_uploads_are_reused_only_while_they_outlive_a_job(evo) -> None:
    images = await evo.images("astronaut.png")
    await evo.run(await evo.request(prompt="Figure 1", images=images))
    await evo.run(await evo.request(prompt="Figure 1 again", images=images))
    assert evo.fake.count("upload") == 1 and evo.fake.count("submit") == 2
    uploads = evo.provider._uploads
    for sha, (url, at) in list(uploads.items()):
        uploads[sha] = (url, at - 24 * 3600 - 1)  # a day old: EvoLink deletes files at 72 h
    await evo.run(await evo.request(prompt="Figure 1 once more", images=images))
    assert evo.fake.count("upload") == 2
