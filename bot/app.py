"""The Discord face of reelbot: a discord.py Bot wired to the core, one error handler, sync and run.

The only module under bot/ that imports discord.py; the cogs translate between Discord and the core.
"""

from __future__ import annotations

import logging
import secrets
from typing import Any

import discord
import yarl
from discord import app_commands
from discord.ext import commands

from bot.engine.engine import CannotCancel, Engine, NotAllowed
from bot.ledger import InsufficientQuota
from bot.money import fmt_usd, usd_str
from bot.observe.discord_limits import count_discord_rate_limits
from bot.observe.health import database_check, engine_check, gateway_check
from bot.observe.server import OpsServer, start_ops_server
from bot.providers.base import ProviderError
from bot.request import InvalidRequest
from bot.services import App
from bot.settings import Settings
from bot.store.jobs import Job
from cogs.delivery import DiscordDelivery, StatusEditor
from cogs.messages import describe_request
from cogs.moderation import CARD_ITEMS
from cogs.views import DYNAMIC_ITEMS

log = logging.getLogger(__name__)

EXTENSIONS = ("cogs.generate", "cogs.jobs", "cogs.quota", "cogs.admin")


def point_at(settings: Settings) -> None:
    """DISCORD_API_BASE / DISCORD_GATEWAY_URL: REST through a proxy (nirn-proxy) or a test server."""
    discord.http.Route.BASE = settings.discord_api_base.rstrip("/")
    if settings.discord_gateway_url:
        discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY = yarl.URL(settings.discord_gateway_url)


class ReelTree(app_commands.CommandTree["ReelBot"]):
    """Every expected error gets a specific ephemeral answer; anything else is logged with its context and
    the member gets a short reference. Never answers an interaction twice."""

    async def on_error(self, interaction: discord.Interaction, error: app_commands.AppCommandError) -> None:
        original = getattr(error, "original", error)
        if isinstance(original, InvalidRequest):
            message = "I can't make that clip:\n" + "\n".join(f"- {v}" for v in original.violations)
        elif isinstance(original, InsufficientQuota):
            message = f"Not enough quota: {original}. Nothing was charged."
        elif isinstance(original, NotAllowed | CannotCancel):
            message = str(original)
        elif isinstance(original, ProviderError):
            message = f"The provider refused: {original.plain}. Nothing was charged."
        elif isinstance(error, app_commands.BotMissingPermissions):
            message = f"I'm missing permissions here: {', '.join(error.missing_permissions)}."
        elif isinstance(error, app_commands.NoPrivateMessage):
            message = "This command works in servers, not in direct messages."
        elif isinstance(error, app_commands.CheckFailure):
            message = str(error) or "You can't use this command here."
        else:
            reference = secrets.token_hex(4)
            command = interaction.command.qualified_name if interaction.command else "?"
            log.error(
                "command %s failed (ref %s) user=%s guild=%s options=%s",
                command, reference, interaction.user.id, interaction.guild_id, interaction.namespace.__dict__,
                exc_info=original,
            )  # fmt: skip
            message = f"Something went wrong on my side (reference `{reference}`). Nothing was charged."
        await self.tell(interaction, message)

    @staticmethod
    async def tell(interaction: discord.Interaction, message: str) -> None:
        if interaction.is_expired():
            return  # the token is dead: using it would only earn 401s
        try:
            if interaction.response.is_done():
                await interaction.followup.send(message, ephemeral=True)
            else:
                await interaction.response.send_message(message, ephemeral=True)
        except discord.HTTPException as exc:
            log.info("could not report an error to %s: %s", interaction.user.id, exc)


