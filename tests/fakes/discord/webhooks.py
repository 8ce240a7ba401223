"""Interaction-token endpoints: the initial callback, follow-ups, and the original / follow-up messages.

Rules (DD interactions/receiving-and-responding.mdx): one initial response within 3 s (a second one is 400 /
40060, a late one 404 / 10062; both are recorded in `fake.violations`); the token then works for 15 minutes,
after which every token-bound call answers 401 / 50027 "Invalid Webhook Token"; after a deferred response
(type 5) the first follow-up replaces the "thinking" message instead of posting a new one.
"""

from __future__ import annotations

import time
from collections.abc import Awaitable, Callable
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Any

from aiohttp import web

from .interactions import (
    ALLOWED_CALLBACKS,
    APPLICATION_COMMAND,
    AUTOCOMPLETE_RESULT,
    DEFERRED_MESSAGE_WITH_SOURCE,
    DEFERRED_UPDATE_MESSAGE,
    MESSAGE_WITH_SOURCE,
    MODAL,
    UPDATE_MESSAGE,
    Callback,
    Interaction,
)
from .messages import (
    EDIT_FLAGS,
    FLAG_EPHEMERAL,
    INTERACTION_FLAGS,
    apply_edit,
    attachments_for,
    check_body,
    check_uploads,
    is_empty,
    numbered,
)
from .models import MESSAGE_FLAG_LOADING, Attachment, Message, walk_components
from .wire import (
    ALREADY_ACKNOWLEDGED,
    EMPTY_MESSAGE,
    INVALID_WEBHOOK_TOKEN,
    UNKNOWN_INTERACTION,
    UNKNOWN_MESSAGE,
    UNKNOWN_WEBHOOK,
    ApiError,
    RecordedRequest,
    Upload,
    form_error,
    json_response,
)

if TYPE_CHECKING:
    from .server import FakeDiscord

Route = tuple[str, str, Callable[..., Awaitable[web.StreamResponse]], str]
MESSAGE_TYPE_CHAT_INPUT = 20


