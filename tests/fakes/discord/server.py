"""`FakeDiscord`: the loopback server (REST under /api/v10, gateway at /gateway, CDN at /cdn) and its test API."""

from __future__ import annotations

import asyncio
import json
import re
import secrets
import time
import urllib.parse
from collections.abc import Awaitable, Callable
from typing import Any, TypeVar

from aiohttp import web
from aiohttp.test_utils import TestServer

from .commands import FileSpec, Invoker, NotInvocable, build_options, check_invocable, modal_answers
from .gateway import (
    INTENT_DIRECT_MESSAGES,
    INTENT_GUILD_MEMBERS,
    INTENT_GUILD_MESSAGES,
    INTENT_GUILDS,
    Gateway,
    Session,
)
from .guilds import Channel, Guild
from .interactions import (
    APPLICATION_COMMAND,
    MESSAGE_COMPONENT,
    MODAL,
    MODAL_SUBMIT,
    RESPONSE_DEADLINE_S,
    Interaction,
    Violation,
    owners,
)
from .models import DM_PERMISSIONS, Attachment, ChannelType, Message, User, walk_components
from .ratelimits import RateLimitHit, RateLimitRule, too_many_requests
from .rest import Rest
from .webhooks import Webhooks
from .wire import (
    API_PREFIX,
    ApiError,
    RecordedRequest,
    Snowflakes,
    Upload,
    error_response,
    guess_type,
    parse_body,
)

DEFAULT_UPLOAD_LIMIT = 10 * 1024 * 1024  # 10 MiB for bots since 2025-01-16 (20 MiB from ~2026-09: pass it in)
NONCE_WINDOW_S = 300.0  # "checked for uniqueness in the past few minutes"

T = TypeVar("T")
Handler = Callable[..., Awaitable[web.StreamResponse]]


