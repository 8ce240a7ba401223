"""Atlas Cloud specifics: the exact request, reference rewriting, uploads, refusals, error bodies, quirks."""

from __future__ import annotations

from pathlib import Path

import pytest

from bot.engine.states import JobState
from bot.providers.base import ErrorCode, ProviderError, TaskStatus, WebhookRejected
from bot.request import Element, Shot
from tests.fakes.providers.harness import Status, Step
from tests.integration.providers.conftest import FIXTURES, Harness, open_harness


@pytest.fixture
async def atlas(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    async with open_harness("atlascloud", tmp_path, monkeypatch) as h:
        yield h


async def test_exact_submit_request(atlas: Harness) -> None:
    images = await atlas.images("astronaut.png", "coffee.png", "rocket.jpg")
    request = await atlas.request(prompt="@Image1 holds image 2 under <<<image_3>>>", images=images, tier="pro",
                                  duration=7, sound=True, aspect_ratio="9:16")  # fmt: skip
    job, _ = await atlas.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    submit = atlas.fake.last("submit")
    assert (submit.method, submit.path) == ("POST", "/api/v1/model/generateVideo")
    assert submit.headers["Authorization"] == "Bearer test-key"
    body = submit.json()
    assert body["model"] == "kwaivgi/kling-video-o3-pro/reference-to-video"
    assert body["prompt"] == "Figure 1 holds Figure 2 under Figure 3"
    assert body["duration"] == 7 and isinstance(body["duration"], int)
    assert body["sound"] is True and body["aspect_ratio"] == "9:16" and body["shot_type"] == "intelligent"
    assert [url.rsplit("/", 1)[0] for url in body["images"]] == [atlas.fake.base_url + "/media"] * 3
    assert atlas.fake.count("upload") == 3  # local files go through Atlas's uploadMedia
    upload = atlas.fake.last("upload")
    assert upload.path == "/api/v1/model/uploadMedia" and upload.headers["Authorization"] == "Bearer test-key"
    assert not {"video", "keep_original_sound", "elements", "element_list", "multi_shot"} & set(body)
    task_id = next(iter(atlas.fake.tasks))
    assert atlas.fake.last("poll").path == f"/api/v1/model/prediction/{task_id}"
    assert atlas.fake.problems == []


async def test_video_multi_prompt_and_inline_elements(atlas: Harness) -> None:
    video = await atlas.app.media.ingest(FIXTURES / "motion_ref.mp4")
    image, front, side = await atlas.images("astronaut.png", "chelsea.png", "coffee.png")
    shots = (Shot(prompt="Figure 1 walks in", duration=2), Shot(prompt="close-up of element 1", duration=3))
    request = await atlas.request(prompt=None, multi_prompt=shots, images=[image], video=video,
                                  elements=(Element(frontal=front, references=(side,)),),
                                  keep_original_sound=False)  # fmt: skip
    job, _ = await atlas.run(request)
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    body = atlas.fake.last("submit").json()
    assert body["model"] == "kwaivgi/kling-video-o3-std/reference-to-video"
    assert body["video"].startswith(atlas.fake.base_url) and body["keep_original_sound"] is False
    assert "sound" not in body
    assert body["multi_shot"] is True
    assert body["multi_prompt"] == [
        {"index": 1, "prompt": "Figure 1 walks in", "duration": 2},
        {"index": 2, "prompt": "close-up of <<<element_1>>>", "duration": 3},
    ]
    assert body["prompt"] == "Figure 1 walks in close-up of <<<element_1>>>"  # Atlas requires a prompt
    [element] = body["elements"]
    assert element["element_name"] == "element_1" and element["reference_type"] == "image_refer"
    assert element["frontal_image"].startswith(atlas.fake.base_url + "/media/")
    assert len(element["refer_images"]) == 1 and element["refer_images"][0] != element["frontal_image"]
    assert atlas.fake.uploads[element["frontal_image"].rsplit("/", 1)[1]] == Path(front.path).read_bytes()
    assert atlas.fake.problems == []


async def test_uploads_are_reused_and_either_upload_reply_shape_is_read(atlas: Harness) -> None:
    atlas.fake.upload_shape = "data"  # `data.download_url`, as Atlas's own tools read it
    images = await atlas.images("astronaut.png")
    first, _ = await atlas.run(await atlas.request(prompt="Figure 1", images=images))
    second, _ = await atlas.run(await atlas.request(prompt="Figure 1 again", images=images))
    assert first.state is second.state is JobState.DONE
    assert atlas.fake.count("upload") == 1 and atlas.fake.count("submit") == 2


async def test_parameters_atlas_cannot_take_are_refused_before_sending(atlas: Harness) -> None:
    images = await atlas.images("astronaut.png", "coffee.png")
    four_k = await atlas.request(tier="4k", images=images)
    assert [str(v) for v in atlas.provider.check(four_k)] == [
        "tier: Atlas Cloud does not offer the 4k tier (choose pro, standard)"
    ]
    request = await atlas.request(start_frame=images[0], elements=(Element(element_id="123"),))
    refused = [str(v) for v in atlas.provider.check(request)]
    assert "start_frame: Atlas Cloud does not accept start or end frames" in refused
    assert "elements: Atlas Cloud does not accept element ids, only element images" in refused
    job, _ = await atlas.run(request)
    assert job.state is JobState.FAILED and job.error_code == "INVALID_INPUT"
    assert "Atlas Cloud does not accept start or end frames" in (job.error_message or "")
    assert atlas.fake.count("submit") == 0 and atlas.fake.count("upload") == 0


async def test_more_than_six_elements_are_refused(atlas: Harness) -> None:
    front, side = await atlas.images("astronaut.png", "coffee.png")
    seven = tuple(Element(frontal=front, references=(side,)) for _ in range(7))
    request = await atlas.request(prompt="Element 1 meets Element 7", images=[], elements=seven)
    assert "elements: Atlas Cloud accepts at most 6 elements" in [str(v) for v in atlas.provider.check(request)]
    six = await atlas.request(prompt="Element 1 meets Element 6", images=[], elements=seven[:6])
    assert atlas.provider.check(six) == []


async def test_succeeded_status_word_and_nsfw_flags(atlas: Harness) -> None:
    atlas.fake.success_word = "succeeded"  # some Atlas code sees this instead of `completed`
    atlas.fake.nsfw = True
    job, _ = await atlas.run()
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    assert job.nsfw is True  # read from has_nsfw_contents, the list, not from words in the body


async def test_a_failed_prediction_flagged_nsfw_is_a_content_policy_failure(atlas: Harness) -> None:
    atlas.fake.script = [Step("running"), Step("failed", message="generation stopped")]
    atlas.fake.nsfw = True
    job, _ = await atlas.run()
    assert job.state is JobState.FAILED
    assert job.error_code == ErrorCode.CONTENT_POLICY.value and "generation stopped" in (job.error_message or "")


async def test_a_failed_prediction_answered_with_http_500_is_an_answer_not_an_outage(atlas: Harness) -> None:
    atlas.fake.failed_http_status = 500  # public Atlas code reports some failed predictions this way
    atlas.fake.script = [Step("running"), Step("failed", message="upstream model crashed on frame 12")]
    job, _ = await atlas.run()
    assert job.state is JobState.FAILED, (job.error_code, job.error_message)
    assert "upstream model crashed on frame 12" in (job.error_message or "")
    assert atlas.fake.count("poll") == 2  # not retried as if the service were down


@pytest.mark.parametrize(
    ("reply", "code", "words"),
    [
        (Status(401, {"code": 401, "message": "Unauthorized: invalid API key"}), ErrorCode.AUTH, "invalid API key"),
        # Kling's "resource pack exhausted" passes through as HTTP 429 with its own code: the body decides
        (Status(429, {"ret": 1102, "msg": "resource pack exhausted"}), ErrorCode.INSUFFICIENT_FUNDS, "exhausted"),
        (Status(400, {"code": 400, "message": "Insufficient balance"}), ErrorCode.INSUFFICIENT_FUNDS, "balance"),
        (Status(429, {"message": "rate limit exceeded"}, {"Retry-After": "3"}), ErrorCode.RATE_LIMITED, "rate limit"),
        (Status(400, {"ret": 1301, "msg": "prompt failed the safety review"}), ErrorCode.CONTENT_POLICY, "safety"),
        # a refusal inside a 2xx is a refusal, not an ambiguous submit
        (Status(200, {"ret": 1201, "msg": "multi_prompt prompt exceeds 512 characters"}), ErrorCode.INVALID_INPUT,
         "exceeds 512"),
        (Status(200, {"code": 200, "message": "success", "data": {}}), ErrorCode.SUBMIT_AMBIGUOUS, "no prediction id"),
    ],
)  # fmt: skip
async def test_error_bodies_are_read(atlas: Harness, reply: Status, code: ErrorCode, words: str) -> None:
    request = await atlas.request()
    atlas.fake.fail_next("submit", reply)
    with pytest.raises(ProviderError) as caught:
        await atlas.provider.submit(request, job_id="job-1")
    assert caught.value.code is code and words in caught.value.message
    assert atlas.fake.count("submit") == 1
    if code is ErrorCode.RATE_LIMITED:
        assert caught.value.retry_after == 3.0


async def test_older_submit_reply_shape_and_poll_path(atlas: Harness) -> None:
    request = await atlas.request()
    atlas.fake.fail_next("submit", Status(200, {"predictionId": "p/42"}))  # the older docs' reply
    handle = await atlas.provider.submit(request, job_id="job-1")
    assert handle.task_id == "p/42" and handle.poll_url == "/api/v1/model/prediction/p%2F42"


async def test_poll_reads_queued_and_running_words(atlas: Harness) -> None:
    atlas.fake.script = [Step("queued"), Step("running"), Step("succeeded")]
    handle = await atlas.provider.submit(await atlas.request(), job_id="job-1")
    states = [await atlas.provider.poll(handle) for _ in range(3)]
    assert [s.status for s in states] == [TaskStatus.QUEUED, TaskStatus.RUNNING, TaskStatus.SUCCEEDED]
    assert states[2].output_url == f"{atlas.fake.base_url}/files/{handle.task_id}.mp4"


async def test_no_webhooks(atlas: Harness) -> None:
    assert atlas.provider.capabilities.webhook == "none"
    await atlas.provider.prepare_webhooks()  # nothing to fetch: WaveSpeed's secret endpoint is not Atlas's
    with pytest.raises(WebhookRejected):
        atlas.provider.parse_webhook({}, b'{"data": {"id": "x", "status": "completed"}}')
    assert atlas.fake.requests == []
