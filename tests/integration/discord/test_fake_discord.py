"""The loopback fake Discord against the real discord.py client: login, sync, gateway, interactions, REST, faults.

The bot here is a tiny `commands.Bot` defined in this file (not reelbot's cogs): it exercises the same
discord.py paths reelbot uses, so a failure points at the fake or at discord.py behaviour, not at a cog.
"""

from __future__ import annotations

import asyncio
import io
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import aiohttp
import discord
import pytest
from discord import app_commands
from discord.ext import commands

from tests.fakes.discord import (
    Channel,
    FakeDiscord,
    FileSpec,
    Guild,
    NotInvocable,
    Permission,
    User,
    point_discord_at,
    running_bot,
)

FIXTURES = Path(__file__).parents[2] / "fixtures"
IMAGE = (FIXTURES / "chelsea.png").read_bytes()
CLIP = (FIXTURES / "motion_ref.mp4").read_bytes()


# --- the bot under test -------------------------------------------------------------------------------


@dataclass
class Seen:
    """What the bot observed, for the test to assert on."""

    inputs: dict[str, bytes] = field(default_factory=dict)
    errors: dict[str, Exception] = field(default_factory=dict)
    app_permissions: discord.Permissions | None = None
    resumed: int = 0


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"job:cancel:(?P<job>\d+)"):
    """A stateful persistent button: the job id lives in the custom_id, so any bot process can handle it."""

    def __init__(self, job: int) -> None:
        super().__init__(discord.ui.Button(label="Cancel", custom_id=f"job:cancel:{job}"))
        self.job = job

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(int(match["job"]))

    async def callback(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"cancelled job {self.job}", ephemeral=True)


class FeedbackModal(discord.ui.Modal, title="Feedback"):
    text: discord.ui.TextInput[FeedbackModal] = discord.ui.TextInput(label="What did you think?", custom_id="fb:text")

    def __init__(self) -> None:
        super().__init__(custom_id="feedback")

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await interaction.response.send_message(f"thanks: {self.text.value}", ephemeral=True)


class TestBot(commands.Bot):
    __test__ = False  # not a pytest class

    def __init__(self, guild_id: int) -> None:
        super().__init__(
            command_prefix=commands.when_mentioned, intents=discord.Intents.default(), guild_ready_timeout=0.05
        )
        self.guild_object = discord.Object(guild_id)
        self.seen = Seen()
        self.proceed = asyncio.Event()
        for command in (generate, slowjob, twice, slow, perms, panel, feedback, ping):
            self.tree.add_command(command, guild=self.guild_object)
        self.tree.add_command(status)  # global, usable in DMs

    async def setup_hook(self) -> None:
        self.add_dynamic_items(CancelButton)
        await self.tree.sync(guild=self.guild_object)
        await self.tree.sync()

    async def on_resumed(self) -> None:
        self.seen.resumed += 1


def seen(interaction: discord.Interaction) -> Seen:
    return interaction.client.seen  # type: ignore[attr-defined]


@app_commands.command(description="Make a clip from reference images")
@app_commands.describe(image1="First reference image", prompt="What happens")
async def generate(
    interaction: discord.Interaction,
    image1: discord.Attachment,
    prompt: app_commands.Range[str, 1, 2500],
    aspect_ratio: Literal["16:9", "9:16", "1:1"] = "16:9",
    duration: app_commands.Range[int, 3, 15] = 5,
    video: discord.Attachment | None = None,
) -> None:
    await interaction.response.defer()
    seen(interaction).inputs["image1"] = await image1.read()
    original = await interaction.original_response()
    assert isinstance(interaction.channel, discord.TextChannel)
    thread = await interaction.channel.create_thread(name=f"clip: {prompt[:40]}", message=original)
    await thread.send("Your clip", file=discord.File(io.BytesIO(CLIP), filename="clip.mp4"))
    await interaction.edit_original_response(content=f"Done: {thread.mention}")


@app_commands.command(description="Defer, wait for the test, then follow up")
async def slowjob(interaction: discord.Interaction) -> None:
    await interaction.response.defer()
    await interaction.client.proceed.wait()  # type: ignore[attr-defined]
    try:
        await interaction.followup.send("done")
    except discord.HTTPException as exc:
        seen(interaction).errors["followup"] = exc
        assert interaction.channel is not None
        await interaction.channel.send("done (posted with the bot token)")  # type: ignore[union-attr]


