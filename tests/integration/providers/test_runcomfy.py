"""RunComfy specifics: the exact request, public input URLs, the status → result flow, refusals, error
bodies, cancel while queued, no webhooks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine.states import JobState
from bot.providers.base import ErrorCode, ProviderError, TaskStatus, WebhookRejected
from bot.request import Element, Shot
from tests.fakes.providers.harness import Reset, Status, Step
from tests.fakes.providers.runcomfy import PUBLIC_MEDIA
from tests.integration.providers.conftest import FIXTURES, Harness, open_harness


@pytest.fixture
async def rc(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    async with open_harness("runcomfy", tmp_path, monkeypatch) as h:
        yield h


def published(ref) -> str:
    return f"{PUBLIC_MEDIA}/{Path(ref.path).name}"


async def test_exact_submit_request_and_the_status_then_result_flow(rc: Harness) -> None:
    images = await rc.images("astronaut.png", "coffee.png", "rocket.jpg")
    request = await rc.request(prompt="@Image1 holds image 2 under <<<image_3>>>", images=images, tier="pro",
                               duration=7, sound=True, aspect_ratio="9:16")  # fmt: skip
    job, _ = await rc.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    submit = rc.fake.last("submit")
    assert (submit.method, submit.path) == ("POST", "/v1/models/kling/kling-video-o3/pro/reference-to-video")
    assert submit.headers["Authorization"] == "Bearer test-key"
    body = submit.json()
    assert body["prompt"] == "Figure 1 holds Figure 2 under Figure 3"
    assert body["duration"] == 7 and isinstance(body["duration"], int)
    assert body["sound"] is True and body["aspect_ratio"] == "9:16" and body["shot_type"] == "intelligent"
    assert body["images"] == [published(ref) for ref in images]  # reelbot's published copies, by content hash
    assert "video" not in body and "keep_original_sound" not in body
    request_id = next(iter(rc.fake.tasks))
    polls = [r.path for r in rc.fake.requests if r.kind == "poll"]
    assert len(polls) >= 3 and set(polls) == {f"/v1/requests/{request_id}/status"}
    assert rc.fake.count("result") == 1 and rc.fake.last("result").path == f"/v1/requests/{request_id}/result"
    assert job.output_url == f"{rc.fake.base_url}/files/{request_id}.mp4"
    assert rc.fake.problems == []


async def test_standard_path_video_reference_and_multi_prompt(rc: Harness) -> None:
    video = await rc.app.media.ingest(FIXTURES / "motion_ref.mp4")
    images = await rc.images("astronaut.png")
    shots = (Shot(prompt="Figure 1 walks in", duration=2), Shot(prompt="close-up", duration=3))
    request = await rc.request(prompt=None, multi_prompt=shots, images=images, video=video, keep_original_sound=False)
    job, _ = await rc.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    submit = rc.fake.last("submit")
    assert submit.path == "/v1/models/kling/kling-video-o3/standard/reference-to-video"
    body = submit.json()
    assert body["video"] == published(video) and body["keep_original_sound"] is False and "sound" not in body
    assert body["multi_prompt"] == [
        {"index": 1, "prompt": "Figure 1 walks in", "duration": 2},
        {"index": 2, "prompt": "close-up", "duration": 3},
    ]
    assert body["prompt"] == "Figure 1 walks in close-up"  # RunComfy requires a prompt
    assert rc.fake.problems == []


async def test_a_bare_video_result_is_read_too(rc: Harness) -> None:
    rc.fake.result_shape = "flat"  # {"video": url} rather than {"output": {"video": url}}
    job, _ = await rc.run()
    assert job.state is JobState.DONE, (job.error_code, job.error_message)


async def test_without_a_published_media_folder_only_https_links_are_sent(tmp_path, monkeypatch) -> None:
    async with open_harness("runcomfy", tmp_path, monkeypatch, REELBOT_PUBLIC_MEDIA_URL="") as h:
        data = (FIXTURES / "astronaut.png").read_bytes()
        linked = h.app.media.ingest_bytes("a.png", data, source_url="https://cdn.example.com/a.png?ex=1&hm=sig")
        job, _ = await h.run(await h.request(prompt="Figure 1 waves", images=[linked]))
        assert job.state is JobState.DONE, (job.error_code, job.error_message)
        assert h.fake.last("submit").json()["images"] == ["https://cdn.example.com/a.png?ex=1&hm=sig"]

        local = await h.images("coffee.png")
        plain = h.app.media.ingest_bytes("r.jpg", (FIXTURES / "rocket.jpg").read_bytes(), source_url="http://x.test/r")
        request = await h.request(prompt="Figure 1 and Figure 2", images=[local[0], linked, plain])
        [refusal] = [str(v) for v in h.provider.check(request)]
        assert refusal.startswith("images: RunComfy needs publicly reachable https:// input URLs and has no upload")
        assert "but images 1, 3 have none: set REELBOT_PUBLIC_MEDIA_URL" in refusal
        assert "cdn.example.com" not in refusal  # links (signed ones too) stay out of messages
        job, _ = await h.run(request)
        assert job.state is JobState.FAILED and job.error_code == "INVALID_INPUT"
        assert h.fake.count("submit") == 1  # only the first job's


async def test_a_media_url_that_is_not_https_is_refused(tmp_path, monkeypatch) -> None:
    async with open_harness("runcomfy", tmp_path, monkeypatch, REELBOT_PUBLIC_MEDIA_URL="http://media.test/m") as h:
        video = await h.app.media.ingest(FIXTURES / "motion_ref.mp4")
        request = await h.request(prompt="a walk", images=[], video=video)
        assert [str(v) for v in h.provider.check(request)] == [
            "video: RunComfy needs publicly reachable https:// input URLs and has no upload API, but the reference"
            " video has none: REELBOT_PUBLIC_MEDIA_URL must be an https:// address"
        ]


async def test_parameters_runcomfy_cannot_take_are_refused_before_sending(rc: Harness) -> None:
    front, side = await rc.images("astronaut.png", "coffee.png")
    four_k = await rc.request(tier="4k", images=[front, side])
    assert [str(v) for v in rc.provider.check(four_k)] == [
        "tier: RunComfy does not offer the 4k tier (choose pro, standard)"
    ]
    request = await rc.request(images=[front, side], start_frame=front, end_frame=side,
                               elements=(Element(frontal=front, references=(side,)),))  # fmt: skip
    refused = [str(v) for v in rc.provider.check(request)]
    assert "start_frame: RunComfy does not accept start or end frames" in refused
    assert "elements: RunComfy does not accept elements" in refused
    job, _ = await rc.run(request)
    assert job.state is JobState.FAILED and job.error_code == "INVALID_INPUT"
    assert "RunComfy does not accept elements" in (job.error_message or "")
    assert rc.fake.requests == []


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        # RunComfy's codes decide over the HTTP status: an empty balance arrives as a 400
        (Status(400, {"error_code": 400002, "message": "InsufficientResources: no remaining balance"}),
         ErrorCode.INSUFFICIENT_FUNDS, "no remaining balance"),
        (Status(403, {"error_code": 403001, "message": "PermissionDeniedError"}), ErrorCode.AUTH, "PermissionDenied"),
        (Status(400, {"error_code": 400001, "message": "InvalidResourceIdentifier"}), ErrorCode.INVALID_INPUT,
         "InvalidResourceIdentifier"),
        (Status(429, {"message": "too many requests"}, {"Retry-After": "2"}), ErrorCode.RATE_LIMITED, "too many"),
        (Status(200, {"status_url": "https://model-api.runcomfy.net/v1/requests//status"}),
         ErrorCode.SUBMIT_AMBIGUOUS, "no request_id"),
    ],
)  # fmt: skip
async def test_error_bodies_are_read(rc: Harness, reply: Status, code: ErrorCode, words: str) -> None:
    request = await rc.request()
    rc.fake.fail_next("submit", reply)
    with pytest.raises(ProviderError) as caught:
        await rc.provider.submit(request, job_id="job-1")
    assert caught.value.code is code and words in caught.value.message
    assert rc.fake.count("submit") == 1
    if code is ErrorCode.RATE_LIMITED:
        assert caught.value.retry_after == 2.0


async def test_a_rejected_token_is_an_auth_failure_though_it_arrives_as_400(rc: Harness) -> None:
    rc.fake.api_key = "another-key"
    job, _ = await rc.run()
    assert job.state is JobState.FAILED and job.error_code == "AUTH"
    assert "UserAccountError" in (job.error_message or "")


async def test_result_endpoint_faults_are_retried_and_its_error_bodies_kept(rc: Harness) -> None:
    rc.fake.fail_next("result", Status(500), Reset())
    job, _ = await rc.run()
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    assert rc.fake.count("result") == 3

    rc.fake.fail_next("result", Status(422, {"error_code": 422001, "message": "the reference video could not be read"}))
    job, _ = await rc.run()
    assert job.state is JobState.FAILED and "the reference video could not be read" in (job.error_message or "")
    assert rc.fake.problems == []


async def test_queue_position_is_reported(rc: Harness) -> None:
    rc.fake.script = [Step("queued", queue_position=3), Step("queued", queue_position=1), Step("running", 0.4)]
    handle = await rc.provider.submit(await rc.request(), job_id="job-1")
    states = [await rc.provider.poll(handle) for _ in range(3)]
    assert [(s.status, s.queue_position) for s in states] == [
        (TaskStatus.QUEUED, 3), (TaskStatus.QUEUED, 1), (TaskStatus.RUNNING, None),
    ]  # fmt: skip
    assert rc.fake.count("result") == 0  # the result is read only once the request has completed


async def test_cancel_works_only_while_queued(rc: Harness) -> None:
    rc.fake.script = [Step("queued", queue_position=1), Step("running", 0.2)]
    queued = await rc.provider.submit(await rc.request(), job_id="job-1")
    assert await rc.provider.cancel(queued) is True
    assert rc.fake.last("cancel").path == f"/v1/requests/{queued.task_id}/cancel"
    assert (await rc.provider.poll(queued)).status is TaskStatus.CANCELED

    running = await rc.provider.submit(await rc.request(), job_id="job-2")
    await rc.provider.poll(running)
    await rc.provider.poll(running)
    assert await rc.provider.cancel(running) is False  # RunComfy refuses once the request has started
    assert rc.fake.count("cancel") == 2


async def test_urls_on_another_host_are_not_followed(rc: Harness) -> None:
    reply = {"request_id": "r1", "status_url": "https://elsewhere.example/v1/requests/r1/status",
             "result_url": f"{rc.fake.base_url}/v1/requests/r1/result"}  # fmt: skip
    rc.fake.fail_next("submit", Status(200, reply))
    handle = await rc.provider.submit(await rc.request(), job_id="job-1")
    assert handle.poll_url == "/v1/requests/r1/status"  # our key is never sent to another host
    assert handle.result_url == f"{rc.fake.base_url}/v1/requests/r1/result"


async def test_no_webhooks(rc: Harness) -> None:
    assert rc.provider.capabilities.webhook == "none"
    with pytest.raises(WebhookRejected):
        rc.provider.parse_webhook({}, b'{"request_id": "r1", "status": "completed"}', token="anything")
