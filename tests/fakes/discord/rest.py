"""Bot-token REST endpoints: login, command sync, channels, messages, threads, guilds, DMs.

Each answer has the documented object shape; each refusal the documented status and JSON code (missing
permissions are checked with the same computation that fills `app_permissions`).
"""

from __future__ import annotations

from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .commands import CHAT_INPUT, check_command, stored_command
from .guilds import Channel
from .messages import (
    CREATE_FLAGS,
    EDIT_FLAGS,
    apply_edit,
    attachments_for,
    check_body,
    check_uploads,
    is_empty,
    numbered,
)
from .models import (
    ARCHIVE_DURATIONS,
    DM_PERMISSIONS,
    MESSAGE_FLAG_LOADING,
    Attachment,
    ChannelType,
    Message,
    Permission,
)
from .wire import (
    CANNOT_DM,
    EMPTY_MESSAGE,
    MISSING_ACCESS,
    MISSING_PERMISSIONS,
    NOT_AUTHOR,
    THREAD_EXISTS,
    THREAD_LOCKED,
    UNKNOWN_MEMBER,
    UNKNOWN_MESSAGE,
    UNKNOWN_USER,
    WRONG_CHANNEL_TYPE,
    ApiError,
    RecordedRequest,
    Upload,
    form_error,
    json_response,
)

if TYPE_CHECKING:
    from .server import FakeDiscord

Route = tuple[str, str, Callable[..., Awaitable[web.StreamResponse]], str]
TEXT_TYPES = {ChannelType.GUILD_TEXT, ChannelType.GUILD_ANNOUNCEMENT}
FORUM_TYPES = {ChannelType.GUILD_FORUM, ChannelType.GUILD_MEDIA}


def no_content() -> web.Response:
    return web.Response(status=204)


def missing_permissions() -> ApiError:
    return ApiError(403, MISSING_PERMISSIONS, "Missing Permissions")


def missing_access() -> ApiError:
    return ApiError(403, MISSING_ACCESS, "Missing Access")