@app_commands.command(description="Answer once, then try again")
async def twice(interaction: discord.Interaction) -> None:
    await interaction.response.defer()
    try:
        await interaction.response.send_message("again")
    except discord.InteractionResponded as exc:
        seen(interaction).errors["second"] = exc


@app_commands.command(description="Answer too late")
async def slow(interaction: discord.Interaction) -> None:
    await asyncio.sleep(0.4)
    try:
        await interaction.response.defer()
    except discord.NotFound as exc:
        seen(interaction).errors["late"] = exc


@app_commands.command(description="Report permissions and try a thread")
async def perms(interaction: discord.Interaction) -> None:
    seen(interaction).app_permissions = interaction.app_permissions
    await interaction.response.send_message("checking", ephemeral=True)
    assert isinstance(interaction.channel, discord.TextChannel)
    try:
        await interaction.channel.create_thread(name="x", type=discord.ChannelType.public_thread)
    except discord.Forbidden as exc:
        seen(interaction).errors["thread"] = exc


@app_commands.command(description="Post a job panel")
async def panel(interaction: discord.Interaction) -> None:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(42))
    await interaction.response.send_message("job 42 is running", view=view)


@app_commands.command(description="Open a modal")
async def feedback(interaction: discord.Interaction) -> None:
    await interaction.response.send_modal(FeedbackModal())


@app_commands.command(description="Your jobs")
@app_commands.allowed_contexts(guilds=True, dms=True)
async def status(interaction: discord.Interaction) -> None:
    where = "dm" if isinstance(interaction.channel, discord.DMChannel) else "guild"
    await interaction.response.send_message(f"{where}: {interaction.user.name}", ephemeral=where == "guild")


@app_commands.command(description="Pong")
async def ping(interaction: discord.Interaction) -> None:
    await interaction.response.send_message("pong")


# --- fixtures ------------------------------------------------------------------------------------------


@dataclass
class World:
    fake: FakeDiscord
    guild: Guild
    channel: Channel
    alice: User


@pytest.fixture
async def fake() -> AsyncIterator[FakeDiscord]:
    async with FakeDiscord() as fake:
        yield fake


@pytest.fixture
def world(fake: FakeDiscord) -> World:
    guild = fake.add_guild("studio")
    channel = guild.add_text_channel("clips")
    alice = fake.add_user("alice")
    guild.add_member(alice)
    return World(fake, guild, channel, alice)


# --- tests ---------------------------------------------------------------------------------------------


async def test_login_syncs_guild_commands_with_documented_shapes(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = world.fake
    before = asyncio.all_tasks()
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch) as run:
        assert run.bot.user is not None and run.bot.user.id == fake.bot_user.id
        assert run.bot.get_channel(world.channel.id) is not None  # GUILD_CREATE filled the cache

        assert run.bot.latency < 1  # heartbeats are ACKed
        await fake.wait_ready()

    calls = [(r.method, r.path) for r in fake.requests]
    assert calls[:4] == [
        ("GET", "/users/@me"),
        ("GET", "/oauth2/applications/@me"),
        ("PUT", f"/applications/{fake.application_id}/guilds/{world.guild.id}/commands"),
        ("PUT", f"/applications/{fake.application_id}/commands"),
    ]
    assert all(r.headers["Authorization"] == f"Bot {fake.token}" for r in fake.requests)
    assert [c["name"] for c in fake.commands()] == ["status"]
    assert fake.commands()[0]["contexts"] == [0, 1]
    synced = {c["name"]: c for c in fake.commands(world.guild)}
    assert set(synced) == {"generate", "slowjob", "twice", "slow", "perms", "panel", "feedback", "ping"}
    generate_json = synced["generate"]
    assert generate_json["guild_id"] == str(world.guild.id)
    options = {o["name"]: o for o in generate_json["options"]}
    assert [o["name"] for o in generate_json["options"]] == ["image1", "prompt", "aspect_ratio", "duration", "video"]
    assert options["image1"] == {
        **options["image1"],
        "type": 11,
        "required": True,
        "description": "First reference image",
    }
    assert (options["prompt"]["type"], options["prompt"]["min_length"], options["prompt"]["max_length"]) == (3, 1, 2500)
    assert options["aspect_ratio"]["choices"] == [{"name": v, "value": v} for v in ("16:9", "9:16", "1:1")]
    assert (options["duration"]["type"], options["duration"]["min_value"], options["duration"]["max_value"]) == (
        4,
        3,
        15,
    )
    assert options["video"]["type"] == 11 and not options["video"].get("required")
    assert fake.gateway.identifies == 1
    fake.assert_clean()
    await asyncio.sleep(0)
    assert {t for t in asyncio.all_tasks() - before if not t.done()} == set()  # nothing leaked


