"""Approval cards: quota requests and jobs waiting for a moderator. Buttons are DynamicItems carrying the
request or job id, so cards keep working after a restart; every decision is made (once) by the core."""

from __future__ import annotations

import logging
from typing import TYPE_CHECKING, Any

import discord

from bot.engine.approvals import ApprovalError, approve_job, deny_job
from bot.money import fmt_usd, usd
from bot.requests import QuotaRequests, RequestError
from bot.store.requests import QuotaRequest
from cogs.views import JOB_ID, IdButton

if TYPE_CHECKING:
    from bot.app import ReelBot
    from bot.store.jobs import Job

log = logging.getLogger(__name__)

REQUEST_ID = r"(?P<key>[0-9]{1,12})"


def _bot(interaction: discord.Interaction) -> ReelBot:
    return interaction.client  # type: ignore[return-value]


async def is_moderator(interaction: discord.Interaction) -> bool:
    """Manage Server, the server's moderator role, or the bot's owner."""
    bot = _bot(interaction)
    if str(interaction.user.id) in bot.app.settings.owner_ids:
        return True
    permissions = getattr(interaction.user, "guild_permissions", None)
    if permissions is not None and permissions.manage_guild:
        return True
    settings = await bot.app.guild_config.get(str(interaction.guild_id) if interaction.guild_id else None)
    roles = {str(role.id) for role in getattr(interaction.user, "roles", [])}
    return bool(settings.moderator_role_id and str(settings.moderator_role_id) in roles)


async def refuse_unless_moderator(interaction: discord.Interaction) -> bool:
    if await is_moderator(interaction):
        return False
    await interaction.response.send_message("Only moderators can do that.", ephemeral=True)
    return True


def requests_of(bot: ReelBot) -> QuotaRequests:
    return bot.app.requests


def request_card(request: QuotaRequest) -> tuple[discord.Embed, discord.ui.View | None]:
    embed = discord.Embed(title=f"Quota request #{request.id}", colour=discord.Colour.gold())
    embed.add_field(name="Member", value=f"<@{request.user_id}>")
    embed.add_field(name="Amount", value=fmt_usd(request.amount_micros))
    embed.add_field(name="Reason", value=request.reason[:1000], inline=False)
    if not request.is_open:
        from bot.requests import describe_outcome

        embed.add_field(name="Decision", value=describe_outcome(request)[:1000], inline=False)
        embed.colour = discord.Colour.green() if request.state == "approved" else discord.Colour.dark_grey()
        return embed, None
    view = discord.ui.View(timeout=None)
    for item in (ApproveRequest(str(request.id)), ApprovePartly(str(request.id)), DenyRequest(str(request.id))):
        view.add_item(item)
    return embed, view


async def tell_member(bot: ReelBot, user_id: str, channel_id: str | None, text: str) -> None:
    """The outcome goes to the member by DM, or (DMs closed) in the channel they asked from."""
    try:
        user = await bot.fetch_user(int(user_id))
        await user.send(text)
        return
    except discord.HTTPException:
        pass
    if channel_id:
        try:
            await bot.get_partial_messageable(int(channel_id)).send(f"<@{user_id}> {text}")
        except discord.HTTPException as exc:
            log.info("could not tell %s: %s", user_id, exc)


async def decide_request(
    interaction: discord.Interaction, request_id: int, *, approve: bool, amount: int | None, reason: str | None
) -> None:
    bot = _bot(interaction)
    try:
        decision = await requests_of(bot).decide(request_id, moderator_id=str(interaction.user.id), approve=approve,
                                                 amount=amount, reason=reason)  # fmt: skip
    except RequestError as exc:
        await interaction.response.send_message(str(exc), ephemeral=True)
        return
    request = decision.request
    embed, view = request_card(request)
    if interaction.message is not None:
        await interaction.response.edit_message(embed=embed, view=view)
    else:
        await interaction.response.send_message("Done.", ephemeral=True)
        if request.card_channel_id and request.card_message_id:
            card = bot.get_partial_messageable(int(request.card_channel_id)).get_partial_message(
                int(request.card_message_id)
            )
            await card.edit(embed=embed, view=view)
    if decision.approved:
        text = f"Your quota request #{request.id} was approved: {fmt_usd(decision.amount_micros)} was added."
    else:
        text = f"Your quota request #{request.id} was denied: {request.decision_reason}"
    await tell_member(bot, request.user_id, None, text)


class _RequestButton(IdButton, template=r"rb:req:x:(?P<key>[0-9]+)"):
    @property
    def request_id(self) -> int:
        return int(self.key)


class ApproveRequest(_RequestButton, template=rf"rb:req:approve:{REQUEST_ID}"):
    prefix, label, style = "rb:req:approve", "Approve", discord.ButtonStyle.success

    async def callback(self, interaction: discord.Interaction) -> None:
        if not await refuse_unless_moderator(interaction):
            await decide_request(interaction, self.request_id, approve=True, amount=None, reason=None)


