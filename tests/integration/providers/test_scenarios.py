"""Every hosted adapter, against its loopback API, through the real engine, in every failure scenario.

Each scenario must end in the right normalised outcome, with the provider's own message kept, after
exactly one submit, and without an unhandled exception.
"""

from __future__ import annotations

from bot.engine.states import JobState
from bot.media.inspect import probe_video
from bot.providers.base import ErrorCode
from tests.fakes.providers.harness import Hang, Malformed, Reset, Slow, Status, Step
from tests.integration.providers.conftest import Harness


def assert_clean_contract(h: Harness) -> None:
    assert h.fake.problems == [], h.fake.problems
    assert h.fake.count("submit") == 1


async def test_success_after_several_polls(harness: Harness) -> None:
    job, delivery = await harness.run()
    assert job.state is JobState.DONE, (job.error_code, job.error_message)
    assert harness.fake.count("poll") >= 3
    assert len(delivery.delivered) == 1
    assert probe_video(delivery.delivered[0][1]).codec == "h264"
    assert_clean_contract(harness)


async def test_429_with_retry_after_on_a_poll_is_waited_out(harness: Harness) -> None:
    harness.fake.fail_next("poll", Status(429, {"message": "slow down"}, {"Retry-After": "1"}))
    job, _ = await harness.run()
    assert job.state is JobState.DONE
    polls = [r for r in harness.fake.requests if r.kind == "poll"]
    assert len(polls) >= 2
    assert_clean_contract(harness)


async def test_5xx_twice_then_success(harness: Harness) -> None:
    harness.fake.fail_next("poll", Status(500), Status(502))
    job, _ = await harness.run()
    assert job.state is JobState.DONE
    assert_clean_contract(harness)


async def test_connection_reset_mid_poll(harness: Harness) -> None:
    harness.fake.fail_next("poll", Reset())
    job, _ = await harness.run()
    assert job.state is JobState.DONE
    assert_clean_contract(harness)


async def test_reply_slower_than_the_read_timeout(harness: Harness) -> None:
    harness.fake.fail_next("poll", Slow(1.5))
    job, _ = await harness.run()
    assert job.state is JobState.DONE
    assert_clean_contract(harness)


async def test_malformed_json_on_a_poll(harness: Harness) -> None:
    harness.fake.fail_next("poll", Malformed())
    job, _ = await harness.run()
    assert job.state is JobState.DONE
    assert_clean_contract(harness)


async def test_failed_task_keeps_the_providers_message(harness: Harness) -> None:
    harness.fake.script = [Step("running", 0.2), Step("failed", message="upstream model crashed on frame 12")]
    job, delivery = await harness.run()
    assert job.state is JobState.FAILED
    assert job.error_code not in (None, ErrorCode.CONTENT_POLICY.value)
    assert "upstream model crashed on frame 12" in (job.error_message or "")
    assert delivery.failures and not delivery.delivered
    assert_clean_contract(harness)


async def test_content_policy_failure(harness: Harness) -> None:
    harness.fake.script = [Step("running", 0.1), Step("content_policy", message="risk control: unsafe content")]
    job, _ = await harness.run()
    assert job.state is JobState.FAILED
    assert job.error_code == ErrorCode.CONTENT_POLICY.value
    assert "unsafe content" in (job.error_message or "")
    assert_clean_contract(harness)


async def test_result_url_answering_404(harness: Harness) -> None:
    harness.fake.output_mode = "404"
    job, delivery = await harness.run()
    assert job.state is JobState.FAILED
    assert job.error_code == ErrorCode.OUTPUT_INVALID.value and "404" in (job.error_message or "")
    assert not delivery.delivered
    assert_clean_contract(harness)


async def test_output_over_the_size_cap(harness: Harness) -> None:
    harness.fake.output_bytes = harness.fake.output_bytes * 4  # > REELBOT_MAX_OUTPUT_BYTES below
    harness.app.settings.max_output_bytes = 200_000
    job, _ = await harness.run()
    assert job.state is JobState.FAILED
    assert job.error_code == ErrorCode.OUTPUT_INVALID.value and "limit" in (job.error_message or "")
    assert_clean_contract(harness)


async def test_submit_whose_reply_never_arrives(harness: Harness) -> None:
    harness.fake.fail_next("submit", Hang(5))
    job, delivery = await harness.run()
    assert harness.fake.count("submit") == 1  # never resent
    if harness.provider.capabilities.reconcile:
        # the provider can find the task by our idempotency key: the job carries on to the clip
        assert job.state is JobState.DONE, (job.error_code, job.error_message)
    else:
        assert job.state is JobState.UNKNOWN
        assert job.error_code == ErrorCode.SUBMIT_AMBIGUOUS.value
        assert delivery.failures
    assert harness.fake.problems == []