async def test_wrong_token_is_a_login_failure(fake: FakeDiscord, monkeypatch: pytest.MonkeyPatch) -> None:
    point_discord_at(fake, monkeypatch)
    bot = commands.Bot(command_prefix="!", intents=discord.Intents.default())
    with pytest.raises(discord.LoginFailure):
        await bot.login("not-the-token")
    await bot.close()
    assert [r.status for r in fake.invalid_requests] == [401]


async def test_slash_with_attachment_defers_reads_and_posts_the_clip_in_a_thread(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = world.fake
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch) as run:
        ix = await fake.slash(
            world.alice,
            world.channel,
            "generate",
            {"prompt": "Figure 1 waves", "duration": 5},
            attachments={"image1": ("cat.png", IMAGE, "image/png")},
        )
        response = await ix.response()
        assert response.type == 5 and not response.ephemeral
        assert ix.response_time is not None and ix.response_time < 3
        thread = (await fake.wait_for(lambda: fake.threads, what="a thread"))[0]
        await fake.wait_for(lambda: ix.original is not None and "Done" in ix.original.content, what="final edit")

    assert run.bot.seen.inputs["image1"] == IMAGE  # type: ignore[attr-defined]
    [image_option] = [o for o in ix.payload["data"]["options"] if o["name"] == "image1"]
    assert image_option["value"] in ix.payload["data"]["resolved"]["attachments"]  # the same string
    assert thread.id == ix.original.id and thread.parent is world.channel  # thread on the response message
    assert thread.type == 11 and thread.name == "clip: Figure 1 waves"
    [post] = fake.messages(thread)
    assert post.content == "Your clip"
    [clip] = post.attachments
    assert (clip.filename, clip.content_type, clip.data) == ("clip.mp4", "video/mp4", CLIP)
    assert ix.original.content == f"Done: <#{thread.id}>" and not ix.original.loading
    fake.assert_clean()


async def test_a_429_on_the_thread_upload_is_waited_out_and_posts_once(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = world.fake
    rule = fake.rate_limit_next("POST", r"^/channels/\d+/messages$", retry_after=0.3)
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch):
        ix = await fake.slash(
            world.alice, world.channel, "generate", {"prompt": "hi"}, attachments={"image1": ("a.png", IMAGE)}
        )
        thread = (await fake.wait_for(lambda: fake.threads))[0]
        await fake.wait_for(lambda: fake.messages(thread))
        await fake.wait_for(lambda: ix.original is not None and not ix.original.loading)

    assert rule.served == 1
    [hit] = fake.rate_limit_hits
    assert hit.retried and hit.waited is not None and hit.waited >= 0.3
    uploads = [r for r in fake.requests if r.path == f"/channels/{thread.id}/messages"]
    assert [r.status for r in uploads] == [429, 200] and uploads[1].after_429
    assert uploads[0].files[0].data == CLIP  # multipart: payload_json + files[0]
    assert len(fake.messages(thread)) == 1
    fake.assert_clean()


async def test_expired_token_fails_with_50027_while_the_bot_token_still_posts(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = world.fake
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch) as run:
        ix = await fake.slash(world.alice, world.channel, "slowjob")
        await ix.response()
        fake.expire_interaction(ix)
        run.bot.proceed.set()  # type: ignore[attr-defined]
        await fake.wait_for(lambda: len(fake.messages(world.channel)) == 2, what="the bot-token fallback")

    error = run.bot.seen.errors["followup"]  # type: ignore[attr-defined]
    assert isinstance(error, discord.HTTPException) and (error.status, error.code) == (401, 50027)
    assert fake.messages(world.channel)[-1].content == "done (posted with the bot token)"
    assert [(r.status, r.path.startswith("/webhooks/")) for r in fake.invalid_requests] == [(401, True)]
    fake.assert_clean()


async def test_persistent_dynamic_button_works_after_a_restart(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = world.fake
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch):
        ix = await fake.slash(world.alice, world.channel, "panel")
        await ix.response()
        assert ix.original is not None
    panel_message = ix.original
    assert panel_message.custom_ids() == ["job:cancel:42"]

    async with running_bot(TestBot(world.guild.id), fake, monkeypatch):  # a new process: new bot, new session
        click = await fake.click(world.alice, panel_message, "job:cancel:42")
        response = await click.response()

    assert response.type == 4 and response.ephemeral and response.content == "cancelled job 42"
    assert click.payload["data"] == {"custom_id": "job:cancel:42", "component_type": 2}
    assert fake.gateway.identifies == 2 and fake.gateway.resumes == 0
    with pytest.raises(NotInvocable):
        await fake.click(world.alice, panel_message, "job:cancel:43")  # no such button on the message
    fake.assert_clean()


