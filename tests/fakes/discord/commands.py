"""Application commands: checking what the bot syncs, and building what a member's client would send.

Both sides follow DD interactions/application-commands.mdx: the limits Discord enforces on a sync (names,
descriptions, ≤25 options, required before optional, ≤25 choices, ≤8000 characters) answer 400 / 50035, and a
test can only invoke a command the way Discord's client allows it (the command exists in this scope, the
context and `default_member_permissions` allow it, required options are present, choices and limits hold, an
attachment fits the user's upload limit); anything else raises `NotInvocable` in the test.
"""

from __future__ import annotations

import re
from collections.abc import Callable
from dataclasses import dataclass
from typing import Any

from .guilds import Channel, Guild
from .models import Attachment, Member, Permission, Role, User
from .wire import form_error

SUB_COMMAND, SUB_COMMAND_GROUP = 1, 2
STRING, INTEGER, BOOLEAN, USER, CHANNEL, ROLE, MENTIONABLE, NUMBER, ATTACHMENT = 3, 4, 5, 6, 7, 8, 9, 10, 11
CHAT_INPUT = 1
CONTEXT_GUILD, CONTEXT_BOT_DM = 0, 1

# Discord's \p{L}\p{N} class approximated with Python's Unicode \w (letters, digits, underscore).
NAME_RE = re.compile(r"^[-_'\w]{1,32}$")
MAX_COMMAND_CHARS = 8000


class NotInvocable(Exception):
    """Discord's client would not let a member send this interaction (unknown command, bad option, ...)."""


@dataclass(frozen=True)
class FileSpec:
    """An attachment a member uploads with a command; `size` may claim more than `data` holds."""

    filename: str
    data: bytes
    content_type: str | None = None
    size: int | None = None

    @property
    def reported_size(self) -> int:
        return len(self.data) if self.size is None else self.size

    @classmethod
    def of(cls, value: Any) -> FileSpec:
        if isinstance(value, FileSpec):
            return value
        if isinstance(value, tuple) and 2 <= len(value) <= 3:
            return cls(*value)
        raise NotInvocable(f"an attachment option takes FileSpec or (filename, bytes[, content_type]), not {value!r}")


# --- sync ---------------------------------------------------------------------------------------


def check_command(index: int, command: dict[str, Any]) -> None:
    """Raise 400 / 50035 for anything Discord refuses in one command of a bulk overwrite."""
    where = str(index)
    kind = command.get("type", CHAT_INPUT)
    name = command.get("name")
    if not isinstance(name, str) or not (1 <= len(name) <= 32):
        raise form_error(f"{where}.name", "Must be between 1 and 32 in length.", "BASE_TYPE_BAD_LENGTH")
    description = command.get("description", "")
    if kind == CHAT_INPUT:
        if not NAME_RE.match(name) or name != name.lower():
            raise form_error(f"{where}.name", "Command name is invalid", "APPLICATION_COMMAND_INVALID_NAME")
        if not (1 <= len(description) <= 100):
            raise form_error(f"{where}.description", "Must be between 1 and 100 in length.", "BASE_TYPE_BAD_LENGTH")
    elif description:
        raise form_error(f"{where}.description", "Context menu commands cannot have a description.")
    _check_options(f"{where}.options", command.get("options") or [], depth=0)
    if command_chars(command) > MAX_COMMAND_CHARS:
        raise form_error(where, f"Command exceeds maximum size ({MAX_COMMAND_CHARS})", "APPLICATION_COMMAND_TOO_LARGE")


