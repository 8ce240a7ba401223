"""`/generate`: Discord in, core calls out.

Within Discord's 3 seconds: cheap checks answer at once (ephemeral, naming the problem); otherwise the
command defers publicly and goes on: downloads the attachments (links expire), validates the media,
prices the request, confirms an expensive one, reserves the quota and enqueues the job, then turns its
response message into the job's status message and opens a thread from it for the clip.
"""

from __future__ import annotations

import asyncio
import contextlib
import json
import logging
from dataclasses import dataclass
from typing import TYPE_CHECKING, Any, Literal

import discord
from discord import app_commands
from discord.ext import commands

from bot.engine.states import JobState
from bot.intake import RawRequest, build_request, parse_shots
from bot.ledger import InsufficientQuota
from bot.media.inspect import IMAGE_MAX_BYTES, VIDEO_MAX_BYTES
from bot.money import fmt_usd
from bot.request import GenerationRequest, InvalidRequest, MediaRef, Violation
from bot.spend_cap import SpendCapReached
from bot.store.jobs import Job
from cogs.messages import PREVIEW_NOTE, clip_text, status_embed
from cogs.moderation import job_card, job_card_view
from cogs.views import ConfirmView

if TYPE_CHECKING:
    from bot.app import ReelBot

log = logging.getLogger(__name__)

MULTI_PROMPT_HELP = "Shots as 'SECONDS: what happens', separated by |, e.g. '2: wide shot | 3: close-up of Figure 1'"
THREAD_PERMISSIONS = ("create_public_threads", "send_messages_in_threads", "attach_files")
IN_THREAD_PERMISSIONS = ("send_messages_in_threads", "attach_files")
PERMISSION_NAMES = {
    "create_public_threads": "Create Public Threads",
    "send_messages_in_threads": "Send Messages in Threads",
    "send_messages": "Send Messages",
    "attach_files": "Attach Files",
}


def member_roles(user: discord.abc.User) -> list[str]:
    return [str(role.id) for role in getattr(user, "roles", []) if not role.is_default()]


class Refusal(Exception):
    """A problem to tell the member, ephemerally, in plain words."""


@dataclass
class Placement:
    """Where a job's status message and clip go."""

    status_channel_id: int
    status_message_id: int
    channel_id: int  # the thread (or channel) the clip is posted in


def _placeholder(attachment: discord.Attachment, kind: Literal["image", "video"]) -> MediaRef:
    """Stand-in for an attachment not yet downloaded: enough to check counts, prices and parameters."""
    return MediaRef(name=attachment.filename, path="", sha256="", kind=kind, format="", width=0, height=0,
                    size_bytes=attachment.size)  # fmt: skip


def required_permissions(channel: Any) -> tuple[str, ...]:
    if isinstance(channel, discord.Thread):
        return IN_THREAD_PERMISSIONS
    if isinstance(channel, discord.TextChannel | discord.ForumChannel):
        return THREAD_PERMISSIONS
    if isinstance(channel, discord.DMChannel | discord.GroupChannel) or channel is None:
        return ()
    return ("send_messages", "attach_files")


def missing_permissions(interaction: discord.Interaction) -> list[str]:
    permissions = interaction.app_permissions
    return [PERMISSION_NAMES[name] for name in required_permissions(interaction.channel)
            if not getattr(permissions, name)]  # fmt: skip


def check_attachments(images: list[discord.Attachment], video: discord.Attachment | None) -> list[str]:
    """What can be told from the attachment records alone, before downloading anything."""
    problems = []
    for number, image in enumerate(images, start=1):
        kind = (image.content_type or "").split(";")[0]
        if kind and not kind.startswith("image/"):
            problems.append(f"image{number} ({image.filename}) is {kind}, not an image (use JPEG, PNG or WebP)")
        if image.size > IMAGE_MAX_BYTES:
            problems.append(f"image{number} ({image.filename}) is {image.size / 2**20:.1f} MB; images may be 10 MB")
    if video is not None:
        kind = (video.content_type or "").split(";")[0]
        if kind and not kind.startswith("video/"):
            problems.append(f"video ({video.filename}) is {kind}, not a video (use MP4 or MOV)")
        if video.size > VIDEO_MAX_BYTES:
            problems.append(f"video ({video.filename}) is {video.size / 2**20:.0f} MB; videos may be 200 MB")
    return problems


