"""Kling (own API) specifics: the JWT, the exact request, base64 images, URL-only videos, refusals, service
codes read from the body, reconcile by external_task_id, and token-checked callbacks."""

from __future__ import annotations

import base64
import json
import logging
from pathlib import Path

import httpx
import jwt
import pytest

from bot.engine.states import JobState
from bot.providers.base import ErrorCode, ProviderError, TaskStatus, WebhookRejected
from bot.providers.kling import KlingProvider, with_token
from bot.request import Element, Shot
from tests.fakes.providers.harness import Hang, Status, Step
from tests.integration.providers.conftest import Harness, open_harness

FIXTURES = Path(__file__).parents[2] / "fixtures"


@pytest.fixture
async def kl(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    async with open_harness("kling", tmp_path, monkeypatch) as h:
        yield h


async def public_video(h: Harness):
    """A reference video reelbot received from a URL (Kling needs one it can fetch itself)."""
    return await h.app.media.ingest(f"{h.fake.base_url}/files/motion_ref.mp4", http=h.app.http, expect="video")


def kling(h: Harness) -> KlingProvider:
    provider = h.provider
    assert isinstance(provider, KlingProvider)
    return provider


# --- the request -------------------------------------------------------------------------------------


async def test_exact_submit_request(kl: Harness) -> None:
    images = await kl.images("astronaut.png", "coffee.png", "rocket.jpg")
    request = await kl.request(prompt="@Image1 holds image 2 under Figure 3", images=images, tier="pro",
                               duration=7, sound=True, aspect_ratio="9:16")  # fmt: skip
    job, _ = await kl.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    submit = kl.fake.last("submit")
    assert (submit.method, submit.path) == ("POST", "/v1/videos/omni-video")
    body = submit.json()
    assert body == {
        "model_name": "kling-v3-omni",
        "mode": "pro",
        "duration": "7",
        "sound": "on",
        "external_task_id": job.id,
        "multi_shot": False,
        "prompt": "<<<image_1>>> holds <<<image_2>>> under <<<image_3>>>",
        "aspect_ratio": "9:16",
        "image_list": body["image_list"],
    }
    # local files go inline as plain base64 (no data: prefix), in the person's order, without a type
    assert [set(item) for item in body["image_list"]] == [{"image_url"}] * 3
    sent = [base64.b64decode(item["image_url"], validate=True) for item in body["image_list"]]
    assert sent == [Path(ref.path).read_bytes() for ref in images]
    assert job.provider_task_id == kl.fake.by_external[job.id]
    assert kl.fake.problems == []


async def test_every_request_carries_a_fresh_jwt(kl: Harness) -> None:
    job, _ = await kl.run()
    assert job.state is JobState.DONE
    calls = [r for r in kl.fake.requests if r.kind in ("submit", "poll")]
    assert len(calls) >= 4
    for call in calls:
        scheme, _, token = call.headers["Authorization"].partition(" ")
        assert scheme == "Bearer"
        assert jwt.get_unverified_header(token) == {"alg": "HS256", "typ": "JWT"}
        claims = jwt.decode(token, kl.fake.secret_key, algorithms=["HS256"])
        assert claims["iss"] == "test-key" and claims["exp"] - claims["nbf"] == 1805
    # signed now, valid for 30 minutes from now, and from 5 s ago
    claims = jwt.decode(kling(kl).api_token(now=1_000_000), kl.fake.secret_key, algorithms=["HS256"],
                        options={"verify_exp": False})  # fmt: skip
    assert claims == {"iss": "test-key", "exp": 1_001_800, "nbf": 999_995}
    assert kling(kl).api_token(now=1_000_000) != kling(kl).api_token(now=1_000_001)


async def test_video_reference_multi_prompt_and_elements(kl: Harness) -> None:
    video = await public_video(kl)
    images = await kl.images("astronaut.png")
    shots = (Shot(prompt="Figure 1 meets element 1", duration=2), Shot(prompt="@Element2 waves", duration=3))
    request = await kl.request(prompt=None, multi_prompt=shots, images=images, video=video, keep_original_sound=False,
                               elements=(Element(element_id="123456789012"), Element(element_id="42")))  # fmt: skip
    job, _ = await kl.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    body = kl.fake.last("submit").json()
    assert "prompt" not in body
    assert body["multi_shot"] is True and body["shot_type"] == "customize"
    assert body["multi_prompt"] == [
        {"index": 1, "prompt": "<<<image_1>>> meets <<<element_1>>>", "duration": "2"},
        {"index": 2, "prompt": "<<<element_2>>> waves", "duration": "3"},
    ]
    assert body["element_list"] == [{"element_id": 123456789012}, {"element_id": 42}]
    assert body["video_list"] == [{"video_url": video.source_url, "refer_type": "feature", "keep_original_sound": "no"}]
    assert body["sound"] == "off"
    assert kl.fake.problems == []


async def test_start_and_end_frames(kl: Harness) -> None:
    first, last = await kl.images("astronaut.png", "chelsea.png")
    request = await kl.request(prompt="the astronaut turns into a cat", images=[], start_frame=first, end_frame=last)
    job, _ = await kl.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    body = kl.fake.last("submit").json()
    assert [item["type"] for item in body["image_list"]] == ["first_frame", "end_frame"]
    assert base64.b64decode(body["image_list"][0]["image_url"]) == Path(first.path).read_bytes()
    assert "aspect_ratio" not in body  # the first frame decides the shape
    assert kl.fake.problems == []


async def test_start_frame_follows_the_reference_images(kl: Harness) -> None:
    images = await kl.images("astronaut.png", "coffee.png")
    (frame,) = await kl.images("rocket.jpg")
    job, _ = await kl.run(await kl.request(prompt="Figure 2 beside Figure 1", images=images, start_frame=frame))
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    body = kl.fake.last("submit").json()
    assert [item.get("type") for item in body["image_list"]] == [None, None, "first_frame"]
    assert body["prompt"] == "<<<image_2>>> beside <<<image_1>>>"


async def test_parameters_kling_cannot_take_are_refused_before_sending(kl: Harness, tmp_path: Path) -> None:
    images = await kl.images("astronaut.png", "coffee.png")
    webp = kl.app.media.ingest_bytes("pic.webp", _webp_bytes(tmp_path))
    local_video = await kl.app.media.ingest(FIXTURES / "motion_ref.mp4")
    request = await kl.request(images=[*images, webp], video=local_video, shot_type="customize",
                               elements=(Element(element_id="not-a-number"),))  # fmt: skip
    refused = [str(v) for v in kl.provider.check(request)]
    four_k = await kl.request(tier="4k")
    assert [str(v) for v in kl.provider.check(four_k)] == [
        "tier: Kling does not offer the 4k tier (choose pro, standard)"
    ]
    assert any(r.startswith("video: Kling needs the reference video as a publicly reachable URL") for r in refused)
    assert "images: Kling accepts only JPEG or PNG images (pic.webp is WEBP)" in refused
    assert "elements[1]: Kling element ids are whole numbers; 'not-a-number' is not one" in refused
    assert any(r.startswith("shot_type: Kling takes shot_type customize only with a multi-prompt") for r in refused)
    job, _ = await kl.run(request)
    assert job.state is JobState.FAILED and job.error_code == "INVALID_INPUT"
    assert "publicly reachable URL" in (job.error_message or "")
    assert kl.fake.count("submit") == 0 and kl.fake.requests == []


async def test_frames_count_towards_the_image_limit_and_end_frames_stand_alone(kl: Harness) -> None:
    seven = await kl.images(*["astronaut.png", "coffee.png", "rocket.jpg", "chelsea.png"] * 2)
    request = await kl.request(prompt="x", images=seven[:7], start_frame=seven[7], end_frame=seven[0])
    refused = [str(v) for v in kl.provider.check(request)]
    assert "start_frame: Kling counts start/end frames as images: 9 images, frames and elements given, at most 7" in (
        refused
    )
    assert "end_frame: Kling does not take an end frame together with reference images" in refused
    video = await public_video(kl)
    with_video = await kl.request(prompt="x", images=seven[:4], video=video, start_frame=seven[4])
    assert [str(v) for v in kl.provider.check(with_video)] == [
        "start_frame: Kling counts start/end frames as images: 5 images, frames and elements given, "
        "at most 4 with a reference video"
    ]
    ok = await kl.request(prompt="x", images=seven[:3], start_frame=seven[3])
    assert kl.provider.check(ok) == []


# --- errors: the service code in the body decides ---------------------------------------------------


def _kling_body(code: int, message: str) -> dict[str, object]:
    return {"code": code, "message": message, "request_id": "r1"}


SERVICE_CODES = [
    (401, 1000, ErrorCode.AUTH),
    (401, 1004, ErrorCode.AUTH),
    (429, 1100, ErrorCode.INSUFFICIENT_FUNDS),
    (429, 1101, ErrorCode.INSUFFICIENT_FUNDS),
    (429, 1102, ErrorCode.INSUFFICIENT_FUNDS),
    (403, 1103, ErrorCode.AUTH),
    (400, 1200, ErrorCode.INVALID_INPUT),
    (400, 1201, ErrorCode.INVALID_INPUT),
    (400, 1301, ErrorCode.CONTENT_POLICY),
    (429, 1302, ErrorCode.RATE_LIMITED),
    (429, 1303, ErrorCode.RATE_LIMITED),
    (500, 5000, ErrorCode.PROVIDER_TRANSIENT),
    (503, 5001, ErrorCode.PROVIDER_TRANSIENT),
    (504, 5002, ErrorCode.PROVIDER_TRANSIENT),
    (429, None, ErrorCode.RATE_LIMITED),  # no code: the HTTP status decides
]


async def test_service_codes(kl: Harness) -> None:
    classify = kling(kl).api.classify
    for status, code, expected in SERVICE_CODES:
        body = _kling_body(code, "Kling's own words") if code is not None else {"message": "Kling's own words"}
        error = classify(httpx.Response(status), body)
        assert (error.code, error.http_status) == (expected, status), (status, code)
        assert error.message.startswith("Kling's own words")
        if code is not None:
            assert f"code {code}" in error.message
        if expected is ErrorCode.RATE_LIMITED and code is not None:
            assert (error.retry_after or 0) >= 1.0  # Kling asks for at least 1 s of back-off


async def test_resource_pack_used_up_is_insufficient_funds_not_a_rate_limit(kl: Harness) -> None:
    kl.fake.fail_next("submit", Status(429, _kling_body(1102, "resource pack exhausted")))
    job, delivery = await kl.run()
    assert job.state is JobState.FAILED and job.error_code == "INSUFFICIENT_FUNDS"
    assert "resource pack exhausted" in (job.error_message or "")
    assert kl.fake.count("submit") == 1 and delivery.failures


async def test_parallel_task_limit_is_waited_out(kl: Harness) -> None:
    kl.fake.fail_next("submit", Status(429, _kling_body(1303, "parallel task over resource pack limit")))
    job, _ = await kl.run()
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    assert kl.fake.count("submit") == 2  # the first was refused, so nothing was accepted twice


async def test_content_security_refusal_at_submit(kl: Harness) -> None:
    kl.fake.fail_next("submit", Status(400, _kling_body(1301, "content security policy triggered")))
    job, _ = await kl.run()
    assert job.state is JobState.FAILED and job.error_code == "CONTENT_POLICY"
    assert "content security policy triggered" in (job.error_message or "")


async def test_wrong_secret_is_an_auth_failure(kl: Harness) -> None:
    kl.fake.secret_key = "another-secret-key-that-is-long-enough-000"
    job, _ = await kl.run()
    assert job.state is JobState.FAILED and job.error_code == "AUTH"
    assert "Authorization is invalid (code 1002)" in (job.error_message or "")
    kl.fake.problems.clear()  # the fake rightly recorded the bad signature


async def test_an_error_code_inside_a_2xx_reply(kl: Harness) -> None:
    kl.fake.fail_next("submit", Status(200, _kling_body(1201, "duration is invalid")))
    job, _ = await kl.run()
    assert job.state is JobState.FAILED and job.error_code == "INVALID_INPUT"
    assert "duration is invalid" in (job.error_message or "")


async def test_risk_control_failure_in_chinese_is_content_policy(kl: Harness) -> None:
    kl.fake.script = [Step("running"), Step("failed", message="触发内容风控，请修改输入")]
    job, _ = await kl.run()
    assert job.state is JobState.FAILED and job.error_code == "CONTENT_POLICY"
    assert "风控" in (job.error_message or "")


async def test_poll_reads_status_output_and_units(kl: Harness) -> None:
    provider = kling(kl)
    request = await kl.request()
    handle = await provider.submit(request, job_id="job-direct-1")
    assert handle.poll_url == f"/v1/videos/omni-video/{handle.task_id}"
    assert handle.extra == {"external_task_id": "job-direct-1"}
    states = [await provider.poll(handle) for _ in range(4)]
    assert [s.status for s in states] == [TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.RUNNING,
                                          TaskStatus.SUCCEEDED]  # fmt: skip
    assert states[-1].output_url == kl.fake.output_url(kl.fake.tasks[handle.task_id])
    assert states[-1].raw is not None and states[-1].raw["final_unit_deduction"] == "5"


async def test_nothing_secret_reaches_the_logs(kl: Harness, caplog: pytest.LogCaptureFixture) -> None:
    caplog.set_level(logging.DEBUG)
    kl.fake.fail_next("submit", Status(400, _kling_body(1201, "bad image")))
    images = await kl.images("astronaut.png")
    job, _ = await kl.run(await kl.request(prompt="Figure 1", images=images))
    assert job.state is JobState.FAILED
    image_b64 = base64.b64encode(Path(images[0].path).read_bytes()).decode()
    text = caplog.text + (job.error_message or "")
    assert kl.fake.secret_key not in text and image_b64[:64] not in text and "Bearer" not in text


# --- reconcile ---------------------------------------------------------------------------------------


async def test_lost_submit_reply_is_found_by_external_task_id(kl: Harness) -> None:
    kl.fake.fail_next("submit", Hang(1))  # longer than the 0.5 s submit timeout
    job, _ = await kl.run()
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    assert kl.fake.count("submit") == 1
    lookup = next(r for r in kl.fake.requests if r.kind == "poll")
    assert lookup.path == f"/v1/videos/omni-video/{job.id}"  # by our id: the reply with its task id was lost
    assert job.provider_task_id == kl.fake.by_external[job.id]


async def test_reconcile_answers_none_when_kling_has_no_such_task(kl: Harness) -> None:
    assert await kling(kl).reconcile("never-sent") is None
    assert [r.path for r in kl.fake.requests] == ["/v1/videos/omni-video/never-sent"] * 3


async def test_reconcile_ignores_a_task_that_is_not_ours(kl: Harness) -> None:
    other = await kling(kl).submit(await kl.request(), job_id="someone-else")
    # our job id happens to equal another task's task_id: the task it returns carries a different external id
    assert await kling(kl).reconcile(other.task_id) is None


async def test_reconcile_raises_on_auth_failure(kl: Harness) -> None:
    kl.fake.secret_key = "another-secret-key-that-is-long-enough-000"
    with pytest.raises(ProviderError) as caught:
        await kling(kl).reconcile("job-x")
    assert caught.value.code is ErrorCode.AUTH
    kl.fake.problems.clear()


# --- callbacks (Kling signs nothing: a per-job token, and the state is never trusted) -----------------


async def test_callback_url_carries_a_per_job_token(kl: Harness) -> None:
    provider = kling(kl)
    request = await kl.request()
    handle = await provider.submit(request, job_id="job-hook-1", webhook_url="https://bot.example/hooks/kling?a=1")
    token = handle.extra["webhook_token"]
    assert len(token) >= 24
    assert kl.fake.last("submit").json()["callback_url"] == f"https://bot.example/hooks/kling?a=1&token={token}"
    other = await provider.submit(request, job_id="job-hook-2", webhook_url="https://bot.example/hooks/kling")
    assert other.extra["webhook_token"] != token


async def test_callback_tokens(kl: Harness) -> None:
    provider = kling(kl)
    handle = await provider.submit(await kl.request(), job_id="job-hook-3", webhook_url="https://bot.example/h")
    token = handle.extra["webhook_token"]
    body = json.dumps(kl.fake.callback_payload(handle.task_id, "succeed")).encode()

    event = provider.parse_webhook({}, body, token=token)
    assert event.task_id == handle.task_id and event.state is None  # the engine polls to learn the state

    with pytest.raises(WebhookRejected, match="token"):
        provider.parse_webhook({}, body, token="forged-" + token)
    with pytest.raises(WebhookRejected, match="token"):
        provider.parse_webhook({}, body, token=None)
    other = await provider.submit(await kl.request(), job_id="job-hook-4", webhook_url="https://bot.example/h")
    with pytest.raises(WebhookRejected, match="token"):  # another job's token does not open this one
        provider.parse_webhook({}, body, token=other.extra["webhook_token"])
    with pytest.raises(WebhookRejected, match="not JSON"):
        provider.parse_webhook({}, b"{oops", token=token)
    with pytest.raises(WebhookRejected, match="no task id"):
        provider.parse_webhook({}, b'{"task_status": "succeed"}', token=token)


async def test_callback_token_survives_a_restart(kl: Harness) -> None:
    first = kling(kl)
    handle = await first.submit(await kl.request(), job_id="job-hook-5", webhook_url="https://bot.example/h")
    body = json.dumps(kl.fake.callback_payload(handle.task_id, "processing")).encode()
    restarted = KlingProvider(kl.app.settings, kl.app.http)  # a new process knows no tokens …
    with pytest.raises(WebhookRejected):
        restarted.parse_webhook({}, body, token=handle.extra["webhook_token"])
    # … unless it is handed the job's stored handle …
    assert restarted.parse_webhook({}, body, token=handle.extra["webhook_token"], handle=handle).state is None
    with pytest.raises(WebhookRejected, match="token"):
        restarted.parse_webhook({}, body, token="wrong", handle=handle)
    other = await first.submit(await kl.request(), job_id="job-hook-6", webhook_url="https://bot.example/h")
    with pytest.raises(WebhookRejected, match="another task"):  # a valid token for a different task's handle
        restarted.parse_webhook({}, body, token=other.extra["webhook_token"], handle=other)
    await restarted.poll(handle)  # … or until it follows the job again from its stored handle
    assert restarted.parse_webhook({}, body, token=handle.extra["webhook_token"]).state is None


def test_with_token_keeps_the_existing_query() -> None:
    assert with_token("https://x.example/k?job=1", "t0k") == "https://x.example/k?job=1&token=t0k"
    assert with_token("https://x.example/k", "t0k") == "https://x.example/k?token=t0k"


# --- price -------------------------------------------------------------------------------------------


async def test_price_is_marked_as_an_estimate(kl: Harness) -> None:
    for tier in ("standard", "pro"):
        quote = kl.provider.quote(await kl.request(tier=tier))
        assert quote.estimate and quote.micros > 0  # Kling bills prepaid units, not dollars


def _webp_bytes(tmp_path: Path) -> bytes:
    from PIL import Image

    path = tmp_path / "pic.webp"
    Image.new("RGB", (640, 480), (200, 30, 30)).save(path, "WEBP")
    return path.read_bytes()
