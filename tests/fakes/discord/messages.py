"""Message bodies as Discord checks them: content and component limits, uploads, attachments on create and edit.

Limits from DD resources/message.mdx and components/reference.mdx: content ≤2000, ≤10 embeds (≤6000
characters in all), ≤5 action rows of ≤5 buttons, custom_id 1–100 and unique, ≤10 files per message, each file
within the upload limit (413 / 40005 otherwise, checked per attachment since 2025-04-03).
"""

from __future__ import annotations

import copy
from collections.abc import Callable
from typing import Any

from .models import Attachment, Message, walk_components
from .wire import ENTITY_TOO_LARGE, MAX_ATTACHMENTS, ApiError, Upload, form_error

FLAG_SUPPRESS_EMBEDS = 1 << 2
FLAG_EPHEMERAL = 1 << 6
FLAG_SUPPRESS_NOTIFICATIONS = 1 << 12
FLAG_COMPONENTS_V2 = 1 << 15
# What a bot may set when creating a message (ephemeral only through interactions).
CREATE_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_SUPPRESS_NOTIFICATIONS | FLAG_COMPONENTS_V2
INTERACTION_FLAGS = CREATE_FLAGS | FLAG_EPHEMERAL
EDIT_FLAGS = FLAG_SUPPRESS_EMBEDS | FLAG_COMPONENTS_V2

MakeAttachment = Callable[[Upload, dict[str, Any]], Attachment]


def check_body(body: dict[str, Any], *, allowed_flags: int) -> None:
    """Raise 400 / 50035 for content, embeds, components or flags Discord refuses."""
    content = body.get("content")
    if content is not None and len(str(content)) > 2000:
        raise form_error("content", "Must be 2000 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    flags = int(body.get("flags") or 0)
    if flags & ~allowed_flags:
        raise form_error("flags", f"Flags {flags & ~allowed_flags} can't be set here")
    embeds = body.get("embeds") or []
    if len(embeds) > 10:
        raise form_error("embeds", "Must be 10 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    _check_embeds(embeds)
    components = body.get("components") or []
    if flags & FLAG_COMPONENTS_V2:
        if content or embeds:
            raise form_error("content", "content and embeds can't be used with IS_COMPONENTS_V2")
        if len(walk_components(components)) > 40:
            raise form_error("components", "Must be 40 or fewer in total.", "BASE_TYPE_MAX_LENGTH")
    else:
        _check_legacy_components(components)
    seen: set[str] = set()
    for component in walk_components(components):
        custom_id = component.get("custom_id")
        if custom_id is None:
            continue
        if not (1 <= len(custom_id) <= 100):
            raise form_error("components", f"custom_id {custom_id!r} must be 1-100 characters")
        if custom_id in seen:
            raise form_error("components", f"custom_id {custom_id!r} is duplicated", "COMPONENT_CUSTOM_ID_DUPLICATED")
        seen.add(custom_id)


def _check_embeds(embeds: list[dict[str, Any]]) -> None:
    total = 0
    for i, embed in enumerate(embeds):
        limits = {"title": 256, "description": 4096}
        for key, limit in limits.items():
            text = embed.get(key) or ""
            if len(text) > limit:
                raise form_error(f"embeds.{i}.{key}", f"Must be {limit} or fewer in length.", "BASE_TYPE_MAX_LENGTH")
            total += len(text)
        fields = embed.get("fields") or []
        if len(fields) > 25:
            raise form_error(f"embeds.{i}.fields", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        for j, item in enumerate(fields):
            if len(item.get("name", "")) > 256 or len(item.get("value", "")) > 1024:
                raise form_error(f"embeds.{i}.fields.{j}", "Field name ≤256, value ≤1024.", "BASE_TYPE_MAX_LENGTH")
            total += len(item.get("name", "")) + len(item.get("value", ""))
        footer = (embed.get("footer") or {}).get("text") or ""
        if len(footer) > 2048:
            raise form_error(f"embeds.{i}.footer.text", "Must be 2048 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        total += len(footer) + len((embed.get("author") or {}).get("name") or "")
    if total > 6000:
        raise form_error("embeds", "Embed size exceeds maximum size of 6000", "MESSAGE_EMBED_TOO_LARGE")


def _check_legacy_components(components: list[dict[str, Any]]) -> None:
    if len(components) > 5:
        raise form_error("components", "Must be 5 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    for i, row in enumerate(components):
        if row.get("type") != 1:
            raise form_error(
                f"components.{i}.type", "Top-level components must be action rows (or set IS_COMPONENTS_V2)"
            )
        children = row.get("components") or []
        if not (1 <= len(children) <= 5):
            raise form_error(f"components.{i}.components", "An action row holds 1-5 components.")
        for j, child in enumerate(children):
            if len(child.get("label") or "") > 80:
                raise form_error(f"components.{i}.components.{j}.label", "Must be 80 or fewer in length.")


def numbered(components: list[dict[str, Any]]) -> list[dict[str, Any]]:
    """Discord gives every component a numeric `id` when the sender didn't."""
    result = copy.deepcopy(components)
    used = {c["id"] for c in walk_components(result) if isinstance(c.get("id"), int)}
    next_id = 1
    for component in walk_components(result):
        if "id" not in component:
            while next_id in used:
                next_id += 1
            component["id"] = next_id
            used.add(next_id)
    return result


def is_empty(body: dict[str, Any], uploads: list[Upload]) -> bool:
    return not (
        body.get("content")
        or body.get("embeds")
        or body.get("components")
        or uploads
        or body.get("sticker_ids")
        or body.get("poll")
    )


def check_uploads(uploads: list[Upload], limit: int, kept: int = 0) -> None:
    if len(uploads) + kept > 10:
        raise ApiError(400, MAX_ATTACHMENTS, "Maximum number of attachments in a message reached (10)")
    for upload in uploads:
        if len(upload.data) > limit:
            raise ApiError(413, ENTITY_TOO_LARGE, "Request entity too large")


def attachments_for(
    body: dict[str, Any], uploads: list[Upload], make: MakeAttachment, existing: list[Attachment] | None = None
) -> list[Attachment]:
    """The message's attachments after this request.

    `attachments[].id` is the `n` of a `files[n]` part for a new file, or the id of an attachment to keep
    (on edits, API v10 drops every existing attachment that the list does not name).
    """
    by_index = {u.index: u for u in uploads}
    by_id = {a.id: a for a in existing or []}
    result: list[Attachment] = []
    used: set[int | None] = set()
    entries = body.get("attachments")
    if entries is None:
        result.extend(existing or [])
    else:
        for i, entry in enumerate(entries):
            key = int(entry["id"])
            if key in by_id:
                result.append(by_id[key])
            elif key in by_index:
                result.append(make(by_index[key], entry))
                used.add(key)
            else:
                raise form_error(f"attachments.{i}.id", f"Unknown attachment {key}")
    for upload in uploads:
        if upload.index not in used:
            result.append(make(upload, {}))
    return result


def apply_edit(message: Message, body: dict[str, Any], attachments: list[Attachment]) -> None:
    """Replace what the PATCH body names (absent fields stay), keeping the previous state in `message.edits`."""
    message.edits.append(message.snapshot())
    if "content" in body:
        message.content = body["content"] or ""
    if "embeds" in body:
        message.embeds = copy.deepcopy(body["embeds"] or [])
    if "components" in body:
        message.components = numbered(body["components"] or [])
    if "flags" in body and body["flags"] is not None:
        keep = message.flags & ~EDIT_FLAGS
        message.flags = keep | (int(body["flags"]) & EDIT_FLAGS)
    message.attachments = attachments
