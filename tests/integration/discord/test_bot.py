"""What people on a server see, end to end: the real discord.py client and reelbot's cogs against a
loopback Discord, with the local renderer or a provider's loopback API behind."""

from __future__ import annotations

import asyncio
from pathlib import Path

from bot.engine.states import JobState
from bot.media.inspect import probe_video
from bot.money import usd
from tests.fakes.discord import FileSpec, Permission
from tests.fakes.providers.harness import Step
from tests.fakes.providers.wavespeed import FakeWaveSpeed
from tests.integration.discord.conftest import World, image


def probe_bytes(tmp: Path, data: bytes):
    path = tmp / "posted.mp4"
    path.write_bytes(data)
    return probe_video(path)


async def test_synced_command_has_the_documented_options(world: World) -> None:
    async with world.bot():
        [generate] = [c for c in world.fake.commands(world.guild) if c["name"] == "generate"]
    names = [o["name"] for o in generate["options"]]
    assert names == [
        "prompt",
        *(f"image{i}" for i in range(1, 8)),
        "video",
        "aspect_ratio",
        "duration",
        "sound",
        "keep_original_sound",
        "tier",
        "shot_type",
        "multi_prompt",
    ]
    options = {o["name"]: o for o in generate["options"]}
    assert options["prompt"]["required"] and options["prompt"]["max_length"] == 2500
    assert [c["value"] for c in options["aspect_ratio"]["choices"]] == ["16:9", "9:16", "1:1"]
    assert (options["duration"]["min_value"], options["duration"]["max_value"]) == (3, 15)
    assert options["image1"]["type"] == 11 and options["video"]["type"] == 11
    assert "|" in options["multi_prompt"]["description"]
    assert {c["name"] for c in world.fake.commands(world.guild)} >= {"generate", "quota", "jobs", "job", "cancel"}


async def test_generate_with_three_images_posts_the_clip_in_a_thread(world: World) -> None:
    fake = world.fake
    async with world.bot() as (_, app, _run):
        ix = await fake.slash(
            world.alice,
            world.channel,
            "generate",
            {"prompt": "Figure 1 sips from Figure 2 as Figure 3 lifts off", "duration": 3, "aspect_ratio": "9:16"},
            attachments={
                "image1": image("astronaut.png"),
                "image2": image("coffee.png"),
                "image3": image("rocket.jpg"),
            },
        )
        response = await ix.response()
        assert response.type == 5 and not response.ephemeral and ix.response_time < 3
        thread = (await fake.wait_for(lambda: fake.threads, timeout=10, what="a thread"))[0]
        posts = await fake.wait_for(
            lambda: [m for m in fake.messages(thread) if m.attachments], timeout=60, what="the clip in the thread"
        )
        await fake.wait_for(lambda: ix.original.embeds and "Done" in ix.original.embeds[0]["title"], timeout=10)
        [job] = await app.jobs.list_recent()
        assert await app.ledger.verify() == []
    assert thread.id == ix.original.id  # the thread hangs off the command's response message
    [post] = posts
    [clip] = post.attachments
    assert clip.filename == f"reelbot-{job.id}.mp4"
    info = probe_bytes(world.tmp, clip.data)
    assert abs(info.duration_s - 3) <= 0.1 and (info.width, info.height) == (720, 1280)
    assert "not AI-generated" in post.content and "Figure 1 sips" in post.content
    assert {f"rb:reroll:{job.id}", f"rb:edit:{job.id}", f"rb:delete:{job.id}", f"rb:info:{job.id}"} <= set(
        post.custom_ids()
    )
    assert len(ix.original.edits) >= 2  # progress edits on the status message
    assert job.state is JobState.DONE
    fake.assert_clean()


async def test_wrong_file_type_is_refused_at_once_and_nothing_reserved(world: World) -> None:
    async with world.bot() as (_, app, _run):
        ix = await world.fake.slash(
            world.alice,
            world.channel,
            "generate",
            {"prompt": "Figure 1"},
            attachments={"image1": ("notes.pdf", b"%PDF-1.4 ...", "application/pdf")},
        )
        response = await ix.response()
        assert response.type == 4 and response.ephemeral
        assert "image1 (notes.pdf) is application/pdf, not an image" in response.content
        assert await app.jobs.list_recent() == []