def _check_options(where: str, options: list[dict[str, Any]], *, depth: int) -> None:
    if len(options) > 25:
        raise form_error(where, "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
    seen: set[str] = set()
    optional_seen = False
    for i, option in enumerate(options):
        here = f"{where}.{i}"
        name = option.get("name", "")
        if not NAME_RE.match(name) or name != name.lower():
            raise form_error(f"{here}.name", "Command name is invalid", "APPLICATION_COMMAND_INVALID_NAME")
        if name in seen:
            raise form_error(f"{here}.name", "Application command option names must be unique", "DUPLICATE")
        seen.add(name)
        if not (1 <= len(option.get("description", "")) <= 100):
            raise form_error(f"{here}.description", "Must be between 1 and 100 in length.", "BASE_TYPE_BAD_LENGTH")
        kind = option.get("type")
        if kind in (SUB_COMMAND, SUB_COMMAND_GROUP):
            if depth >= (1 if kind == SUB_COMMAND_GROUP else 2):
                raise form_error(f"{here}.type", "Sub-command groups cannot be nested this deep.")
            _check_options(f"{here}.options", option.get("options") or [], depth=depth + 1)
            continue
        if option.get("required"):
            if optional_seen:
                raise form_error(f"{here}.required", "Required options must be placed before non-required options")
        else:
            optional_seen = True
        choices = option.get("choices") or []
        if len(choices) > 25:
            raise form_error(f"{here}.choices", "Must be 25 or fewer in length.", "BASE_TYPE_MAX_LENGTH")
        if choices and option.get("autocomplete"):
            raise form_error(f"{here}.autocomplete", "Autocomplete cannot be set with choices")
        for j, choice in enumerate(choices):
            if not (1 <= len(choice.get("name", "")) <= 100):
                raise form_error(f"{here}.choices.{j}.name", "Must be between 1 and 100 in length.")
            if kind == STRING and len(str(choice.get("value", ""))) > 100:
                raise form_error(f"{here}.choices.{j}.value", "Must be 100 or fewer in length.")
        for key in ("min_length", "max_length"):
            if key in option and not (0 <= option[key] <= 6000):
                raise form_error(f"{here}.{key}", "Must be between 0 and 6000.")


def command_chars(command: dict[str, Any]) -> int:
    """What counts toward the 8000-character limit: names, descriptions, choice names and values."""

    def count(options: list[dict[str, Any]]) -> int:
        total = 0
        for option in options:
            total += len(option.get("name", "")) + len(option.get("description", ""))
            for choice in option.get("choices") or []:
                total += len(choice.get("name", "")) + len(str(choice.get("value", "")))
            total += count(option.get("options") or [])
        return total

    return len(command.get("name", "")) + len(command.get("description", "")) + count(command.get("options") or [])


def stored_command(
    command: dict[str, Any], *, command_id: int, application_id: int, version: int, guild_id: int | None
) -> dict[str, Any]:
    """The command object Discord answers and keeps (defaults filled in)."""
    stored = {
        "type": CHAT_INPUT,
        "default_member_permissions": None,
        "nsfw": False,
        "integration_types": [0],
        "contexts": None,
        **command,
        "id": str(command_id),
        "application_id": str(application_id),
        "version": str(version),
    }
    stored.setdefault("description", "")
    if guild_id is not None:
        stored["guild_id"] = str(guild_id)
    return stored


# --- invocation -----------------------------------------------------------------------------------


@dataclass
class Invoker:
    """Who invokes where: the pieces needed to check and resolve options."""

    user: User
    channel: Channel
    guild: Guild | None
    member: Member | None
    make_attachment: Callable[[FileSpec], Attachment]
    attachment_size_limit: int


def check_invocable(command: dict[str, Any], who: Invoker) -> None:
    contexts = command.get("contexts")
    if who.guild is None:
        if command.get("guild_id") is not None:
            raise NotInvocable(f"/{command['name']} is a guild command; it doesn't exist in DMs")
        if contexts is not None and CONTEXT_BOT_DM not in contexts:
            raise NotInvocable(f"/{command['name']} is not available in DMs (contexts={contexts})")
        if command.get("dm_permission") is False:
            raise NotInvocable(f"/{command['name']} has dm_permission=false")
        return
    if contexts is not None and CONTEXT_GUILD not in contexts:
        raise NotInvocable(f"/{command['name']} is not available in guilds (contexts={contexts})")
    assert who.member is not None
    perms = who.guild.permissions_for(who.member, who.channel)
    if not perms & Permission.USE_APPLICATION_COMMANDS:
        raise NotInvocable(f"{who.user.name} lacks USE_APPLICATION_COMMANDS in #{who.channel.name}")
    required = command.get("default_member_permissions")
    if required is not None and not perms & Permission.ADMINISTRATOR:
        # "0" means administrators only; otherwise the member needs every listed bit.
        if int(required) == 0 or (int(required) & perms) != int(required):
            raise NotInvocable(f"{who.user.name} lacks default_member_permissions={required} for /{command['name']}")
    if command.get("nsfw") and not who.channel.effective_nsfw:
        raise NotInvocable(f"/{command['name']} is age-restricted and #{who.channel.name} is not")


def build_options(
    command: dict[str, Any], path: list[str], values: dict[str, Any], who: Invoker
) -> tuple[list[dict[str, Any]], dict[str, dict[str, Any]]]:
    """`data.options` (nested for sub-commands) and `data.resolved` for the given option values."""
    resolved: dict[str, dict[str, Any]] = {}
    specs: list[dict[str, Any]] = command.get("options") or []
    wrappers: list[dict[str, Any]] = []
    for name in path:
        spec = next((o for o in specs if o["name"] == name and o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP)), None)
        if spec is None:
            raise NotInvocable(f"/{command['name']} has no sub-command {name!r}")
        wrappers.append({"name": name, "type": spec["type"], "options": []})
        specs = spec.get("options") or []
    if any(o["type"] in (SUB_COMMAND, SUB_COMMAND_GROUP) for o in specs):
        raise NotInvocable(f"/{command['name']} needs a sub-command: {[o['name'] for o in specs]}")
    leaf: list[dict[str, Any]] = []
    by_name = {o["name"]: o for o in specs}
    for name, value in values.items():
        spec = by_name.get(name)
        if spec is None:
            raise NotInvocable(f"/{command['name']} has no option {name!r} (has {sorted(by_name)})")
        leaf.append({"name": name, "type": spec["type"], "value": _encode(spec, value, who, resolved)})
    missing = [o["name"] for o in specs if o.get("required") and o["name"] not in values]
    if missing:
        raise NotInvocable(f"/{command['name']} is missing required options {missing}")
    options = leaf
    for wrapper in reversed(wrappers):
        wrapper["options"] = options
        options = [wrapper]
    return options, resolved