class Rest:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def routes(self) -> list[Route]:
        return [
            ("GET", "/gateway", self.get_gateway, "none"),
            ("GET", "/gateway/bot", self.get_gateway_bot, "bot"),
            ("GET", "/users/@me", self.get_me, "bot"),
            ("GET", "/users/{user_id}", self.get_user, "bot"),
            ("POST", "/users/@me/channels", self.create_dm, "bot"),
            ("GET", "/oauth2/applications/@me", self.get_application, "bot"),
            ("GET", "/applications/@me", self.get_application, "bot"),
            ("PUT", "/applications/{app_id}/commands", self.put_commands, "bot"),
            ("GET", "/applications/{app_id}/commands", self.get_commands, "bot"),
            ("PUT", "/applications/{app_id}/guilds/{guild_id}/commands", self.put_commands, "bot"),
            ("GET", "/applications/{app_id}/guilds/{guild_id}/commands", self.get_commands, "bot"),
            ("GET", "/channels/{channel_id}", self.get_channel, "bot"),
            ("PATCH", "/channels/{channel_id}", self.edit_channel, "bot"),
            ("POST", "/channels/{channel_id}/typing", self.typing, "bot"),
            ("GET", "/channels/{channel_id}/messages", self.history, "bot"),
            ("POST", "/channels/{channel_id}/messages", self.create_message, "bot"),
            ("GET", "/channels/{channel_id}/messages/{message_id}", self.get_message, "bot"),
            ("PATCH", "/channels/{channel_id}/messages/{message_id}", self.edit_message, "bot"),
            ("DELETE", "/channels/{channel_id}/messages/{message_id}", self.delete_message, "bot"),
            ("POST", "/channels/{channel_id}/messages/{message_id}/threads", self.thread_from_message, "bot"),
            ("POST", "/channels/{channel_id}/threads", self.create_thread, "bot"),
            ("PUT", "/channels/{channel_id}/thread-members/{user_id}", self.join_thread, "bot"),
            ("DELETE", "/channels/{channel_id}/thread-members/{user_id}", self.leave_thread, "bot"),
            ("GET", "/guilds/{guild_id}", self.get_guild, "bot"),
            ("GET", "/guilds/{guild_id}/channels", self.get_guild_channels, "bot"),
            ("GET", "/guilds/{guild_id}/roles", self.get_roles, "bot"),
            ("GET", "/guilds/{guild_id}/threads/active", self.active_threads, "bot"),
            ("GET", "/guilds/{guild_id}/members/{user_id}", self.get_member, "bot"),
        ]

    # --- login and gateway ------------------------------------------------------------------------

    async def get_gateway(self, req: RecordedRequest) -> web.Response:
        return json_response({"url": self.fake.gateway_url})

    async def get_gateway_bot(self, req: RecordedRequest) -> web.Response:
        limit = {
            "total": 1000,
            "remaining": 1000 - self.fake.gateway.identifies,
            "reset_after": 86_400_000,
            "max_concurrency": 1,
        }
        return json_response({"url": self.fake.gateway_url, "shards": 1, "session_start_limit": limit})

    async def get_me(self, req: RecordedRequest) -> web.Response:
        return json_response({**self.fake.bot_user.payload(), "verified": True, "mfa_enabled": False})

    async def get_user(self, req: RecordedRequest, user_id: str) -> web.Response:
        user = self.fake.users.get(int(user_id))
        if user is None:
            raise ApiError(404, UNKNOWN_USER, "Unknown User")
        return json_response(user.payload())

    async def create_dm(self, req: RecordedRequest) -> web.Response:
        user = self.fake.users.get(int((req.json or {}).get("recipient_id", 0)))
        if user is None:
            raise ApiError(400, UNKNOWN_USER, "Unknown User")
        return json_response(self.fake.dm_channel(user).payload())

    async def get_application(self, req: RecordedRequest) -> web.Response:
        fake = self.fake
        return json_response(
            {
                "id": str(fake.application_id),
                "name": fake.bot_user.username,
                "icon": None,
                "description": "",
                "summary": "",
                "bot_public": True,
                "bot_require_code_grant": False,
                "owner": fake.owner.payload(),
                "team": None,
                "verify_key": "0" * 64,
                "flags": 0,
                "bot": fake.bot_user.payload(),
                "approximate_guild_count": len(fake.guilds),
                "rpc_origins": [],
                "tags": [],
                "redirect_uris": [],
                "interactions_endpoint_url": None,
                "integration_types_config": {"0": {}},
            }
        )

    # --- application commands ---------------------------------------------------------------------

    def _command_scope(self, app_id: str, guild_id: str | None) -> int | None:
        if int(app_id) != self.fake.application_id:
            raise ApiError(403, MISSING_ACCESS, "Missing Access")
        if guild_id is None:
            return None
        return self.fake.guild(int(guild_id)).id

    async def put_commands(self, req: RecordedRequest, app_id: str, guild_id: str | None = None) -> web.Response:
        scope = self._command_scope(app_id, guild_id)
        commands = req.json
        if not isinstance(commands, list):
            raise form_error("_", "Expected an array of application commands", "BASE_TYPE_ARRAY")
        seen: set[tuple[str, int]] = set()
        for index, command in enumerate(commands):
            check_command(index, command)
            key = (command["name"], command.get("type", CHAT_INPUT))
            if key in seen:
                raise form_error(
                    f"{index}.name", "Application command names must be unique", "APPLICATION_COMMANDS_DUPLICATE_NAME"
                )
            seen.add(key)
        if sum(1 for c in commands if c.get("type", CHAT_INPUT) == CHAT_INPUT) > 100:
            raise form_error("_", "Maximum number of application commands reached (100)")
        stored = [
            stored_command(
                command,
                command_id=self.fake.command_id(scope, command["name"], command.get("type", CHAT_INPUT)),
                application_id=self.fake.application_id,
                version=self.fake.next_id(),
                guild_id=scope,
            )
            for command in commands
        ]
        self.fake.store_commands(scope, stored)
        return json_response(stored)

    async def get_commands(self, req: RecordedRequest, app_id: str, guild_id: str | None = None) -> web.Response:
        return json_response(self.fake.commands(self._command_scope(app_id, guild_id)))

    # --- channels ----------------------------------------------------------------------------------

    def _visible_channel(self, channel_id: str) -> Channel:
        channel = self.fake.channel(int(channel_id))
        if channel.guild is not None and not channel.bot_permissions() & Permission.VIEW_CHANNEL:
            raise missing_access()
        if channel.type == ChannelType.PRIVATE_THREAD:
            perms = channel.bot_permissions()
            if self.fake.bot_user.id not in channel.thread_members and not perms & Permission.MANAGE_THREADS:
                raise missing_access()
        return channel

    def _permissions(self, channel: Channel) -> int:
        return channel.bot_permissions() if channel.guild is not None else DM_PERMISSIONS

    async def get_channel(self, req: RecordedRequest, channel_id: str) -> web.Response:
        return json_response(self._visible_channel(channel_id).payload())

    async def edit_channel(self, req: RecordedRequest, channel_id: str) -> web.Response:
        channel = self._visible_channel(channel_id)
        body = req.json or {}
        perms = self._permissions(channel)
        if channel.is_thread:
            owner = channel.owner_id == self.fake.bot_user.id
            if not (owner or perms & Permission.MANAGE_THREADS) or (
                "locked" in body and not perms & Permission.MANAGE_THREADS
            ):
                raise missing_permissions()
            if "auto_archive_duration" in body and body["auto_archive_duration"] not in ARCHIVE_DURATIONS:
                raise form_error("auto_archive_duration", f"Must be one of {sorted(ARCHIVE_DURATIONS)}")
            for key in ("name", "archived", "locked", "auto_archive_duration", "invitable", "rate_limit_per_user"):
                if key in body:
                    setattr(channel, key, body[key])
            event = "THREAD_UPDATE"
        else:
            if not perms & Permission.MANAGE_CHANNELS:
                raise missing_permissions()
            for key in ("name", "topic", "nsfw", "rate_limit_per_user"):
                if key in body:
                    setattr(channel, key, body[key])
            event = "CHANNEL_UPDATE"
        await self.fake.emit(event, channel.payload(), channel.guild)
        return json_response(channel.payload())

    async def typing(self, req: RecordedRequest, channel_id: str) -> web.Response:
        self._visible_channel(channel_id)
        return no_content()

    # --- messages ----------------------------------------------------------------------------------

    def _make_attachment(self, channel: Channel) -> Callable[[Upload, dict[str, Any]], Attachment]:
        def make(upload: Upload, meta: dict[str, Any]) -> Attachment:
            return self.fake.new_attachment(upload, channel, meta=meta)

        return make

    def _upload_limit(self, channel: Channel) -> int:
        return channel.guild.upload_limit if channel.guild is not None else self.fake.upload_limit

    def _check_can_send(self, channel: Channel, *, files: bool) -> None:
        if channel.is_dm:
            if not channel.recipients[0].dms_open:
                raise ApiError(403, CANNOT_DM, "Cannot send messages to this user")
            return
        if channel.type in FORUM_TYPES or channel.type == ChannelType.GUILD_CATEGORY:
            raise ApiError(400, 50008, "Cannot send messages in a non-text channel")
        perms = self._visible_channel(str(channel.id)).bot_permissions()
        needed = Permission.SEND_MESSAGES_IN_THREADS if channel.is_thread else Permission.SEND_MESSAGES
        if not perms & needed or (files and not perms & Permission.ATTACH_FILES):
            raise missing_permissions()
        if channel.is_thread and channel.locked and not perms & Permission.MANAGE_THREADS:
            raise ApiError(403, THREAD_LOCKED, "Thread is locked")

    async def history(self, req: RecordedRequest, channel_id: str) -> web.Response:
        channel = self._visible_channel(channel_id)
        if not self._permissions(channel) & Permission.READ_MESSAGE_HISTORY:
            return json_response([])
        found = [m for m in channel.live_messages() if not m.ephemeral]
        if "before" in req.query:
            found = [m for m in found if m.id < int(req.query["before"])]
        if "after" in req.query:
            found = [m for m in found if m.id > int(req.query["after"])]
        limit = int(req.query.get("limit", 50))
        newest_first = list(reversed(found))[:limit]
        return json_response([m.payload() for m in newest_first])

    async def create_message(self, req: RecordedRequest, channel_id: str) -> web.Response:
        fake = self.fake
        channel = fake.channel(int(channel_id))
        body = req.json or {}
        self._check_can_send(channel, files=bool(req.files))
        check_body(body, allowed_flags=CREATE_FLAGS)
        if is_empty(body, req.files):
            raise ApiError(400, EMPTY_MESSAGE, "Cannot send an empty message")
        check_uploads(req.files, self._upload_limit(channel))
        nonce = body.get("nonce")
        if nonce is not None and body.get("enforce_nonce"):
            earlier = fake.nonce_lookup(channel, str(nonce))
            if earlier is not None:  # "that message will be returned and no new message will be created"
                earlier.nonce_replays += 1
                return json_response(earlier.payload())
        reference = body.get("message_reference")
        if reference is not None:
            referenced = fake.message(int(reference["message_id"]))
            if referenced.channel is not channel or referenced.deleted:
                raise form_error("message_reference", "Unknown message", "MESSAGE_REFERENCE_UNKNOWN_MESSAGE")
        message = Message(
            fake.next_id(),
            channel,
            fake.bot_user,
            content=body.get("content") or "",
            embeds=body.get("embeds") or [],
            components=numbered(body.get("components") or []),
            flags=int(body.get("flags") or 0),
            tts=bool(body.get("tts")),
            nonce=str(nonce) if nonce is not None else None,
            type=19 if reference else 0,
            reference=reference,
        )
        message.attachments = attachments_for(body, req.files, self._make_attachment(channel))
        fake.store_message(message)
        if nonce is not None:
            fake.nonce_remember(channel, str(nonce), message)
        if channel.is_thread and channel.archived:
            channel.archived = False  # a new message un-archives an unlocked thread
        await self.emit_message("MESSAGE_CREATE", message)
        return json_response(message.payload())

    async def emit_message(self, event: str, message: Message) -> None:
        if message.ephemeral:
            return  # ephemeral messages are never dispatched to the bot
        data = message.payload()
        guild = message.channel.guild
        if guild is not None and message.author.id in guild.members:
            data["member"] = guild.members[message.author.id].payload(with_user=False)
        await self.fake.emit(event, data, guild)

    def _channel_message(self, channel: Channel, message_id: str) -> Message:
        message = self.fake.message(int(message_id))
        if message.channel is not channel or message.deleted or message.ephemeral:
            raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")
        return message

    async def get_message(self, req: RecordedRequest, channel_id: str, message_id: str) -> web.Response:
        channel = self._visible_channel(channel_id)
        if not self._permissions(channel) & Permission.READ_MESSAGE_HISTORY:
            raise missing_access()
        return json_response(self._channel_message(channel, message_id).payload())

    async def edit_message(self, req: RecordedRequest, channel_id: str, message_id: str) -> web.Response:
        channel = self._visible_channel(channel_id)
        message = self._channel_message(channel, message_id)
        body = req.json or {}
        if message.author.id != self.fake.bot_user.id:
            raise ApiError(403, NOT_AUTHOR, "Cannot edit a message authored by another user")
        if req.files and not self._permissions(channel) & Permission.ATTACH_FILES:
            raise missing_permissions()
        check_body(body, allowed_flags=EDIT_FLAGS)
        check_uploads(req.files, self._upload_limit(channel))
        attachments = attachments_for(body, req.files, self._make_attachment(channel), message.attachments)
        apply_edit(message, body, attachments)
        message.flags &= ~MESSAGE_FLAG_LOADING
        message.edited_at = datetime.now(UTC)
        await self.emit_message("MESSAGE_UPDATE", message)
        return json_response(message.payload())

    async def delete_message(self, req: RecordedRequest, channel_id: str, message_id: str) -> web.Response:
        channel = self._visible_channel(channel_id)
        message = self._channel_message(channel, message_id)
        own = message.author.id == self.fake.bot_user.id
        if not own and not self._permissions(channel) & Permission.MANAGE_MESSAGES:
            raise missing_permissions()
        message.deleted = True
        data = {"id": str(message.id), "channel_id": str(channel.id)}
        if channel.guild is not None:
            data["guild_id"] = str(channel.guild.id)
        await self.fake.emit("MESSAGE_DELETE", data, channel.guild)
        return no_content()

    # --- threads -----------------------------------------------------------------------------------

    @staticmethod
    def _thread_settings(body: dict[str, Any]) -> tuple[str, int]:
        name = body.get("name")
        if not isinstance(name, str) or not (1 <= len(name) <= 100):
            raise form_error("name", "Must be between 1 and 100 in length.", "BASE_TYPE_BAD_LENGTH")
        duration = body.get("auto_archive_duration") or 1440
        if duration not in ARCHIVE_DURATIONS:
            raise form_error("auto_archive_duration", f"Must be one of {sorted(ARCHIVE_DURATIONS)}")
        return name, duration

    async def thread_from_message(self, req: RecordedRequest, channel_id: str, message_id: str) -> web.Response:
        channel = self._visible_channel(channel_id)
        if channel.type not in TEXT_TYPES:
            raise ApiError(400, WRONG_CHANNEL_TYPE, "Cannot execute action on this channel type")
        if not channel.bot_permissions() & Permission.CREATE_PUBLIC_THREADS:
            raise missing_permissions()
        message = self._channel_message(channel, message_id)
        if message.thread is not None:
            raise ApiError(400, THREAD_EXISTS, "A thread has already been created for this message")
        body = req.json or {}
        name, duration = self._thread_settings(body)
        kind = (
            ChannelType.ANNOUNCEMENT_THREAD
            if channel.type == ChannelType.GUILD_ANNOUNCEMENT
            else ChannelType.PUBLIC_THREAD
        )
        assert channel.guild is not None
        thread = channel.guild.new_thread(
            channel, name, kind, self.fake.bot_user, thread_id=message.id, auto_archive_duration=duration
        )
        thread.rate_limit_per_user = body.get("rate_limit_per_user") or 0
        message.thread = thread
        await self.fake.emit("THREAD_CREATE", {**thread.payload(), "newly_created": True}, channel.guild)
        return json_response(thread.payload(), status=201)

    async def create_thread(self, req: RecordedRequest, channel_id: str) -> web.Response:
        channel = self._visible_channel(channel_id)
        body = req.json or {}
        perms = channel.bot_permissions() if channel.guild is not None else 0
        if channel.type in FORUM_TYPES:
            return await self._forum_post(req, channel, body, perms)
        if channel.type not in TEXT_TYPES:
            raise ApiError(400, WRONG_CHANNEL_TYPE, "Cannot execute action on this channel type")
        name, duration = self._thread_settings(body)
        kind = ChannelType(body.get("type") or ChannelType.PRIVATE_THREAD)  # documented default: private
        needed = (
            Permission.CREATE_PRIVATE_THREADS
            if kind == ChannelType.PRIVATE_THREAD
            else Permission.CREATE_PUBLIC_THREADS
        )
        if kind not in (ChannelType.PUBLIC_THREAD, ChannelType.PRIVATE_THREAD, ChannelType.ANNOUNCEMENT_THREAD):
            raise form_error("type", f"Invalid thread type {int(kind)}")
        if not perms & needed:
            raise missing_permissions()
        assert channel.guild is not None
        thread = channel.guild.new_thread(channel, name, kind, self.fake.bot_user, auto_archive_duration=duration)
        thread.invitable = bool(body.get("invitable", True))
        thread.rate_limit_per_user = body.get("rate_limit_per_user") or 0
        await self.fake.emit("THREAD_CREATE", {**thread.payload(), "newly_created": True}, channel.guild)
        return json_response(thread.payload(), status=201)

    async def _forum_post(self, req: RecordedRequest, forum: Channel, body: dict[str, Any], perms: int) -> web.Response:
        """A forum/media post: the thread and its first message (same id) in one request."""
        if not perms & Permission.SEND_MESSAGES or (req.files and not perms & Permission.ATTACH_FILES):
            raise missing_permissions()
        name, duration = self._thread_settings(body)
        first = body.get("message")
        if not isinstance(first, dict):
            raise form_error("message", "A forum post needs a first message", "BASE_TYPE_REQUIRED")
        check_body(first, allowed_flags=CREATE_FLAGS)
        if is_empty(first, req.files):
            raise ApiError(400, EMPTY_MESSAGE, "Cannot send an empty message")
        check_uploads(req.files, self._upload_limit(forum))
        assert forum.guild is not None
        thread = forum.guild.new_thread(
            forum, name, ChannelType.PUBLIC_THREAD, self.fake.bot_user, auto_archive_duration=duration
        )
        thread.applied_tags = [str(t) for t in body.get("applied_tags") or []]
        message = Message(
            thread.id,
            thread,
            self.fake.bot_user,
            content=first.get("content") or "",
            embeds=first.get("embeds") or [],
            components=numbered(first.get("components") or []),
            flags=int(first.get("flags") or 0),
        )
        message.attachments = attachments_for(first, req.files, self._make_attachment(thread))
        self.fake.store_message(message)
        await self.fake.emit("THREAD_CREATE", {**thread.payload(), "newly_created": True}, forum.guild)
        await self.emit_message("MESSAGE_CREATE", message)
        return json_response({**thread.payload(), "message": message.payload()}, status=201)

    async def join_thread(self, req: RecordedRequest, channel_id: str, user_id: str) -> web.Response:
        thread = self._visible_channel(channel_id)
        if not thread.is_thread:
            raise ApiError(400, WRONG_CHANNEL_TYPE, "Cannot execute action on this channel type")
        if user_id == "@me":
            thread.thread_members.add(self.fake.bot_user.id)
        else:
            assert thread.guild is not None
            if int(user_id) not in thread.guild.members:
                raise ApiError(404, UNKNOWN_MEMBER, "Unknown Member")
            thread.thread_members.add(int(user_id))
        return no_content()

    async def leave_thread(self, req: RecordedRequest, channel_id: str, user_id: str) -> web.Response:
        thread = self._visible_channel(channel_id)
        thread.thread_members.discard(self.fake.bot_user.id if user_id == "@me" else int(user_id))
        return no_content()

    # --- guilds --------------------------------------------------------------------------------------

    async def get_guild(self, req: RecordedRequest, guild_id: str) -> web.Response:
        guild = self.fake.guild(int(guild_id))
        data = guild.payload()
        if req.query.get("with_counts") in ("true", "1"):
            data.update(approximate_member_count=len(guild.members), approximate_presence_count=0)
        return json_response(data)

    async def get_guild_channels(self, req: RecordedRequest, guild_id: str) -> web.Response:
        guild = self.fake.guild(int(guild_id))
        return json_response([c.payload() for c in guild.channels if not c.is_thread])

    async def get_roles(self, req: RecordedRequest, guild_id: str) -> web.Response:
        return json_response([r.payload() for r in self.fake.guild(int(guild_id)).roles.values()])

    async def active_threads(self, req: RecordedRequest, guild_id: str) -> web.Response:
        guild = self.fake.guild(int(guild_id))
        return json_response({"threads": [t.payload() for t in guild.threads if not t.archived], "members": []})

    async def get_member(self, req: RecordedRequest, guild_id: str, user_id: str) -> web.Response:
        member = self.fake.guild(int(guild_id)).members.get(int(user_id))
        if member is None:
            raise ApiError(404, UNKNOWN_MEMBER, "Unknown Member")
        return json_response(member.payload())
