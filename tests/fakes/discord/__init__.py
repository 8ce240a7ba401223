"""A loopback fake Discord (REST + gateway + CDN) for the real discord.py client, written from Discord's docs.

Typical test::

    from tests.fakes.discord import FakeDiscord, Permission, running_bot

    async def test_generate(monkeypatch):
        async with FakeDiscord() as fake:
            guild = fake.add_guild("studio")
            channel = guild.add_text_channel("clips")
            alice = fake.add_user("alice")
            guild.add_member(alice)
            bot = make_bot(intents=discord.Intents.default())        # any discord.Client / commands.Bot
            async with running_bot(bot, fake, monkeypatch):           # patches Route.BASE + DEFAULT_GATEWAY
                ix = await fake.slash(alice, channel, "generate", {"prompt": "hi"},
                                      attachments={"image1": ("a.png", png_bytes, "image/png")})
                assert (await ix.response()).type == 5                # deferred within 3 s
                [thread] = await fake.wait_for(lambda: fake.threads)
                [post] = await fake.wait_for(lambda: fake.messages(thread))
                assert post.attachments[0].data == mp4_bytes
            fake.assert_clean()                                       # no violations, no unknown routes

`running_bot` waits for `on_ready` and closes the bot on exit; errors discord.py would only log (an exception
in a command, view or event) fail the block at exit (`raise_errors=False` to inspect `run.errors` instead).

World: `fake.add_user(name)`, `fake.add_guild(name, upload_limit=...)` → `Guild` with `add_text_channel`,
`add_forum_channel`, `add_announcement_channel`, `add_thread`, `add_role(name, permissions)`,
`add_member(user, roles, permissions=...)`, `set_bot_permissions(...)`; `channel.deny_bot(Permission.X)` /
`allow_bot` / `set_overwrite(role_or_member, allow=, deny=)`; `fake.dm_channel(user)`; `user.dms_open = False`.
The bot's role has every permission but ADMINISTRATOR, so overwrites can take single ones away. Changes made
while a bot is connected are dispatched to it (CHANNEL_UPDATE, GUILD_ROLE_UPDATE, THREAD_CREATE, ...).

Members act: `fake.slash(user, channel, "name" or "group sub", {option: value}, attachments=...,
attachment_size_limit=...)`, `fake.click(user, message, custom_id, values=...)`,
`fake.submit_modal(user, channel, custom_id, {field: value})` → an `Interaction` record (`await ix.response()`,
`ix.callbacks`, `ix.original`, `ix.followups`, `ix.response_time`, `ix.payload`). Anything Discord's client
would not send (unsynced command, bad option, missing default_member_permissions, disabled button, a file over
the user's upload limit) raises `NotInvocable`. `FileSpec(name, data, type, size=...)` can claim a bigger size.
As on Discord, the first follow-up after a deferred response fills the "thinking" message (`ix.original`);
only later ones are new messages in `ix.followups`.

Faults: `fake.expire_interaction(ix)` (token → 401 / 50027), `fake.rate_limit_next(method, path_regex, ...)`
(429 with `Via`), `fake.expire_attachment(att)` (CDN 404), `fake.request_reconnect()` (op 7),
`fake.invalidate_session()` (op 9), per-guild / per-interaction upload limits (413 / 40005),
`FakeDiscord(response_deadline=...)` to shorten the 3-second rule in a test.

Observe: `fake.requests`, `fake.messages(channel)` (ephemeral ones too: `.ephemeral`), `fake.message(id)`
(`.edits`, `.attachments[i].data`, `.nonce_replays`), `fake.threads`, `fake.commands(guild)`,
`fake.interactions`, `fake.violations`, `fake.invalid_requests` (401/403/429: Discord's IP-ban counter),
`fake.rate_limit_hits`, `fake.unhandled`, `fake.gateway.identifies / resumes / connections`, and
`await fake.wait_for(lambda: ..., timeout)`.
"""

from __future__ import annotations

from .commands import FileSpec, NotInvocable
from .guilds import Channel, Guild
from .harness import BotRun, point_discord_at, running_bot
from .interactions import Callback, Interaction, Violation
from .models import (
    ALL_PERMISSIONS,
    Attachment,
    ChannelType,
    Member,
    Message,
    Permission,
    Role,
    User,
)
from .ratelimits import RateLimitHit, RateLimitRule
from .server import DEFAULT_UPLOAD_LIMIT, FakeDiscord
from .wire import RecordedRequest

__all__ = [
    "ALL_PERMISSIONS",
    "DEFAULT_UPLOAD_LIMIT",
    "Attachment",
    "BotRun",
    "Callback",
    "Channel",
    "ChannelType",
    "FakeDiscord",
    "FileSpec",
    "Guild",
    "Interaction",
    "Member",
    "Message",
    "NotInvocable",
    "Permission",
    "RateLimitHit",
    "RateLimitRule",
    "RecordedRequest",
    "Role",
    "User",
    "Violation",
    "point_discord_at",
    "running_bot",
]