class Generate(commands.Cog):
    def __init__(self, bot: ReelBot) -> None:
        self.bot = bot

    @app_commands.command(name="generate", description="Make a video clip from reference images and a prompt")
    @app_commands.describe(
        prompt="What happens; refer to images as Figure 1, Figure 2 … (with multi_prompt: the clip's title)",
        image1="Reference image 1 (a character, prop or scene)", image2="Reference image 2",
        image3="Reference image 3", image4="Reference image 4", image5="Reference image 5",
        image6="Reference image 6", image7="Reference image 7",
        video="Reference video: MP4 or MOV, 3–10 s (then at most 4 images)",
        aspect_ratio="Frame shape", duration="Length in seconds (3–15)",
        sound="Generate sound (not with a reference video)",
        keep_original_sound="Keep the reference video's sound", tier="Quality tier",
        shot_type="How shots are cut", multi_prompt=MULTI_PROMPT_HELP,
    )  # fmt: skip
    @app_commands.allowed_contexts(guilds=True, dms=True, private_channels=False)
    @app_commands.allowed_installs(guilds=True, users=False)
    async def generate(
        self,
        interaction: discord.Interaction,
        prompt: app_commands.Range[str, 1, 2500],
        image1: discord.Attachment | None = None,
        image2: discord.Attachment | None = None,
        image3: discord.Attachment | None = None,
        image4: discord.Attachment | None = None,
        image5: discord.Attachment | None = None,
        image6: discord.Attachment | None = None,
        image7: discord.Attachment | None = None,
        video: discord.Attachment | None = None,
        aspect_ratio: Literal["16:9", "9:16", "1:1"] | None = None,
        duration: app_commands.Range[int, 3, 15] | None = None,
        sound: bool | None = None,
        keep_original_sound: bool | None = None,
        tier: Literal["standard", "pro"] | None = None,
        shot_type: Literal["intelligent", "customize"] | None = None,
        multi_prompt: str | None = None,
    ) -> None:
        images = [a for a in (image1, image2, image3, image4, image5, image6, image7) if a is not None]
        options = {"aspect_ratio": aspect_ratio, "duration": duration, "sound": sound,
                   "keep_original_sound": keep_original_sound, "tier": tier, "shot_type": shot_type}  # fmt: skip
        try:
            raw, cost, estimate = await self.precheck(interaction, prompt, images, video, options, multi_prompt)
        except Refusal as refusal:
            await interaction.response.send_message(str(refusal), ephemeral=True)
            self.acknowledged(interaction, "message")
            return
        guild = await self.bot.app.guild_config.cached(str(interaction.guild_id) if interaction.guild_id else None)
        if cost > guild.confirm_threshold_micros:
            await self.confirmed_run(interaction, raw, images, video, cost, estimate)
            return
        await interaction.response.defer(thinking=True)
        self.acknowledged(interaction, "defer")
        try:
            await self.check_quota(interaction, cost)
            request = await self.receive(raw, images, video)
            job = await self.accept(interaction, request)
        except Refusal as refusal:
            await self.withdraw(interaction, str(refusal))
            return
        await self.place(interaction, job)

    async def confirmed_run(
        self,
        interaction: discord.Interaction,
        raw: RawRequest,
        images: list[discord.Attachment],
        video: discord.Attachment | None,
        cost: int,
        estimate: bool,
    ) -> None:
        """Above the server's threshold the member first sees the cost privately, with Confirm/Cancel.
        The attachments download meanwhile (their links expire); nothing is reserved until Confirm."""
        view = ConfirmView(interaction.user.id)
        note = " (an estimate: this provider does not publish its price)" if estimate else ""
        await interaction.response.send_message(f"This clip will cost **{fmt_usd(cost)}**{note}. Go ahead?",
                                                view=view, ephemeral=True)  # fmt: skip
        self.acknowledged(interaction, "confirm")
        received = asyncio.create_task(self.receive(raw, images, video))
        await view.wait()
        if not view.confirmed:
            received.cancel()
            if view.confirmed is None:  # timed out: say so on the private message
                with contextlib.suppress(discord.HTTPException):
                    await interaction.edit_original_response(content="Not confirmed in time; nothing was charged.",
                                                             view=None)  # fmt: skip
            return
        try:
            job = await self.accept(interaction, await received)
        except Refusal as refusal:
            await interaction.followup.send(str(refusal), ephemeral=True)
            return
        await self.place(interaction, job, respond=False)

    def acknowledged(self, interaction: discord.Interaction, response: str, command: str = "generate") -> None:
        """Metrics: how long the member waited for our first answer (Discord allows 3 s)."""
        waited = (discord.utils.utcnow() - interaction.created_at).total_seconds()
        self.bot.app.metrics.observe_ack(waited, command=command, response=response)

    # --- before deferring: only what is instant ----------------------------------------------------
    async def precheck(
        self,
        interaction: discord.Interaction,
        prompt: str,
        images: list[discord.Attachment],
        video: discord.Attachment | None,
        options: dict[str, Any],
        multi_prompt: str | None,
    ) -> tuple[RawRequest, int, bool]:
        missing = missing_permissions(interaction)
        if missing:
            plural = "s" if len(missing) > 1 else ""
            raise Refusal(f"I can't post the clip here: I need the **{', '.join(missing)}** permission{plural}"
                          " in this channel. Ask a server admin to grant it.")  # fmt: skip
        guild = await self.bot.app.guild_config.cached(str(interaction.guild_id) if interaction.guild_id else None)
        channel = interaction.channel
        parent = getattr(channel, "parent_id", None)
        if not (guild.channel_allowed(str(interaction.channel_id)) or (parent and guild.channel_allowed(str(parent)))):
            raise Refusal("`/generate` doesn't work in this channel on this server; try one of: "
                          + ", ".join(f"<#{c}>" for c in guild.generate_channels))  # fmt: skip
        blocked = guild.blocked_terms(" ".join([prompt, multi_prompt or ""]))
        if blocked:
            raise Refusal(f"Your prompt contains words this server doesn't allow: {', '.join(blocked)}.")
        shots = None
        if multi_prompt:
            try:
                shots = parse_shots(multi_prompt)
            except ValueError as exc:
                raise Refusal(f"multi_prompt: {exc}") from None
        raw = RawRequest(
            prompt=None if shots else prompt,
            multi_prompt=shots,
            aspect_ratio=options["aspect_ratio"] or guild.default_aspect_ratio,
            duration=options["duration"] or guild.default_duration,
            sound=options["sound"],
            keep_original_sound=options["keep_original_sound"],
            tier=options["tier"] or guild.default_tier,
            shot_type=options["shot_type"],
        )
        problems = check_attachments(images, video)
        if not guild.tier_allowed(raw.tier or "standard"):
            problems.append(f"tier: this server allows at most {guild.max_tier}")
        if (raw.duration or 5) > guild.max_duration:
            problems.append(f"duration: this server allows at most {guild.max_duration} s")
        dry = self._dry_request(raw, images, video, problems)
        if problems or dry is None:
            raise Refusal("I can't make that clip:\n" + "\n".join(f"- {p}" for p in problems))
        provider = self.bot.app.provider()
        refused = provider.check(dry)
        if refused:
            raise Refusal("I can't make that clip:\n" + "\n".join(f"- {v}" for v in refused))
        quote = provider.quote(dry)
        return raw, quote.micros, quote.estimate

    async def check_quota(self, interaction: discord.Interaction, cost: int) -> None:
        """After deferring (it takes the ledger's lock, which would slow every answer under load): refuse at
        once, with the numbers, a member who cannot afford the clip. Acceptance re-checks under the lock."""
        guild = await self.bot.app.guild_config.get(str(interaction.guild_id) if interaction.guild_id else None)
        balance = await self.bot.app.funding.member_balance(str(interaction.guild_id or ""), str(interaction.user.id),
                                                            member_roles(interaction.user))  # fmt: skip
        if balance.unlimited or cost <= balance.available or guild.pool_draws_allowed:
            return
        reserved = f" ({fmt_usd(balance.reserved)} is held for your jobs in progress)" if balance.reserved else ""
        refill = (f" Your {balance.period} allowance comes back <t:{int(balance.next_refill.timestamp())}:R>."
                  if balance.allowance and balance.next_refill else "")  # fmt: skip
        have = fmt_usd(max(balance.available, 0))
        raise Refusal(f"Not enough quota: this clip costs {fmt_usd(cost)} and you have {have}"
                      f" available{reserved}.{refill} Nothing was charged.")  # fmt: skip

    @staticmethod
    def _dry_request(
        raw: RawRequest, images: list[discord.Attachment], video: discord.Attachment | None, problems: list[str]
    ) -> GenerationRequest | None:
        fields = {name: getattr(raw, name) for name in ("prompt", "aspect_ratio", "duration", "sound",
                                                          "keep_original_sound", "tier", "shot_type")}  # fmt: skip
        fields = {k: v for k, v in fields.items() if v is not None}
        fields["images"] = [_placeholder(a, "image") for a in images]
        fields["video"] = _placeholder(video, "video") if video else None
        if raw.multi_prompt:
            fields["multi_prompt"] = [{"prompt": p, "duration": d} for d, p in raw.multi_prompt]
        try:
            return GenerationRequest.create(**fields)
        except InvalidRequest as exc:
            problems += [_option_words(v) for v in exc.violations]
            return None

    # --- after acknowledging ----------------------------------------------------------------------
    async def receive(
        self, raw: RawRequest, images: list[discord.Attachment], video: discord.Attachment | None
    ) -> GenerationRequest:
        """Download at once (interaction attachments are ephemeral and their links expire), then check."""
        try:
            files = await asyncio.gather(*(a.read() for a in images))
            raw.images = [(a.filename, data) for a, data in zip(images, files, strict=True)]
            if video is not None:
                raw.video = (video.filename, await video.read())
        except discord.HTTPException as exc:
            raise Refusal(f"I couldn't download your attachments (Discord answered {exc.status}); "
                          "please attach them again.") from None  # fmt: skip
        try:
            return await build_request(raw, self.bot.app.media, self.bot.app.http)
        except InvalidRequest as exc:
            lines = "\n".join(f"- {_option_words(v)}" for v in exc.violations)
            raise Refusal(f"I can't make that clip:\n{lines}") from None

    async def accept(self, interaction: discord.Interaction, request: GenerationRequest) -> Job:
        channel = interaction.channel
        guild_id = str(interaction.guild_id) if interaction.guild_id else None
        guild = await self.bot.app.guild_config.get(guild_id)
        roles = member_roles(interaction.user)
        age_restricted = bool(getattr(channel, "is_nsfw", lambda: False)())
        target = {
            "kind": "discord",
            "channel_id": str(interaction.channel_id),
            "size_limit": interaction.filesize_limit,
            # where a clip the provider flags as NSFW may be shown, by the server's policy
            "nsfw_ok": {"allow": True, "block": False}.get(guild.nsfw_policy, age_restricted),
        }
        cost = self.bot.app.provider().quote(request).micros
        approval = guild.approval_reason(cost, roles) if guild_id else None
        if approval and not guild.log_channel_id:
            raise Refusal(f"This clip needs a moderator's approval ({approval}), but this server has no moderators' "
                          "channel set (`/reelbot settings set log_channel`). Nothing was charged.")  # fmt: skip
        try:
            job = await self.bot.engine.accept(
                request, provider=self.bot.app.settings.provider, user_id=str(interaction.user.id),
                guild_id=guild_id, channel_id=str(interaction.channel_id), delivery=target, role_ids=roles,
                state=JobState.AWAITING_APPROVAL if approval else JobState.QUEUED,
            )  # fmt: skip
        except InsufficientQuota as exc:
            raise Refusal(f"Not enough quota: {exc}. Nothing was charged.") from None
        except SpendCapReached as exc:
            raise Refusal(f"Sorry: {exc}.") from None
        except InvalidRequest as exc:
            raise Refusal("I can't make that clip:\n" + "\n".join(f"- {v}" for v in exc.violations)) from None
        if approval:
            await self.post_approval_card(job, approval, guild.log_channel_id)
        return job

    async def post_approval_card(self, job: Job, reason: str, channel_id: str | int | None) -> None:
        """The card moderators decide on: prompt, thumbnails of the references, cost, Approve/Deny."""
        files = [discord.File(ref.path, filename=f"ref{n}.{ref.format.replace('jpeg', 'jpg')}")
                 for n, ref in enumerate(job.request.images[:4], start=1)]  # fmt: skip
        await self.bot.get_partial_messageable(int(channel_id)).send(  # type: ignore[arg-type]
            embed=job_card(job, reason),
            view=job_card_view(job.id),
            files=files,
            allowed_mentions=discord.AllowedMentions.none(),
        )

    async def place(self, interaction: discord.Interaction, job: Job, *, respond: bool = True) -> None:
        """Turn the command's response into the status message (or, when the response was the private
        confirmation, post one) and open the job's thread from it."""
        embed = self.status(job)
        channel = interaction.channel
        message: discord.Message | discord.PartialMessage | None = None
        if respond:
            try:
                message = await interaction.edit_original_response(content=None, embed=embed)
            except discord.HTTPException as exc:  # e.g. the interaction token was rejected: carry on with ours
                log.info("job %s: original response not editable (%s); posting a status message", job.id, exc)
        if message is None:
            message = await self.bot.get_partial_messageable(interaction.channel_id).send(embed=embed)  # type: ignore[arg-type]
        thread_id = interaction.channel_id
        if isinstance(channel, discord.TextChannel):
            name = clip_text(job.request.caption, 90) or f"reelbot {job.id}"
            try:
                thread = await channel.create_thread(name=name, message=message, auto_archive_duration=1440)
                thread_id = thread.id
            except discord.HTTPException as exc:
                log.warning("job %s: could not open a thread (%s); posting in the channel", job.id, exc)
        target = {**job.delivery, "channel_id": str(thread_id),
                  "status": {"channel_id": str(message.channel.id), "message_id": str(message.id)}}  # fmt: skip
        await self.bot.app.jobs.update(job.id, delivery_json=json.dumps(target))
        await self.bot.status_editor.update(await self.bot.app.jobs.require(job.id))

    def status(self, job: Job) -> discord.Embed:
        provider = self.bot.app.provider(job.provider)
        return status_embed(job, provider_name=provider.display_name, preview=provider.is_preview)

    async def withdraw(self, interaction: discord.Interaction, message: str | None) -> None:
        """Take back the public 'thinking…' response and tell the member privately."""
        try:
            await interaction.delete_original_response()
        except discord.HTTPException:
            pass
        if message:
            try:
                await interaction.followup.send(message, ephemeral=True)
            except discord.HTTPException as exc:
                log.info("could not tell %s why their request was refused: %s", interaction.user.id, exc)

    # --- jobs started from buttons (re-roll, edit prompt) -------------------------------------------
    async def start_follow_up(self, interaction: discord.Interaction, source: Job, request: GenerationRequest) -> None:
        """A new job in the same thread as `source`, paid by the member who asked for it."""
        await interaction.response.defer(ephemeral=True, thinking=True)
        self.acknowledged(interaction, "defer", command="follow_up")
        try:
            job = await self.bot.engine.accept(
                request, provider=source.provider, user_id=str(interaction.user.id), guild_id=source.guild_id,
                channel_id=source.channel_id, delivery={**source.delivery, "status": None},
                role_ids=member_roles(interaction.user),
            )  # fmt: skip
        except (InsufficientQuota, SpendCapReached) as exc:
            await interaction.followup.send(f"Not possible: {exc}. Nothing was charged.", ephemeral=True)
            return
        except InvalidRequest as exc:
            await interaction.followup.send("\n".join(f"- {v}" for v in exc.violations), ephemeral=True)
            return
        channel = self.bot.get_partial_messageable(int(source.delivery.get("channel_id") or source.channel_id))
        message = await channel.send(embed=self.status(job))
        target = {**job.delivery, "status": {"channel_id": str(channel.id), "message_id": str(message.id)}}
        await self.bot.app.jobs.update(job.id, delivery_json=json.dumps(target))
        await self.bot.status_editor.update(await self.bot.app.jobs.require(job.id))
        preview = f" {PREVIEW_NOTE}" if self.bot.app.provider(job.provider).is_preview else ""
        await interaction.followup.send(f"Started job `{job.id}` ({fmt_usd(job.cost_micros)}).{preview}",
                                        ephemeral=True)  # fmt: skip


_OPTION_NAMES = {"images": "image attachments", "image": "image"}


def _option_words(violation: Violation) -> str:
    """Violations name request fields; on Discord, name the command's options instead."""
    field = violation.field
    if field.startswith("image "):
        field = "image" + field.removeprefix("image ")
    return f"{_OPTION_NAMES.get(field, field)}: {violation.message}"


async def setup(bot: ReelBot) -> None:
    await bot.add_cog(Generate(bot))