def _encode(spec: dict[str, Any], value: Any, who: Invoker, resolved: dict[str, dict[str, Any]]) -> Any:
    name, kind = spec["name"], spec["type"]
    if kind == ATTACHMENT:
        file = FileSpec.of(value)
        if file.reported_size > who.attachment_size_limit:
            raise NotInvocable(
                f"{file.filename} ({file.reported_size} B) exceeds the upload limit {who.attachment_size_limit}"
            )
        attachment = who.make_attachment(file)
        resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.payload()
        return str(attachment.id)  # must be the same string as the resolved key (DISCORD.md §10)
    if kind == STRING:
        _expect(name, value, str)
        if not spec.get("min_length", 0) <= len(value) <= spec.get("max_length", 6000):
            raise NotInvocable(f"option {name!r}: length {len(value)} outside the allowed range")
        _check_choice(spec, value)
        return value
    if kind in (INTEGER, NUMBER):
        if isinstance(value, bool) or not isinstance(value, int if kind == INTEGER else (int, float)):
            raise NotInvocable(
                f"option {name!r} takes {'an integer' if kind == INTEGER else 'a number'}, not {value!r}"
            )
        if ("min_value" in spec and value < spec["min_value"]) or ("max_value" in spec and value > spec["max_value"]):
            raise NotInvocable(f"option {name!r}: {value} outside [{spec.get('min_value')}, {spec.get('max_value')}]")
        _check_choice(spec, value)
        return value
    if kind == BOOLEAN:
        _expect(name, value, bool)
        return value
    if kind in (USER, MENTIONABLE) and isinstance(value, User | Member):
        user = value.user if isinstance(value, Member) else value
        resolved.setdefault("users", {})[str(user.id)] = user.payload()
        member = who.guild.members.get(user.id) if who.guild else None
        if member is not None and who.guild is not None:
            perms = who.guild.permissions_for(member, who.channel)
            resolved.setdefault("members", {})[str(user.id)] = member.payload(with_user=False, permissions=perms)
        return str(user.id)
    if kind in (ROLE, MENTIONABLE) and isinstance(value, Role):
        resolved.setdefault("roles", {})[str(value.id)] = value.payload()
        return str(value.id)
    if kind == CHANNEL and isinstance(value, Channel):
        allowed = spec.get("channel_types")
        if allowed and int(value.type) not in allowed:
            raise NotInvocable(f"option {name!r} takes channel types {allowed}, not {int(value.type)}")
        data = value.payload()
        if who.guild is not None and who.member is not None:
            data["permissions"] = str(who.guild.permissions_for(who.member, value))
        resolved.setdefault("channels", {})[str(value.id)] = data
        return str(value.id)
    raise NotInvocable(f"option {name!r} (type {kind}) can't take {value!r}")


def _expect(name: str, value: Any, kind: type) -> None:
    if not isinstance(value, kind):
        raise NotInvocable(f"option {name!r} takes {kind.__name__}, not {value!r}")


def _check_choice(spec: dict[str, Any], value: Any) -> None:
    choices = spec.get("choices")
    if choices and value not in [c["value"] for c in choices]:
        raise NotInvocable(f"option {spec['name']!r}: {value!r} is not one of {[c['value'] for c in choices]}")


def modal_answers(
    shown: list[dict[str, Any]], values: dict[str, Any], who: Invoker
) -> tuple[list[dict[str, Any]], dict[str, Any]]:
    """A modal submit's `components` in the shape of the modal the bot showed (action rows or labels).

    Text inputs take a str, selects a list of str, file uploads a list of FileSpec / tuples.
    """
    resolved: dict[str, Any] = {}
    remaining = dict(values)

    def answer(field: dict[str, Any]) -> dict[str, Any]:
        custom_id = field.get("custom_id")
        out: dict[str, Any] = {"type": field["type"], "id": field.get("id", 0), "custom_id": custom_id}
        value = remaining.pop(custom_id, None)
        if field["type"] == 4:  # text input
            if value is None and field.get("required", True):
                raise NotInvocable(f"modal field {custom_id!r} is required")
            out["value"] = value or ""
        elif field["type"] == 19:  # file upload
            ids = []
            for item in value or []:
                attachment = who.make_attachment(FileSpec.of(item))
                resolved.setdefault("attachments", {})[str(attachment.id)] = attachment.payload()
                ids.append(str(attachment.id))
            out["values"] = ids
        else:  # selects
            out["values"] = list(value or [])
        return out

    submitted: list[dict[str, Any]] = []
    for component in shown:
        if component.get("type") == 1:
            children = [answer(child) for child in component.get("components", []) if "custom_id" in child]
            submitted.append({"type": 1, "id": component.get("id", 0), "components": children})
        elif component.get("type") == 18:
            submitted.append({"type": 18, "id": component.get("id", 0), "component": answer(component["component"])})
    if remaining:
        raise NotInvocable(f"the modal has no fields {sorted(remaining)}")
    return submitted, resolved