class Webhooks:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake

    def routes(self) -> list[Route]:
        token_path = "/webhooks/{app_id}/{token}"
        return [
            ("POST", "/interactions/{interaction_id}/{token}/callback", self.callback, "none"),
            ("POST", token_path, self.followup, "none"),
            ("GET", token_path + "/messages/{message_id}", self.get_message, "none"),
            ("PATCH", token_path + "/messages/{message_id}", self.edit_message, "none"),
            ("DELETE", token_path + "/messages/{message_id}", self.delete_message, "none"),
        ]

    # --- the initial response ------------------------------------------------------------------------

    async def callback(self, req: RecordedRequest, interaction_id: str, token: str) -> web.Response:
        fake = self.fake
        ix = fake.interaction(token)
        if ix is None or ix.id != int(interaction_id):
            raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
        body = req.json or {}
        kind = body.get("type")
        record = Callback(kind, body.get("data") or {}, [], time.monotonic(), status=0)
        ix.callbacks.append(record)
        try:
            if ix.acknowledged:
                fake.violation("double_response", f"second response (type {kind}) to {ix.name!r}", ix)
                raise ApiError(400, ALREADY_ACKNOWLEDGED, "Interaction has already been acknowledged.")
            elapsed = record.at - (ix.sent_at or record.at)
            if ix.expired or elapsed > fake.response_deadline:
                fake.violation("late_response", f"response to {ix.name!r} after {elapsed:.2f}s", ix)
                raise ApiError(404, UNKNOWN_INTERACTION, "Unknown interaction")
            if kind not in ALLOWED_CALLBACKS.get(ix.type, set()):
                fake.violation("invalid_response_type", f"type {kind} can't answer interaction type {ix.type}", ix)
                raise form_error("type", f"Interaction response type {kind} is not valid here")
            message = await self._respond(ix, kind, record.data, req.files)
        except ApiError as error:
            record.status = error.status
            raise
        record.status = 200
        record.files = list(message.attachments) if message is not None and kind != DEFERRED_MESSAGE_WITH_SOURCE else []
        ix.mark_answered()
        if req.query.get("with_response") not in ("1", "true", "True"):
            return web.Response(status=204)  # documented: 204 unless with_response is set
        return json_response(self._callback_response(ix, kind, message))

    async def _respond(self, ix: Interaction, kind: int, data: dict[str, Any], files: list[Upload]) -> Message | None:
        if kind == MESSAGE_WITH_SOURCE:
            check_body(data, allowed_flags=INTERACTION_FLAGS)
            if is_empty(data, files):
                raise ApiError(400, EMPTY_MESSAGE, "Cannot send an empty message")
            check_uploads(files, ix.attachment_size_limit)
            message = self._new_message(ix, data, files)
            ix.original = message
            await self._emit(message, "MESSAGE_CREATE")
            return message
        if kind == DEFERRED_MESSAGE_WITH_SOURCE:
            flags = int(data.get("flags") or 0)
            if flags & ~FLAG_EPHEMERAL:
                raise form_error("data.flags", "Only EPHEMERAL can be set on a deferred response")
            message = self._new_message(ix, {}, [], flags=flags | MESSAGE_FLAG_LOADING)
            ix.original = message
            await self._emit(message, "MESSAGE_CREATE")
            return message
        if kind in (DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE):
            target = ix.message
            if target is None:
                raise form_error("type", "There is no message to update")
            ix.original = target
            if kind == UPDATE_MESSAGE:
                check_body(data, allowed_flags=EDIT_FLAGS)
                check_uploads(files, ix.attachment_size_limit)
                apply_edit(target, data, attachments_for(data, files, self._maker(ix, target), target.attachments))
                target.edited_at = datetime.now(UTC)
                await self._emit(target, "MESSAGE_UPDATE")
            return target
        if kind == AUTOCOMPLETE_RESULT:
            if len(data.get("choices") or []) > 25:
                raise form_error("data.choices", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
            return None
        if kind == MODAL:
            self._check_modal(data)
            return None
        raise form_error("type", f"Unsupported interaction response type {kind}")

    @staticmethod
    def _check_modal(data: dict[str, Any]) -> None:
        if not (1 <= len(data.get("custom_id") or "") <= 100):
            raise form_error("data.custom_id", "Must be between 1 and 100 in length.")
        if not (1 <= len(data.get("title") or "") <= 45):
            raise form_error("data.title", "Must be between 1 and 45 in length.")
        components = data.get("components") or []
        if not (1 <= len(components) <= 5):
            raise form_error("data.components", "A modal has 1-5 top-level components.")
        for component in walk_components(components):
            if component.get("type") == 4 and len(component.get("value") or "") > 4000:
                raise form_error("data.components", "A text input holds at most 4000 characters.")

    def _callback_response(self, ix: Interaction, kind: int, message: Message | None) -> dict[str, Any]:
        interaction: dict[str, Any] = {"id": str(ix.id), "type": ix.type}
        if message is not None:
            interaction.update(
                response_message_id=str(message.id),
                response_message_loading=message.loading,
                response_message_ephemeral=message.ephemeral,
            )
        response: dict[str, Any] = {"interaction": interaction}
        if message is not None and kind != DEFERRED_UPDATE_MESSAGE:
            response["resource"] = {"type": kind, "message": message.payload()}
        return response

    # --- token-bound webhook calls ---------------------------------------------------------------------

    def _token(self, app_id: str, token: str) -> Interaction:
        fake = self.fake
        if int(app_id) != fake.application_id:
            raise ApiError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        ix = fake.interaction(token)
        if ix is None or ix.token_expired:
            raise ApiError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
        if not ix.acknowledged:
            late = ix.sent_at is not None and time.monotonic() - ix.sent_at > fake.response_deadline
            if late:  # "If the 3 second deadline is exceeded, the token will be invalidated"
                raise ApiError(401, INVALID_WEBHOOK_TOKEN, "Invalid Webhook Token")
            raise ApiError(404, UNKNOWN_WEBHOOK, "Unknown Webhook")
        return ix

    @staticmethod
    def _own_message(ix: Interaction, message_id: str) -> Message:
        for message in ix.messages():
            if (message_id == "@original" and message is ix.original) or message_id == str(message.id):
                if message.deleted:
                    break
                return message
        raise ApiError(404, UNKNOWN_MESSAGE, "Unknown Message")

    async def followup(self, req: RecordedRequest, app_id: str, token: str) -> web.Response:
        ix = self._token(app_id, token)
        if "thread_id" in req.query:
            raise form_error("thread_id", "Interaction follow-ups can't target a thread")
        body = req.json or {}
        check_body(body, allowed_flags=INTERACTION_FLAGS)
        if is_empty(body, req.files):
            raise ApiError(400, EMPTY_MESSAGE, "Cannot send an empty message")
        check_uploads(req.files, ix.attachment_size_limit)
        original = ix.original
        if original is not None and original.loading and not original.deleted:
            # The first follow-up after a deferred response fills the "thinking" message, keeping its
            # ephemeral state (the follow-up's own flags can't change it).
            edit = {k: v for k, v in body.items() if k in ("content", "embeds", "components", "attachments")}
            apply_edit(
                original, edit, attachments_for(edit, req.files, self._maker(ix, original), original.attachments)
            )
            original.flags &= ~MESSAGE_FLAG_LOADING
            await self._emit(original, "MESSAGE_UPDATE")
            message = original
        else:
            message = self._new_message(ix, body, req.files)
            ix.followups.append(message)
            await self._emit(message, "MESSAGE_CREATE")
        if req.query.get("wait") in ("1", "true", "True"):
            return json_response(message.payload())
        return web.Response(status=204)

    async def get_message(self, req: RecordedRequest, app_id: str, token: str, message_id: str) -> web.Response:
        ix = self._token(app_id, token)
        return json_response(self._own_message(ix, message_id).payload())

    async def edit_message(self, req: RecordedRequest, app_id: str, token: str, message_id: str) -> web.Response:
        ix = self._token(app_id, token)
        message = self._own_message(ix, message_id)
        body = req.json or {}
        check_body(body, allowed_flags=EDIT_FLAGS)
        check_uploads(req.files, ix.attachment_size_limit)
        apply_edit(message, body, attachments_for(body, req.files, self._maker(ix, message), message.attachments))
        message.flags &= ~MESSAGE_FLAG_LOADING
        message.edited_at = datetime.now(UTC)
        await self._emit(message, "MESSAGE_UPDATE")
        return json_response(message.payload())

    async def delete_message(self, req: RecordedRequest, app_id: str, token: str, message_id: str) -> web.Response:
        ix = self._token(app_id, token)
        message = self._own_message(ix, message_id)
        message.deleted = True
        if not message.ephemeral:
            data = {"id": str(message.id), "channel_id": str(message.channel.id)}
            if message.guild is not None:
                data["guild_id"] = str(message.guild.id)
            await self.fake.emit("MESSAGE_DELETE", data, message.guild)
        return web.Response(status=204)

    # --- helpers -----------------------------------------------------------------------------------------

    def _maker(self, ix: Interaction, message: Message) -> Callable[[Upload, dict[str, Any]], Attachment]:
        def make(upload: Upload, meta: dict[str, Any]) -> Attachment:
            return self.fake.new_attachment(upload, message.channel, ephemeral=message.ephemeral, meta=meta)

        return make

    def _new_message(
        self, ix: Interaction, data: dict[str, Any], files: list[Upload], *, flags: int | None = None
    ) -> Message:
        fake = self.fake
        message = Message(
            fake.next_id(),
            ix.channel,
            fake.bot_user,
            content=data.get("content") or "",
            embeds=data.get("embeds") or [],
            components=numbered(data.get("components") or []),
            flags=int(data.get("flags") or 0) if flags is None else flags,
            tts=bool(data.get("tts")),
            type=MESSAGE_TYPE_CHAT_INPUT if ix.type == APPLICATION_COMMAND and ix.original is None else 0,
            webhook_id=fake.application_id,
            interaction=ix,
        )
        message.attachments = attachments_for(data, files, self._maker(ix, message))
        return fake.store_message(message)

    async def _emit(self, message: Message, event: str) -> None:
        if message.ephemeral:
            return
        data = message.payload()
        guild = message.channel.guild
        if guild is not None:
            data["member"] = guild.bot_member.payload(with_user=False)
        await self.fake.emit(event, data, guild)