class ReelBot(commands.Bot):
    app: App
    engine: Engine

    def __init__(self, app: App, *, run_engine: bool = True, **options: Any) -> None:
        options.setdefault("intents", discord.Intents.default())
        options.setdefault("allowed_mentions", discord.AllowedMentions(everyone=False, roles=False, users=True))
        super().__init__(command_prefix=commands.when_mentioned, tree_cls=ReelTree, **options)
        self.app = app
        self.run_engine = run_engine
        self.status_editor = StatusEditor(self)
        self.ops: OpsServer | None = None
        self._stop_counting_429s = lambda: None

    async def setup_hook(self) -> None:
        for extension in EXTENSIONS:
            await self.load_extension(extension)
        self.add_dynamic_items(*DYNAMIC_ITEMS, *CARD_ITEMS)
        self.engine = self.app.engine(lambda job: DiscordDelivery(self, job))
        self.engine.on_spend_cap_reached = self.tell_owners_spend_cap
        settings = self.app.settings
        if settings.dev_guild:
            guild = discord.Object(settings.dev_guild)
            self.tree.copy_global_to(guild=guild)
            await self.tree.sync(guild=guild)  # a dev guild only: never a global sync on every start
        if self.run_engine:
            await self.engine.start()
            # Operations: 429s counted from discord.py's own log records; /healthz and /metrics when
            # REELBOT_HTTP_PORT is set (the gateway check fails until READY, which is the truth).
            self._stop_counting_429s = count_discord_rate_limits(self.app.metrics)
            checks = [gateway_check(self), database_check(self.app.db), engine_check(self.engine)]
            self.ops = await start_ops_server(settings, self.app.metrics, self.app.jobs, checks)

    async def close(self) -> None:
        if self.ops is not None:
            await self.ops.stop()
        self._stop_counting_429s()
        await self.status_editor.close()
        if self.run_engine:
            await self.engine.stop()
        await super().close()

    async def tell_owners_spend_cap(self, refused: Any) -> None:
        """Called once per UTC day (the core guarantees it) when the daily spend cap first refuses a job."""
        for owner in self.app.settings.owner_ids:
            try:
                user = await self.fetch_user(int(owner))
                await user.send(refused.owner_message())
            except (discord.HTTPException, ValueError) as exc:
                log.warning("could not tell owner %s about the spend cap: %s", owner, exc)

    @property
    def generate(self) -> Any:
        return self.get_cog("Generate")

    def job_embed(self, job: Job) -> discord.Embed:
        provider = self.app.provider(job.provider)
        request = job.request
        embed = discord.Embed(title=f"Job {job.id}", description=request.caption[:1000])
        embed.add_field(name="State", value=job.state.value)
        embed.add_field(name="Provider", value=provider.display_name + (" (preview)" if provider.is_preview else ""))
        embed.add_field(name="Parameters", value=describe_request(request), inline=False)
        estimate = " (estimate)" if job.price_is_estimate else ""
        embed.add_field(name="Cost", value=f"{fmt_usd(job.cost_micros)}{estimate}")
        embed.add_field(name="Charged", value=f"${usd_str(job.charged_micros)}")
        embed.add_field(name="Owner", value=f"<@{job.user_id}>")
        embed.add_field(name="Created", value=job.created_at)
        if job.error_message:
            embed.add_field(name="Why it ended", value=job.error_message[:1000], inline=False)
        return embed


async def run(settings: Settings) -> None:
    """`reelbot run`: the bot, the engine and the core in one process until stopped."""
    from bot.services import open_app

    if settings.discord_token is None:
        from bot.settings import SettingsError

        raise SettingsError("DISCORD_TOKEN must be set to run the bot")
    point_at(settings)
    async with open_app(settings) as app, ReelBot(app) as bot:
        await bot.start(settings.discord_token.get_secret_value())


async def sync(settings: Settings, guild_id: int | None) -> list[str]:
    """`reelbot sync [--guild ID]`: publish the slash commands on demand."""
    from bot.services import open_app
    from bot.settings import SettingsError

    if settings.discord_token is None:
        raise SettingsError("DISCORD_TOKEN must be set to sync commands")
    point_at(settings)
    async with open_app(settings) as app, ReelBot(app, run_engine=False) as bot:
        await bot.login(settings.discord_token.get_secret_value())
        guild = discord.Object(guild_id) if guild_id else None
        if guild is not None:
            bot.tree.copy_global_to(guild=guild)
        synced = await bot.tree.sync(guild=guild)
        return [command.name for command in synced]