async def test_a_bad_file_found_after_download_is_refused_privately(world: World) -> None:
    async with world.bot() as (_, app, _run):
        ix = await world.fake.slash(
            world.alice,
            world.channel,
            "generate",
            {"prompt": "Figure 1"},
            attachments={"image1": ("cat.png", b"this is not a picture", "image/png")},
        )
        await ix.response()
        told = await world.fake.wait_for(
            lambda: [m for m in world.fake.messages(world.channel) if m.ephemeral and "not an image" in m.content],
            timeout=10,
        )
        assert "cat.png" in told[0].content
        assert await app.jobs.list_recent() == []
        public = [m for m in world.fake.messages(world.channel) if not m.ephemeral and not m.deleted]
        assert public == []  # the public "thinking…" reply was taken back


async def test_over_limit_requests_are_refused_at_once(world: World) -> None:
    async with world.bot() as (_, app, _run):
        video = ("ref.mp4", (Path(__file__).parents[2] / "fixtures" / "motion_ref.mp4").read_bytes(), "video/mp4")
        too_many = {f"image{i}": image("coffee.png") for i in range(1, 6)} | {"video": video}
        ix = await world.fake.slash(world.alice, world.channel, "generate", {"prompt": "x"}, attachments=too_many)
        response = await ix.response()
        assert response.ephemeral and "at most 4 with a reference video" in response.content
        big = FileSpec("huge.png", b"\x89PNG", "image/png", size=11 * 1024 * 1024)
        ix = await world.fake.slash(
            world.alice,
            world.channel,
            "generate",
            {"prompt": "x"},
            attachments={"image1": big},
            attachment_size_limit=50 * 1024 * 1024,
        )
        response = await ix.response()
        assert response.ephemeral and "images may be 10 MB" in response.content
        ix = await world.fake.slash(
            world.alice, world.channel, "generate", {"prompt": "x", "duration": 5, "multi_prompt": "2: wide | 2: close"}
        )
        response = await ix.response()
        assert response.ephemeral and "shot durations add up to 4 s but duration is 5 s" in response.content
        assert await app.jobs.list_recent() == []


async def test_exhausted_quota_is_refused_with_the_numbers(world: World, wavespeed: FakeWaveSpeed) -> None:
    # The quota check needs the ledger's lock, so it comes right after the deferral (fast answers under load);
    # the refusal is still private and names the numbers, and the public "thinking…" reply is taken back.
    fake = world.fake
    async with world.bot() as (_, app, _run):
        ix = await fake.slash(
            world.alice, world.channel, "generate", {"prompt": "Figure 1", "duration": 3},
            attachments={"image1": image("coffee.png")},
        )  # fmt: skip
        assert (await ix.response()).type == 5
        told = await fake.wait_for(
            lambda: [m for m in fake.messages(world.channel) if m.ephemeral and "Not enough quota" in m.content],
            timeout=10,
        )  # fmt: skip
        assert "this clip costs $0.252 and you have $0.00 available" in told[0].content
        assert "Nothing was charged" in told[0].content
        assert [m for m in fake.messages(world.channel) if not m.ephemeral and not m.deleted] == []
        assert await app.jobs.list_recent() == [] and wavespeed.count("submit") == 0


async def test_missing_thread_permission_is_named(world: World) -> None:
    world.channel.deny_bot(Permission.CREATE_PUBLIC_THREADS)
    async with world.bot():
        ix = await world.fake.slash(
            world.alice, world.channel, "generate", {"prompt": "Figure 1"}, attachments={"image1": image("coffee.png")}
        )
        response = await ix.response()
        assert response.ephemeral and "Create Public Threads" in response.content


async def test_expired_interaction_token_still_gets_the_clip_through_the_channel(world: World) -> None:
    fake = world.fake
    async with world.bot() as (_, app, _run):
        ix = await fake.slash(
            world.alice,
            world.channel,
            "generate",
            {"prompt": "Figure 1 waves", "duration": 3},
            attachments={"image1": image("coffee.png")},
        )
        await ix.response()
        fake.expire_interaction(ix)  # from now on the token answers 401 / 50027
        thread = (await fake.wait_for(lambda: fake.threads, timeout=10))[0]
        await fake.wait_for(lambda: [m for m in fake.messages(thread) if m.attachments], timeout=60, what="the clip")
        [job] = await app.jobs.list_recent()
        assert job.delivery["channel_id"] == str(thread.id)
    token_calls = [r for r in fake.requests if "/webhooks/" in r.path and r.status == 401]
    assert len(token_calls) <= 1  # one rejected try, then only the bot's own token


async def test_a_429_with_via_on_the_upload_is_waited_out(world: World) -> None:
    fake = world.fake
    rule = fake.rate_limit_next("POST", r"^/api/v10/channels/\d+/messages$|^/channels/\d+/messages$", retry_after=0.3)
    async with world.bot():
        await fake.slash(
            world.alice,
            world.channel,
            "generate",
            {"prompt": "Figure 1", "duration": 3},
            attachments={"image1": image("coffee.png")},
        )
        thread = (await fake.wait_for(lambda: fake.threads, timeout=10))[0]
        await fake.wait_for(lambda: [m for m in fake.messages(thread) if m.attachments], timeout=60)
    assert rule.served == 1
    assert len([m for m in fake.messages(thread) if m.attachments]) == 1