async def test_a_second_answer_is_a_violation(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = world.fake
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch) as run:
        ix = await fake.slash(world.alice, world.channel, "twice")
        await ix.response()
        await fake.wait_for(lambda: "second" in run.bot.seen.errors)  # type: ignore[attr-defined]
        # discord.py refuses a second answer on the same Interaction object before sending anything, so the
        # fake only sees one through another path (raw HTTP, a second process): do it raw.
        url = f"{fake.api_base}/interactions/{ix.id}/{ix.token}/callback?with_response=1"
        async with aiohttp.ClientSession() as http, http.post(url, json={"type": 4, "data": {"content": "x"}}) as reply:
            assert reply.status == 400 and reply.headers["Content-Type"] == "application/json"
            assert (await reply.json())["code"] == 40060

    assert [v.kind for v in fake.violations] == ["double_response"]
    assert [c.status for c in ix.callbacks] == [200, 400]


async def test_a_late_answer_is_refused_and_recorded(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = world.fake
    fake.response_deadline = 0.2  # instead of 3 s, to keep the test fast
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch) as run:
        ix = await fake.slash(world.alice, world.channel, "slow")
        await fake.wait_for(lambda: "late" in run.bot.seen.errors)  # type: ignore[attr-defined]

    error = run.bot.seen.errors["late"]  # type: ignore[attr-defined]
    assert (error.status, error.code) == (404, 10062)
    assert [v.kind for v in fake.violations] == ["no_response", "late_response"]
    assert not ix.acknowledged


async def test_missing_permissions_show_in_app_permissions_and_rest_answers_403(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = world.fake
    world.channel.deny_bot(Permission.CREATE_PUBLIC_THREADS | Permission.ATTACH_FILES)
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch) as run:
        await fake.slash(world.alice, world.channel, "perms")
        await fake.wait_for(lambda: "thread" in run.bot.seen.errors)  # type: ignore[attr-defined]
        cached = run.bot.get_channel(world.channel.id)
        assert isinstance(cached, discord.TextChannel)
        assert not cached.permissions_for(cached.guild.me).attach_files  # the overwrite came with GUILD_CREATE

    perms_seen = run.bot.seen.app_permissions  # type: ignore[attr-defined]
    assert perms_seen is not None and perms_seen.send_messages
    assert not perms_seen.create_public_threads and not perms_seen.attach_files
    error = run.bot.seen.errors["thread"]  # type: ignore[attr-defined]
    assert (error.status, error.code) == (403, 50013)
    assert fake.threads == []
    fake.assert_clean()


async def test_modal_round_trip(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = world.fake
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch):
        opened = await fake.slash(world.alice, world.channel, "feedback")
        modal = await opened.response()
        assert (modal.type, modal.custom_id, modal.title) == (9, "feedback", "Feedback")
        submitted = await fake.submit_modal(world.alice, world.channel, "feedback", {"fb:text": "great"})
        answer = await submitted.response()
    assert answer.content == "thanks: great" and answer.ephemeral
    with pytest.raises(NotInvocable):
        await fake.submit_modal(world.alice, world.channel, "never-shown", {})
    fake.assert_clean()


async def test_options_are_checked_like_discords_client(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = world.fake
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch):
        image = {"image1": FileSpec("a.png", b"png", "image/png")}
        with pytest.raises(NotInvocable, match="not one of"):
            await fake.slash(
                world.alice, world.channel, "generate", {"prompt": "x", "aspect_ratio": "4:3"}, attachments=image
            )
        with pytest.raises(NotInvocable, match="outside"):
            await fake.slash(world.alice, world.channel, "generate", {"prompt": "x", "duration": 16}, attachments=image)
        with pytest.raises(NotInvocable, match="missing required"):
            await fake.slash(world.alice, world.channel, "generate", {"prompt": "x"})
        with pytest.raises(NotInvocable, match="upload limit"):
            big = {"image1": FileSpec("a.png", b"png", size=20 * 1024 * 1024)}
            await fake.slash(world.alice, world.channel, "generate", {"prompt": "x"}, attachments=big)
        with pytest.raises(NotInvocable, match="never synced"):
            await fake.slash(world.alice, world.channel, "nope")
    assert fake.interactions == []


