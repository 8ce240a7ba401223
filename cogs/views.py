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

JOB_ID = r"(?P<job_id>[a-z2-9]{10})"


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


class CancelButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"rb:cancel:{JOB_ID}"):
    def __init__(self, job_id: str) -> None:
        super().__init__(discord.ui.Button(label="Cancel", style=discord.ButtonStyle.danger,
                                           custom_id=f"rb:cancel:{job_id}"))  # fmt: skip
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> CancelButton:
        return cls(match["job_id"])

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


class RerollButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"rb:reroll:{JOB_ID}"):
    def __init__(self, job_id: str) -> None:
        super().__init__(discord.ui.Button(label="Re-roll", emoji="🎲", style=discord.ButtonStyle.primary,
                                           custom_id=f"rb:reroll:{job_id}"))  # fmt: skip
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> RerollButton:
        return cls(match["job_id"])

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


class EditPromptButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"rb:edit:{JOB_ID}"):
    def __init__(self, job_id: str) -> None:
        super().__init__(discord.ui.Button(label="Edit prompt", emoji="✏️", style=discord.ButtonStyle.secondary,
                                           custom_id=f"rb:edit:{job_id}"))  # fmt: skip
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> EditPromptButton:
        return cls(match["job_id"])

    async def callback(self, interaction: discord.Interaction) -> None:
        job = await _job(interaction, self.job_id)
        if job is not None:
            await interaction.response.send_modal(EditPromptModal(job))


class DeleteButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"rb:delete:{JOB_ID}"):
    def __init__(self, job_id: str) -> None:
        super().__init__(discord.ui.Button(label="Delete", emoji="🗑️", style=discord.ButtonStyle.danger,
                                           custom_id=f"rb:delete:{job_id}"))  # fmt: skip
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> DeleteButton:
        return cls(match["job_id"])

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


class InfoButton(discord.ui.DynamicItem[discord.ui.Button[Any]], template=rf"rb:info:{JOB_ID}"):
    def __init__(self, job_id: str) -> None:
        super().__init__(discord.ui.Button(label="Info", emoji="ℹ️", style=discord.ButtonStyle.secondary,
                                           custom_id=f"rb:info:{job_id}"))  # fmt: skip
        self.job_id = job_id

    @classmethod
    async def from_custom_id(
        cls, interaction: discord.Interaction, item: discord.ui.Button[Any], match: re.Match[str]
    ) -> InfoButton:
        return cls(match["job_id"])

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
