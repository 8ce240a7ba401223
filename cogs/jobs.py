"""`/jobs`, `/job id:` and `/cancel id:`."""

from __future__ import annotations

from typing import TYPE_CHECKING

import discord
from discord import app_commands
from discord.ext import commands

from bot.money import fmt_usd
from cogs.views import is_moderator

if TYPE_CHECKING:
    from bot.app import ReelBot


class Jobs(commands.Cog):
    def __init__(self, bot: ReelBot) -> None:
        self.bot = bot

    @app_commands.command(name="jobs", description="Your recent jobs")
    async def jobs(self, interaction: discord.Interaction) -> None:
        recent = await self.bot.app.jobs.list_recent(user_id=str(interaction.user.id), limit=10)
        if not recent:
            await interaction.response.send_message("You have no jobs yet. Try `/generate`.", ephemeral=True)
            return
        lines = []
        for job in recent:
            where = job.delivery.get("channel_id") or job.channel_id
            link = f" — <#{where}>" if where else ""
            lines.append(
                f"`{job.id}` {job.state.value} · {fmt_usd(job.cost_micros)} · {job.request.caption[:60]}{link}"
            )
        await interaction.response.send_message("\n".join(lines), ephemeral=True)

    @app_commands.command(name="job", description="Details of one job")
    @app_commands.describe(id="The job id (from the status message or /jobs)")
    async def job(self, interaction: discord.Interaction, id: str) -> None:
        job = await self.bot.app.jobs.get(id.strip())
        if job is None or (job.user_id != str(interaction.user.id) and not is_moderator(interaction)):
            await interaction.response.send_message(f"No job `{id}` of yours was found.", ephemeral=True)
            return
        await interaction.response.send_message(embed=self.bot.job_embed(job), ephemeral=True)

    @app_commands.command(name="cancel", description="Cancel one of your jobs")
    @app_commands.describe(id="The job id")
    async def cancel(self, interaction: discord.Interaction, id: str) -> None:
        job = await self.bot.engine.cancel(
            id.strip(), actor=str(interaction.user.id), moderator=is_moderator(interaction)
        )
        said = "Cancelled" if job.state.finished else "Cancelling"
        await interaction.response.send_message(f"{said} job `{job.id}`. {job.error_message or ''}".strip(),
                                                ephemeral=True)  # fmt: skip


async def setup(bot: ReelBot) -> None:
    await bot.add_cog(Jobs(bot))
