"""Buttons that keep working after a restart: each custom id carries the job id, and everything else
comes from the database when the button is pressed (discord.ui.DynamicItem).
"""

from __future__ import annotations

import logging
import re
from typing import TYPE_CHECKING, Any

import discord

from bot.engine.engine import CannotCancel, NotAllowed
from bot.request import GenerationRequest, InvalidRequest

if TYPE_CHECKING:
    from bot.app import ReelBot
    from bot.store.jobs import Job

log = logging.getLogger(__name__)

JOB_ID = r"(?P<key>[a-z2-9]{10})"


def _bot(interaction: discord.Interaction) -> ReelBot:
    return interaction.client  # type: ignore[return-value]


async def _job(interaction: discord.Interaction, job_id: str) -> Job | None:
    job = await _bot(interaction).app.jobs.get(job_id)
    if job is None:
        await interaction.response.send_message("That job no longer exists.", ephemeral=True)
    return job


def is_moderator(interaction: discord.Interaction) -> bool:
    permissions = getattr(interaction.user, "guild_permissions", None)
    return bool(permissions and (permissions.manage_guild or permissions.manage_messages))


class IdButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=r"rb:base:(?P<key>[a-z0-9]+)"):
    """A button that survives restarts: its custom id is `<prefix>:<key>` (a job or request id), and its
    callback reads everything else from the database. Subclasses set the prefix, the look and a template."""

    prefix = "rb:base"
    label = ""
    style = discord.ButtonStyle.secondary
    emoji: str | None = None

    def __init__(self, key: str) -> None:
        super().__init__(discord.ui.Button(label=self.label, style=self.style, emoji=self.emoji,
                                           custom_id=f"{self.prefix}:{key}"))  # fmt: skip
        self.key = key

    @property
    def job_id(self) -> str:
        return self.key

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> IdButton:
        return cls(match["key"])


class CancelButton(IdButton, template=rf"rb:cancel:{JOB_ID}"):
    prefix, label, style = "rb:cancel", "Cancel", discord.ButtonStyle.danger

    async def callback(self, interaction: discord.Interaction) -> None:
        if await _job(interaction, self.job_id) is None:
            return
        try:
            job = await _bot(interaction).engine.cancel(
                self.job_id, actor=str(interaction.user.id), moderator=is_moderator(interaction)
            )
        except (NotAllowed, CannotCancel) as exc:
            await interaction.response.send_message(str(exc), ephemeral=True)
            return
        said = "Cancelled." if job.state.finished else "Cancelling: the provider is being told to stop."
        await interaction.response.send_message(f"{said} {job.error_message or ''}".strip(), ephemeral=True)


class RerollButton(IdButton, template=rf"rb:reroll:{JOB_ID}"):
    prefix, label, style = "rb:reroll", "Re-roll", discord.ButtonStyle.primary
    emoji = "🎲"

    async def callback(self, interaction: discord.Interaction) -> None:
        job = await _job(interaction, self.job_id)
        if job is None:
            return
        # Same request, a new job and a new reservation, paid by whoever pressed the button.
        await _bot(interaction).generate.start_follow_up(interaction, job, job.request)


class EditPromptModal(discord.ui.Modal, title="Edit the prompt"):
    def __init__(self, job: Job) -> None:
        super().__init__(timeout=600)
        self.job = job
        request = job.request
        self.prompt: discord.ui.TextInput[EditPromptModal] = discord.ui.TextInput(
            label="Prompt", style=discord.TextStyle.paragraph, max_length=2500,
            default=(request.prompt or request.caption)[:2500],
        )  # fmt: skip
        self.add_item(self.prompt)

    async def on_submit(self, interaction: discord.Interaction) -> None:
        fields = self.job.request.model_dump()
        fields.update(prompt=self.prompt.value, multi_prompt=None)
        try:
            request = GenerationRequest.create(**fields)
        except InvalidRequest as exc:
            await interaction.response.send_message(
                "That prompt can't be used:\n" + "\n".join(f"- {v}" for v in exc.violations), ephemeral=True
            )
            return
        await _bot(interaction).generate.start_follow_up(interaction, self.job, request)


class EditPromptButton(IdButton, template=rf"rb:edit:{JOB_ID}"):
    prefix, label, style = "rb:edit", "Edit prompt", discord.ButtonStyle.secondary
    emoji = "✏️"

    async def callback(self, interaction: discord.Interaction) -> None:
        job = await _job(interaction, self.job_id)
        if job is not None:
            await interaction.response.send_modal(EditPromptModal(job))


class DeleteButton(IdButton, template=rf"rb:delete:{JOB_ID}"):
    prefix, label, style = "rb:delete", "Delete", discord.ButtonStyle.danger
    emoji = "🗑️"

    async def callback(self, interaction: discord.Interaction) -> None:
        job = await _job(interaction, self.job_id)
        if job is None:
            return
        if str(interaction.user.id) != job.user_id and not is_moderator(interaction):
            await interaction.response.send_message("Only the member who made this clip can delete it.", ephemeral=True)
            return
        await interaction.response.defer(ephemeral=True)
        if interaction.message is not None:
            await interaction.message.delete()
        await interaction.followup.send("Deleted.", ephemeral=True)


class InfoButton(IdButton, template=rf"rb:info:{JOB_ID}"):
    prefix, label, style = "rb:info", "Info", discord.ButtonStyle.secondary
    emoji = "ℹ️"

    async def callback(self, interaction: discord.Interaction) -> None:
        job = await _job(interaction, self.job_id)
        if job is not None:
            await interaction.response.send_message(embed=_bot(interaction).job_embed(job), ephemeral=True)


DYNAMIC_ITEMS = (CancelButton, RerollButton, EditPromptButton, DeleteButton, InfoButton)


def status_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    view.add_item(CancelButton(job_id))
    return view


def result_view(job_id: str) -> discord.ui.View:
    view = discord.ui.View(timeout=None)
    for item in (RerollButton(job_id), EditPromptButton(job_id), DeleteButton(job_id), InfoButton(job_id)):
        view.add_item(item)
    return view


class ConfirmView(discord.ui.View):
    """The ephemeral Confirm/Cancel shown before an expensive job; not persistent (it lives with the command)."""

    def __init__(self, owner_id: int, timeout: float = 300) -> None:
        super().__init__(timeout=timeout)
        self.owner_id = owner_id
        self.confirmed: bool | None = None

    @discord.ui.button(label="Confirm", style=discord.ButtonStyle.success, custom_id="rb:confirm:yes")
    async def yes(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        await self._decide(interaction, True)

    @discord.ui.button(label="Cancel", style=discord.ButtonStyle.secondary, custom_id="rb:confirm:no")
    async def no(self, interaction: discord.Interaction, button: discord.ui.Button[ConfirmView]) -> None:
        await self._decide(interaction, False)

    async def _decide(self, interaction: discord.Interaction, confirmed: bool) -> None:
        if interaction.user.id != self.owner_id:
            await interaction.response.send_message("This is not your request.", ephemeral=True)
            return
        self.confirmed = confirmed
        await interaction.response.edit_message(content="Confirmed." if confirmed else "Cancelled.", view=None)
        self.stop()