class FakeDiscord:
    """A loopback Discord for the real discord.py client. See the package docstring for a tour."""

    def __init__(
        self,
        token: str = "fake-bot-token",
        *,
        bot_name: str = "reelbot",
        upload_limit: int = DEFAULT_UPLOAD_LIMIT,
        privileged_intents: int = 0,
        response_deadline: float = RESPONSE_DEADLINE_S,
    ) -> None:
        self.token = token
        self.upload_limit = upload_limit
        self.privileged_intents = privileged_intents  # approved in the "developer portal"; others → close 4014
        self.response_deadline = response_deadline
        self.nonce_window = NONCE_WINDOW_S
        self._ids = Snowflakes()
        self.bot_user = User(self.next_id(), bot_name, bot=True)
        self.application_id = self.bot_user.id  # modern apps: application id == bot user id
        self.owner = User(self.next_id(), "app-owner")
        self.users: dict[int, User] = {u.id: u for u in (self.bot_user, self.owner)}
        self.guilds: list[Guild] = []
        self.dm_channels: dict[int, Channel] = {}
        self._messages: dict[int, Message] = {}
        self._commands: dict[int | None, list[dict[str, Any]]] = {}
        self._command_ids: dict[tuple[int | None, str, int], int] = {}
        self.interactions: list[Interaction] = []
        self._by_token: dict[str, Interaction] = {}
        self._nonces: dict[tuple[int, str], tuple[Message, float]] = {}
        self._cdn: dict[str, Attachment] = {}

        # What tests look at.
        self.requests: list[RecordedRequest] = []
        self.violations: list[Violation] = []
        self.unhandled: list[tuple[str, str]] = []
        self.invalid_requests: list[RecordedRequest] = []  # 401/403/429: what Discord's IP ban counts
        self.rate_limit_hits: list[RateLimitHit] = []
        self.cdn_requests: list[str] = []

        self.gateway = Gateway(self)
        self._rules: list[RateLimitRule] = []
        self._server: TestServer | None = None
        self._tasks: set[asyncio.Task[Any]] = set()
        self._timers: list[asyncio.TimerHandle] = []

    # --- lifecycle ------------------------------------------------------------------------------

    async def start(self) -> FakeDiscord:
        app = web.Application(client_max_size=1024**3)
        for method, path, handler, auth in [*Rest(self).routes(), *Webhooks(self).routes()]:
            app.router.add_route(method, API_PREFIX + path, self._endpoint(handler, auth))
        app.router.add_route("*", API_PREFIX + "/{tail:.*}", self._endpoint(self._unknown_route, "none"))
        app.router.add_get("/gateway", self.gateway.handle)
        app.router.add_get("/cdn/{path:.*}", self._cdn_get)
        self._server = TestServer(app, host="127.0.0.1", port=0)
        await self._server.start_server()
        return self

    async def stop(self) -> None:
        for timer in self._timers:
            timer.cancel()
        await self.gateway.close_all()
        if self._tasks:
            await asyncio.gather(*self._tasks, return_exceptions=True)
        if self._server is not None:
            await self._server.close()
            self._server = None

    async def __aenter__(self) -> FakeDiscord:
        return await self.start()

    async def __aexit__(self, *exc: object) -> None:
        await self.stop()

    @property
    def base_url(self) -> str:
        if self._server is None:
            raise RuntimeError("FakeDiscord is not started")
        return f"http://127.0.0.1:{self._server.port}"

    @property
    def api_base(self) -> str:
        """For `discord.http.Route.BASE`."""
        return self.base_url + API_PREFIX

    @property
    def gateway_url(self) -> str:
        """For `discord.gateway.DiscordWebSocket.DEFAULT_GATEWAY` (also READY's `resume_gateway_url`)."""
        return self.base_url.replace("http://", "ws://") + "/gateway"

    # --- world building ----------------------------------------------------------------------------

    def next_id(self) -> int:
        return self._ids.next()

    def add_user(self, name: str, *, bot: bool = False) -> User:
        user = User(self.next_id(), name, bot=bot)
        self.users[user.id] = user
        return user

    def add_guild(self, name: str, *, owner: User | None = None, upload_limit: int | None = None) -> Guild:
        """A guild the bot is in, with @everyone and the bot's managed role (all permissions but ADMINISTRATOR)."""
        guild = Guild(self.next_id(), name, owner or self.owner, self, self.bot_user, upload_limit or self.upload_limit)
        self.guilds.append(guild)
        self.notify("GUILD_CREATE", guild.gateway_payload(with_members=False), None)
        return guild

    def dm_channel(self, user: User) -> Channel:
        """The bot's DM channel with `user` (created on first use, as POST /users/@me/channels does)."""
        if user.id not in self.dm_channels:
            self.dm_channels[user.id] = Channel(self.next_id(), ChannelType.DM, None, None, self, recipients=[user])
        return self.dm_channels[user.id]

    # --- lookups ------------------------------------------------------------------------------------

    def guild(self, guild_id: int) -> Guild:
        for guild in self.guilds:
            if guild.id == guild_id:
                return guild
        raise ApiError(404, 10004, "Unknown Guild")

    def channel(self, channel_id: int) -> Channel:
        for guild in self.guilds:
            for channel in guild.channels:
                if channel.id == channel_id:
                    return channel
        for channel in self.dm_channels.values():
            if channel.id == channel_id:
                return channel
        raise ApiError(404, 10003, "Unknown Channel")

    def message(self, message_id: int) -> Message:
        try:
            return self._messages[message_id]
        except KeyError:
            raise ApiError(404, 10008, "Unknown Message") from None

    def messages(self, channel: Channel | int, *, include_deleted: bool = False) -> list[Message]:
        """Messages in a channel, oldest first (ephemeral ones included: check `.ephemeral`)."""
        target = channel if isinstance(channel, Channel) else self.channel(channel)
        return list(target.messages) if include_deleted else target.live_messages()

    @property
    def threads(self) -> list[Channel]:
        return [thread for guild in self.guilds for thread in guild.threads]

    def commands(self, guild: Guild | int | None = None) -> list[dict[str, Any]]:
        """The commands the bot synced globally (guild=None) or to a guild, as Discord stores them."""
        key = guild.id if isinstance(guild, Guild) else guild
        return self._commands.get(key, [])

    def assert_clean(self) -> None:
        """No rule violations and no request the fake didn't know (call at the end of a test)."""
        problems = [f"violation {v.kind}: {v.detail}" for v in self.violations]
        problems += [f"unhandled {method} {path}" for method, path in self.unhandled]
        assert not problems, "fake Discord saw:\n" + "\n".join(problems)

    def interaction(self, token: str) -> Interaction | None:
        return self._by_token.get(token)

    # --- what a member does ---------------------------------------------------------------------------

    async def slash(
        self,
        user: User,
        channel: Channel,
        name: str,
        options: dict[str, Any] | None = None,
        *,
        attachments: dict[str, FileSpec | tuple[Any, ...]] | None = None,
        attachment_size_limit: int | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        """Run `/name` (or "group sub") like a member's client: INTERACTION_CREATE type 2.

        Options are checked against the synced command (NotInvocable if Discord's client would refuse);
        attachment options take `(filename, bytes[, content_type])` or a `FileSpec` and are served by the CDN.
        """
        parts = name.split()
        guild = channel.guild
        command = self._find_command(parts[0], guild)
        limit = attachment_size_limit or (guild.upload_limit if guild else self.upload_limit)
        who = self._invoker(user, channel, limit)
        check_invocable(command, who)
        values = {**(options or {}), **(attachments or {})}
        built, resolved = build_options(command, parts[1:], values, who)
        data: dict[str, Any] = {"id": command["id"], "name": command["name"], "type": command["type"]}
        if built:
            data["options"] = built
        if resolved:
            data["resolved"] = resolved
        if "guild_id" in command:
            data["guild_id"] = command["guild_id"]
        return await self._send_interaction(APPLICATION_COMMAND, who, data, name=name, locale=locale)

    async def click(
        self,
        user: User,
        message: Message | int,
        custom_id: str,
        *,
        values: list[str] | None = None,
        unchecked: bool = False,
    ) -> Interaction:
        """Press a button (or choose in a select) on a message: INTERACTION_CREATE type 3.
        `unchecked=True` sends a custom id the message does not carry, as a modified client could: bots must
        treat custom ids as untrusted input."""
        target = message if isinstance(message, Message) else self.message(message)
        if target.deleted:
            raise NotInvocable(f"message {target.id} was deleted")
        component = next((c for c in walk_components(target.components) if c.get("custom_id") == custom_id), None)
        if component is None and unchecked:
            component = {"type": 2, "custom_id": custom_id}
        if component is None:
            raise NotInvocable(f"message {target.id} has no component {custom_id!r} (has {target.custom_ids()})")
        if component.get("disabled"):
            raise NotInvocable(f"component {custom_id!r} is disabled")
        if target.ephemeral and target.interaction is not None and target.interaction.user.id != user.id:
            raise NotInvocable("only the invoking user sees an ephemeral message")
        data: dict[str, Any] = {"custom_id": custom_id, "component_type": component["type"]}
        if component["type"] in (3, 5, 6, 7, 8):
            data["values"] = list(values or [])
        limit = target.guild.upload_limit if target.guild else self.upload_limit
        who = self._invoker(user, target.channel, limit)
        return await self._send_interaction(MESSAGE_COMPONENT, who, data, name=custom_id, message=target)

    async def submit_modal(self, user: User, channel: Channel, custom_id: str, values: dict[str, Any]) -> Interaction:
        """Submit the modal the bot last showed with this custom_id: INTERACTION_CREATE type 5.

        Text inputs take a str, selects a list of str, file uploads a list of FileSpec / tuples.
        """
        origin = next(
            (
                ix
                for ix in reversed(self.interactions)
                if ix.callback is not None and ix.callback.type == MODAL and ix.callback.custom_id == custom_id
            ),
            None,
        )
        if origin is None:
            raise NotInvocable(f"the bot never showed a modal {custom_id!r}")
        limit = origin.attachment_size_limit
        who = self._invoker(user, channel, limit)
        components, resolved = modal_answers(origin.callback.components if origin.callback else [], values, who)
        data: dict[str, Any] = {"custom_id": custom_id, "components": components}
        if resolved:
            data["resolved"] = resolved
        message = origin.message if origin.type == MESSAGE_COMPONENT else None
        return await self._send_interaction(MODAL_SUBMIT, who, data, name=custom_id, message=message)

    def expire_interaction(self, interaction: Interaction) -> None:
        """As if 15 minutes passed: every token-bound call now answers 401 / 50027."""
        interaction.expired = True

    def expire_attachment(self, attachment: Attachment) -> None:
        """The signed CDN URL lapses: downloads answer 404."""
        attachment.expired = True

    async def request_reconnect(self) -> None:
        """Send op 7 RECONNECT; the bot should reconnect and RESUME (see `gateway.resumes`)."""
        await self.gateway.request_reconnect()

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        await self.gateway.invalidate_session(resumable=resumable)

    def rate_limit_next(
        self,
        method: str,
        path_regex: str,
        retry_after: float = 0.3,
        *,
        global_: bool = False,
        count: int = 1,
        scope: str = "user",
    ) -> RateLimitRule:
        """Answer the next `count` requests whose path (after /api/v10) matches with 429 + `Via`."""
        rule = RateLimitRule(method.upper(), re.compile(path_regex), retry_after, global_, scope, count)
        self._rules.append(rule)
        return rule

    # --- waiting ------------------------------------------------------------------------------------

    async def wait_for(self, predicate: Callable[[], T], timeout: float = 5.0, what: str = "") -> T:
        """Poll the recorded state until `predicate()` is truthy; return its value."""
        try:
            async with asyncio.timeout(timeout):
                # Polling on purpose: predicates look at any recorded state, which has no single event to wait on.
                while not (result := predicate()):  # noqa: ASYNC110
                    await asyncio.sleep(0.01)
        except TimeoutError as exc:
            raise TimeoutError(f"not within {timeout}s: {what or predicate}") from exc
        return result

    async def wait_ready(self, timeout: float = 5.0) -> None:
        """Until a connected bot has identified and got READY and every GUILD_CREATE."""
        await self.wait_for(lambda: any(s.live and s.ready for s in self.gateway.sessions), timeout, "a ready session")

    # --- internals used by the REST, webhook and gateway parts ------------------------------------------

    def notify(self, event: str, data: dict[str, Any], guild: Guild | None = None) -> None:
        """A world change made by the test: tell connected bots (if any) in the background."""
        if not any(not s.ended for s in self.gateway.sessions):
            return
        task = asyncio.get_running_loop().create_task(self.emit(event, data, guild))
        self._tasks.add(task)
        task.add_done_callback(self._tasks.discard)

    async def emit(self, event: str, data: dict[str, Any], guild: Guild | None = None) -> None:
        """Dispatch an event to every live session whose intents include it."""
        if event.startswith("MESSAGE_"):
            intent = INTENT_GUILD_MESSAGES if guild is not None else INTENT_DIRECT_MESSAGES
        elif event.startswith("GUILD_MEMBER"):
            intent = INTENT_GUILD_MEMBERS
        else:
            intent = INTENT_GUILDS
        await self.gateway.broadcast(event, data, intent)

    def ready_payload(self, session: Session) -> dict[str, Any]:
        data: dict[str, Any] = {
            "v": 10,
            "user": {**self.bot_user.payload(), "verified": True, "mfa_enabled": False},
            "guilds": [{"id": str(g.id), "unavailable": True} for g in self.guilds],
            "session_id": session.id,
            "session_type": "normal",
            "resume_gateway_url": self.gateway_url,
            "application": {"id": str(self.application_id), "flags": 0},
            "private_channels": [],
            "relationships": [],
            "presences": [],
            "geo_ordered_rtc_regions": [],
            "_trace": ["fake-discord"],
        }
        if session.shard is not None:
            data["shard"] = session.shard
        return data

    def new_attachment(
        self,
        upload: Upload | FileSpec,
        channel: Channel,
        *,
        ephemeral: bool = False,
        meta: dict[str, Any] | None = None,
    ) -> Attachment:
        """Store bytes on the fake CDN and return the attachment that points at them."""
        meta = meta or {}
        attachment_id = self.next_id()
        filename = meta.get("filename") or upload.filename
        folder = "ephemeral-attachments" if ephemeral else "attachments"
        path = f"{folder}/{channel.id}/{attachment_id}/{filename}"
        now = int(time.time())
        query = f"ex={now + 86400:x}&is={now:x}&hm={secrets.token_hex(32)}"  # signed-URL shape, ~24 h
        url = f"{self.base_url}/cdn/{urllib.parse.quote(path)}?{query}"
        size = upload.reported_size if isinstance(upload, FileSpec) else len(upload.data)
        attachment = Attachment(
            attachment_id,
            filename,
            upload.data,
            guess_type(filename, upload.content_type),
            url,
            size,
            description=meta.get("description"),
            ephemeral=ephemeral,
        )
        self._cdn[path] = attachment
        return attachment

    def store_message(self, message: Message) -> Message:
        self._messages[message.id] = message
        message.channel.messages.append(message)
        return message

    def nonce_lookup(self, channel: Channel, nonce: str) -> Message | None:
        found = self._nonces.get((channel.id, nonce))
        if found and time.monotonic() - found[1] <= self.nonce_window and not found[0].deleted:
            return found[0]
        return None

    def nonce_remember(self, channel: Channel, nonce: str, message: Message) -> None:
        self._nonces[(channel.id, nonce)] = (message, time.monotonic())

    def store_commands(self, guild_id: int | None, commands: list[dict[str, Any]]) -> None:
        self._commands[guild_id] = commands

    def command_id(self, guild_id: int | None, name: str, kind: int) -> int:
        """Discord keeps a command's id when a bulk overwrite has the same name and type."""
        key = (guild_id, name, kind)
        if key not in self._command_ids:
            self._command_ids[key] = self.next_id()
        return self._command_ids[key]

    def violation(self, kind: str, detail: str, interaction: Interaction | None = None) -> None:
        self.violations.append(Violation(kind, detail, interaction.id if interaction else None))

    def _find_command(self, name: str, guild: Guild | None) -> dict[str, Any]:
        scopes = [guild.id, None] if guild is not None else [None]
        for scope in scopes:
            for command in self._commands.get(scope, []):
                if command["name"] == name and command.get("type", 1) == 1:
                    return command
        synced = {scope: [c["name"] for c in cmds] for scope, cmds in self._commands.items()}
        raise NotInvocable(f"/{name} was never synced here (synced: {synced})")

    def _invoker(self, user: User, channel: Channel, limit: int) -> Invoker:
        guild = channel.guild
        member = guild.members.get(user.id) if guild else None
        if guild is not None and member is None:
            raise NotInvocable(f"{user.name} is not a member of {guild.name}")
        if channel.is_dm and user not in channel.recipients:
            raise NotInvocable(f"{user.name} is not in DM channel {channel.id}")

        def make(spec: FileSpec) -> Attachment:
            return self.new_attachment(spec, channel, ephemeral=True)

        return Invoker(user, channel, guild, member, make, limit)

    async def _send_interaction(
        self,
        kind: int,
        who: Invoker,
        data: dict[str, Any],
        *,
        name: str,
        message: Message | None = None,
        locale: str = "en-US",
    ) -> Interaction:
        channel, guild = who.channel, who.guild
        ix = Interaction(
            self.next_id(),
            secrets.token_urlsafe(48),
            kind,
            self.application_id,
            who.user,
            channel,
            guild,
            name,
            who.attachment_size_limit,
            message=message,
        )
        app_permissions = channel.bot_permissions() if guild is not None else DM_PERMISSIONS
        payload: dict[str, Any] = {
            "id": str(ix.id),
            "application_id": str(self.application_id),
            "type": kind,
            "data": data,
            "token": ix.token,
            "version": 1,
            "locale": locale,
            "attachment_size_limit": who.attachment_size_limit,
            "app_permissions": str(int(app_permissions)),
            "entitlements": [],
            "authorizing_integration_owners": owners(guild),
            "context": 0 if guild else 1,
            "channel": channel.payload(),
            "channel_id": str(channel.id),
        }
        if guild is not None and who.member is not None:
            payload["guild_id"] = str(guild.id)
            payload["guild"] = {"id": str(guild.id), "locale": guild.locale, "features": []}
            payload["guild_locale"] = guild.locale
            payload["member"] = who.member.payload(permissions=guild.permissions_for(who.member, channel))
        else:
            payload["user"] = who.user.payload()
        if message is not None:
            payload["message"] = message.payload()
        ix.payload = payload
        self.interactions.append(ix)
        self._by_token[ix.token] = ix
        ix.sent_at = time.monotonic()
        await self.gateway.send_to_current("INTERACTION_CREATE", payload)
        loop = asyncio.get_running_loop()
        self._timers.append(loop.call_later(self.response_deadline, self._deadline_passed, ix))
        return ix

    def _deadline_passed(self, ix: Interaction) -> None:
        if not ix.acknowledged:
            self.violation("no_response", f"{ix.name!r} got no response within {self.response_deadline}s", ix)

    # --- HTTP plumbing -------------------------------------------------------------------------------

    def _endpoint(self, handler: Handler, auth: str) -> Handler:
        """Wrap a handler: record the request, serve injected 429s, check the bot token, render ApiErrors."""

        async def run(request: web.Request) -> web.StreamResponse:
            raw = await request.read()
            record = RecordedRequest(
                request.method, request.path[len(API_PREFIX) :], dict(request.query), dict(request.headers)
            )
            self.requests.append(record)
            scope = None
            try:
                record.json, record.files = parse_body(request.headers.get("Content-Type", ""), raw)
                self._note_retry(record)
                rule = next((r for r in self._rules if r.matches(record.method, record.path)), None)
                if rule is not None:
                    response, scope = self._serve_429(rule, record), rule.scope
                else:
                    if auth == "bot" and request.headers.get("Authorization") != f"Bot {self.token}":
                        raise ApiError(401, 0, "401: Unauthorized")
                    response = await handler(record, **request.match_info)
            except ApiError as error:
                response = error_response(error)
            record.status = response.status
            if isinstance(response, web.Response) and response.body and response.content_type == "application/json":
                record.response = json.loads(response.body)  # type: ignore[arg-type]
            if record.status in (401, 403) or (record.status == 429 and scope != "shared"):
                self.invalid_requests.append(record)
            return response

        return run

    def _note_retry(self, record: RecordedRequest) -> None:
        for hit in self.rate_limit_hits:
            if not hit.retried and hit.method == record.method and hit.path == record.path:
                hit.retried_at = record.at
                record.after_429 = True
                return

    def _serve_429(self, rule: RateLimitRule, record: RecordedRequest) -> web.Response:
        rule.served += 1
        self.rate_limit_hits.append(RateLimitHit(record.method, record.path, rule.retry_after, record.at))
        return too_many_requests(rule)

    async def _unknown_route(self, record: RecordedRequest, **_: str) -> web.Response:
        self.unhandled.append((record.method, record.path))
        raise ApiError(404, 0, "404: Not Found")

    async def _cdn_get(self, request: web.Request) -> web.Response:
        path = request.match_info["path"]
        self.cdn_requests.append(path)
        attachment = self._cdn.get(path)
        if attachment is None or attachment.expired:
            return web.Response(status=404, text="This content is no longer available.")
        return web.Response(body=attachment.data, content_type=attachment.content_type or "application/octet-stream")