async def test_reconnect_resumes_the_session(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = world.fake
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch) as run:
        await fake.request_reconnect()
        await fake.wait_for(lambda: fake.gateway.resumes == 1 and run.bot.seen.resumed == 1)  # type: ignore[attr-defined]
        ix = await fake.slash(world.alice, world.channel, "ping")
        assert (await ix.response()).content == "pong"
    assert fake.gateway.identifies == 1 and fake.gateway.connections == 2
    assert fake.gateway.close_codes[0] == 4000  # discord.py's own close before reconnecting
    fake.assert_clean()


async def test_rest_nonce_upload_limit_threads_forum_and_dm(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = world.fake
    world.guild.upload_limit = 1024
    forum = world.guild.add_forum_channel("gallery")
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch) as run:
        channel = run.bot.get_channel(world.channel.id)
        assert isinstance(channel, discord.TextChannel)
        first = await channel.send("hello", nonce=1234)
        again = await channel.send("hello", nonce=1234)  # a retried send must not post twice
        with pytest.raises(discord.HTTPException) as too_big:
            await channel.send(file=discord.File(io.BytesIO(b"x" * 2048), filename="big.bin"))
        private = await channel.create_thread(name="side")
        with pytest.raises(discord.HTTPException) as second_thread:
            await first.create_thread(name="a")
            await first.create_thread(name="b")
        gallery = run.bot.get_channel(forum.id)
        assert isinstance(gallery, discord.ForumChannel)
        post = await gallery.create_thread(name="post", content="first", file=discord.File(io.BytesIO(b"img"), "a.png"))
        alice = await run.bot.fetch_user(world.alice.id)
        await alice.send("your clip is ready")

    assert first.id == again.id and fake.message(first.id).nonce_replays == 1
    assert [m.content for m in fake.messages(world.channel)] == ["hello"]
    assert (too_big.value.status, too_big.value.code) == (413, 40005)
    assert private.type == discord.ChannelType.private_thread  # documented default without `type`
    assert second_thread.value.code == 160004
    assert post.thread.id == post.message.id
    assert fake.messages(post.thread.id)[0].attachments[0].data == b"img"
    assert [m.content for m in fake.messages(fake.dm_channel(world.alice))] == ["your clip is ready"]
    fake.assert_clean()


async def test_first_followup_after_defer_fills_the_thinking_message(
    world: World, monkeypatch: pytest.MonkeyPatch
) -> None:
    fake = world.fake
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch) as run:
        ix = await fake.slash(world.alice, world.channel, "slowjob")
        await ix.response()
        assert ix.original is not None and ix.original.loading
        run.bot.proceed.set()  # type: ignore[attr-defined]
        await fake.wait_for(lambda: ix.original is not None and not ix.original.loading)
    assert ix.original.content == "done" and ix.followups == []
    assert [m.id for m in fake.messages(world.channel)] == [ix.original.id]
    fake.assert_clean()


async def test_slash_in_a_dm_carries_user_not_member(world: World, monkeypatch: pytest.MonkeyPatch) -> None:
    fake = world.fake
    dm = fake.dm_channel(world.alice)
    async with running_bot(TestBot(world.guild.id), fake, monkeypatch):
        ix = await fake.slash(world.alice, dm, "status")
        response = await ix.response()
        with pytest.raises(NotInvocable, match="never synced"):
            await fake.slash(world.alice, dm, "ping")  # a guild command doesn't exist in DMs
    assert response.content == "dm: alice" and not response.ephemeral
    assert "user" in ix.payload and "member" not in ix.payload and "guild_id" not in ix.payload
    assert ix.payload["context"] == 1
    fake.assert_clean()


async def test_unknown_routes_answer_404_json_and_are_recorded(fake: FakeDiscord) -> None:
    async with aiohttp.ClientSession() as http:
        async with http.get(
            f"{fake.api_base}/channels/1/pins", headers={"Authorization": f"Bot {fake.token}"}
        ) as reply:
            assert reply.status == 404 and reply.headers["Content-Type"] == "application/json"
            assert await reply.json() == {"message": "404: Not Found", "code": 0}
        async with http.get(f"{fake.api_base}/users/@me") as reply:
            assert reply.status == 401  # no bot token
    assert fake.unhandled == [("GET", "/channels/1/pins")]
    with pytest.raises(AssertionError, match="unhandled GET /channels/1/pins"):
        fake.assert_clean()