class PartialModal(discord.ui.Modal, title="Approve part of the request"):
    amount: discord.ui.TextInput[PartialModal] = discord.ui.TextInput(
        label="Amount in dollars", max_length=12, custom_id="amount"
    )

    def __init__(self, request_id: int) -> None:
        super().__init__(timeout=600, custom_id=f"rb:req:partial-modal:{request_id}")
        self.request_id = request_id

    async def on_submit(self, interaction: discord.Interaction) -> None:
        try:
            amount = usd(self.amount.value)
        except ValueError as exc:
            await interaction.response.send_message(f"Amount: {exc}", ephemeral=True)
            return
        await decide_request(interaction, self.request_id, approve=True, amount=amount, reason=None)


class ApprovePartly(_RequestButton, template=rf"rb:req:partial:{REQUEST_ID}"):
    prefix, label, style = "rb:req:partial", "Approve partly", discord.ButtonStyle.primary

    async def callback(self, interaction: discord.Interaction) -> None:
        if not await refuse_unless_moderator(interaction):
            await interaction.response.send_modal(PartialModal(self.request_id))


class DenyModal(discord.ui.Modal, title="Deny"):
    reason: discord.ui.TextInput[DenyModal] = discord.ui.TextInput(
        label="Reason (the member sees it)", style=discord.TextStyle.paragraph, max_length=500, custom_id="reason"
    )

    def __init__(self, custom_id: str, on_reason: Any) -> None:
        super().__init__(timeout=600, custom_id=custom_id)
        self.on_reason = on_reason

    async def on_submit(self, interaction: discord.Interaction) -> None:
        await self.on_reason(interaction, self.reason.value)


class DenyRequest(_RequestButton, template=rf"rb:req:deny:{REQUEST_ID}"):
    prefix, label, style = "rb:req:deny", "Deny", discord.ButtonStyle.danger

    async def callback(self, interaction: discord.Interaction) -> None:
        if await refuse_unless_moderator(interaction):
            return
        request_id = self.request_id

        async def on_reason(modal_interaction: discord.Interaction, reason: str) -> None:
            await decide_request(modal_interaction, request_id, approve=False, amount=None, reason=reason)

        await interaction.response.send_modal(DenyModal(f"rb:req:deny-modal:{request_id}", on_reason))


# --- jobs waiting for approval -------------------------------------------------------------------------


def job_card(job: Job, reason: str) -> discord.Embed:
    request = job.request
    embed = discord.Embed(title=f"Job {job.id} waits for approval", description=request.caption[:1500],
                          colour=discord.Colour.gold())  # fmt: skip
    embed.add_field(name="Member", value=f"<@{job.user_id}>")
    embed.add_field(name="Cost", value=fmt_usd(job.cost_micros) + (" (estimate)" if job.price_is_estimate else ""))
    embed.add_field(name="Why", value=reason, inline=False)
    embed.add_field(name="References", value=f"{len(request.images)} image(s)" + (", a video" if request.video else ""))
    return embed


def job_card_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(ApproveJob(job_id))
    view.add_item(DenyJob(job_id))
    return view


class ApproveJob(IdButton, template=rf"rb:job:approve:{JOB_ID}"):
    prefix, label, style = "rb:job:approve", "Approve", discord.ButtonStyle.success

    async def callback(self, interaction: discord.Interaction) -> None:
        if await refuse_unless_moderator(interaction):
            return
        try:
            job = await approve_job(_bot(interaction).engine, self.job_id, moderator_id=str(interaction.user.id))
        except ApprovalError as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        await interaction.response.edit_message(content=f"Approved by {interaction.user.mention}.", view=None)
        await _bot(interaction).status_editor.update(job)


class DenyJob(IdButton, template=rf"rb:job:deny:{JOB_ID}"):
    prefix, label, style = "rb:job:deny", "Deny", discord.ButtonStyle.danger

    async def callback(self, interaction: discord.Interaction) -> None:
        if await refuse_unless_moderator(interaction):
            return
        job_id = self.job_id

        async def on_reason(modal_interaction: discord.Interaction, reason: str) -> None:
            bot = _bot(modal_interaction)
            try:
                await deny_job(bot.engine, job_id, moderator_id=str(modal_interaction.user.id), reason=reason)
            except ApprovalError as exc:
                await modal_interaction.response.send_message(str(exc), ephemeral=True)
                return
            await modal_interaction.response.send_message(f"Denied job `{job_id}`.", ephemeral=True)

        await interaction.response.send_modal(DenyModal(f"rb:job:deny-modal:{job_id}", on_reason))


CARD_ITEMS = (ApproveRequest, ApprovePartly, DenyRequest, ApproveJob, DenyJob)