async def test_cancel_is_owner_only_and_buttons_work_after_a_restart(world: World, wavespeed: FakeWaveSpeed) -> None:
    wavespeed.script = [Step("running", 0.2)] * 10_000
    fake = world.fake
    async with world.bot() as (_, app, _run):
        account = await app.ledger.account_for_user(str(world.guild.id), str(world.alice.id))
        await app.ledger.grant(account, usd("1.00"), actor="test", reason="funds")
        ix = await fake.slash(
            world.alice,
            world.channel,
            "generate",
            {"prompt": "Figure 1", "duration": 3},
            attachments={"image1": image("coffee.png")},
        )
        await ix.response()
        await fake.wait_for(lambda: ix.original and ix.original.custom_ids(), timeout=10, what="a Cancel button")
        [job] = await app.jobs.list_recent()
        async with asyncio.timeout(10):
            while (await app.jobs.require(job.id)).state is not JobState.RUNNING:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
    # a new bot process: the button on the old message still works, and still refuses the wrong member
    async with world.bot() as (_, app, _run):
        refused = await fake.click(world.bob, ix.original, f"rb:cancel:{job.id}")
        answer = await refused.response()
        assert answer.ephemeral and "only the member who started this job" in answer.content
        accepted = await fake.click(world.alice, ix.original, f"rb:cancel:{job.id}")
        answer = await accepted.response()
        assert answer.ephemeral and "Cancelled" in answer.content
        final = await app.jobs.require(job.id)
        assert final.state is JobState.CANCELLED
        assert await app.ledger.verify() == []


async def test_confirm_before_an_expensive_job(world: World, wavespeed: FakeWaveSpeed) -> None:
    wavespeed.script = [Step("succeeded")]
    fake = world.fake
    async with world.bot() as (_, app, _run):
        account = await app.ledger.account_for_user(str(world.guild.id), str(world.alice.id))
        await app.ledger.grant(account, usd("5.00"), actor="test", reason="funds")
        settings = (await app.guilds.get(str(world.guild.id))).changed(confirm_threshold_micros=usd("0.10"))
        await app.guilds.save(str(world.guild.id), settings, actor="test")
        ix = await fake.slash(
            world.alice,
            world.channel,
            "generate",
            {"prompt": "Figure 1", "duration": 3},
            attachments={"image1": image("coffee.png")},
        )
        prompt = await ix.response()
        assert prompt.ephemeral and "$0.252" in prompt.content
        assert await app.jobs.list_recent() == []  # nothing reserved before Confirm
        confirm = await fake.click(world.alice, ix.original, "rb:confirm:yes")
        await confirm.response()
        thread = (await fake.wait_for(lambda: fake.threads, timeout=10))[0]
        await fake.wait_for(lambda: [m for m in fake.messages(thread) if m.attachments], timeout=30)
        [job] = await app.jobs.list_recent()
        async with asyncio.timeout(10):
            while (await app.jobs.require(job.id)).state is not JobState.DONE:  # noqa: ASYNC110
                await asyncio.sleep(0.02)
        assert (await app.jobs.require(job.id)).charged_micros == usd("0.252")


async def test_quota_and_jobs_commands(world: World) -> None:
    async with world.bot():
        ix = await world.fake.slash(world.alice, world.channel, "quota show", {})
        response = await ix.response()
        assert response.ephemeral and response.embeds[0]["title"] == "Your quota"
        ix = await world.fake.slash(world.alice, world.channel, "jobs", {})
        assert "no jobs yet" in (await ix.response()).content


async def test_in_a_dm_the_clip_comes_to_the_dm(world: World) -> None:
    fake = world.fake
    dm = fake.dm_channel(world.alice)
    async with world.bot() as (bot, _, _run):
        await bot.tree.sync()  # global commands, as `reelbot sync` publishes them: DMs only see those
        ix = await fake.slash(
            world.alice,
            dm,
            "generate",
            {"prompt": "Figure 1 waves", "duration": 3},
            attachments={"image1": image("coffee.png")},
        )
        assert (await ix.response()).type == 5
        posts = await fake.wait_for(lambda: [m for m in fake.messages(dm) if m.attachments], timeout=60)
    assert len(posts) == 1 and fake.threads == []
    fake.assert_clean()
