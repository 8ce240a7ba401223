"""A server's own settings: the defaults and limits `/generate` applies there, who gets how much, and the
rules for the pool, gifts and approvals. Core, no discord.py.

`set_field` turns what a moderator types into a value (or a ValueError naming the field and the accepted
form); `summary` is the one readable view. Both are pure: storing, the ledger and the audit are
`bot.guild_config`'s job.
"""

from __future__ import annotations

import re
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, Field, ValidationError, field_validator

from bot.money import fmt_usd, usd
from bot.request import AspectRatio, Tier

Period = Literal["daily", "weekly", "monthly"]
NsfwPolicy = Literal["block", "age_restricted_only", "allow"]
TIERS = ("standard", "pro", "4k")
# Discord ids are numbers, but the core does not care what an id looks like as long as it is one token.
_ID = re.compile(r"^[A-Za-z0-9_.:-]{1,64}$")
MAX_BLOCKLIST = 200
MAX_TERM = 100


def _ids(values: Iterable[str], what: str) -> list[str]:
    out: list[str] = []
    for value in values:
        value = str(value).strip()
        if not _ID.match(value):
            raise ValueError(f"{value!r} is not a {what} id")
        if value not in out:
            out.append(value)
    return out


class GuildSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    default_tier: Tier = "standard"
    default_duration: int = Field(5, ge=3, le=15)
    default_aspect_ratio: AspectRatio = "16:9"
    max_tier: Tier = "pro"
    max_duration: int = Field(15, ge=3, le=15)
    # Above this, the member confirms the cost first (ephemeral Confirm/Cancel).
    confirm_threshold_micros: int = Field(usd("1.00"), ge=0)

    # Each member's periodic allowance. The ledger's allowance policy is the one source of truth: these two
    # fields are read from it and written back to it by bot.guild_config (what the document holds is a copy).
    member_allowance_micros: int = Field(0, ge=0)
    allowance_period: Period = "daily"
    # role id -> allowance; a member with any of these roles gets the largest of theirs instead of the above.
    role_allowances: dict[str, int] = Field(default_factory=dict)
    # A job costing more than this waits for a moderator's approval (None: no threshold).
    approval_threshold_micros: int | None = Field(None, ge=0)
    # Members with one of these roles generate without approval; others wait for it (empty: everyone may).
    trusted_roles: list[str] = Field(default_factory=list)
    # Channels where /generate works (empty: all).
    generate_channels: list[str] = Field(default_factory=list)
    # Words and phrases refused in prompts: case-insensitive, whole words.
    blocklist: list[str] = Field(default_factory=list)
    # What to do with clips the provider flags as NSFW.
    nsfw_policy: NsfwPolicy = "age_restricted_only"
    moderator_role_id: str | None = None
    # Where approval cards and the moderators' notices go.
    log_channel_id: str | None = None
    # The shared pool: may members draw from it, and how much each at most per allowance period (None: no cap).
    pool_draws_allowed: bool = False
    pool_draw_cap_micros: int | None = Field(None, ge=0)
    # Gifts between members: against farming with alt accounts.
    gift_min_account_age_days: int = Field(30, ge=0, le=3650)
    gift_min_membership_days: int = Field(7, ge=0, le=3650)
    gift_daily_cap_micros: int = Field(usd("5.00"), ge=0)
    # A job still waiting for approval after this long is released.
    approval_timeout_s: int = Field(24 * 3600, ge=60, le=30 * 24 * 3600)

    @field_validator("role_allowances", mode="after")
    @classmethod
    def _role_allowances(cls, value: dict[str, int]) -> dict[str, int]:
        _ids(value, "role")
        for role, amount in value.items():
            if amount < 0:
                raise ValueError(f"the allowance of role {role} is negative")
        return {role.strip(): amount for role, amount in value.items()}

    @field_validator("trusted_roles", mode="after")
    @classmethod
    def _roles(cls, value: list[str]) -> list[str]:
        return _ids(value, "role")

    @field_validator("generate_channels", mode="after")
    @classmethod
    def _channels(cls, value: list[str]) -> list[str]:
        return _ids(value, "channel")

    @field_validator("moderator_role_id", "log_channel_id", mode="after")
    @classmethod
    def _one_id(cls, value: str | None) -> str | None:
        return None if value is None else _ids([value], "Discord")[0]

    @field_validator("blocklist", mode="after")
    @classmethod
    def _blocklist(cls, value: list[str]) -> list[str]:
        terms: list[str] = []
        for raw in value:
            term = " ".join(raw.split()).casefold()
            if not term:
                continue
            if len(term) > MAX_TERM:
                raise ValueError(f"{term[:20]!r}… is longer than {MAX_TERM} characters")
            if term not in terms:
                terms.append(term)
        if len(terms) > MAX_BLOCKLIST:
            raise ValueError(f"the blocklist holds at most {MAX_BLOCKLIST} words or phrases")
        return terms

    def tier_allowed(self, tier: str) -> bool:
        return TIERS.index(tier) <= TIERS.index(self.max_tier)

    def changed(self, **updates: Any) -> GuildSettings:
        return self.model_validate({**self.model_dump(), **updates})

    # --- decisions the rest of the bot asks about ----------------------------------------------------

    def allowance_for_roles(self, role_ids: Iterable[str]) -> int | None:
        """The largest allowance among the member's roles; None when none of them has one (the member
        allowance applies)."""
        amounts = [self.role_allowances[r] for r in {str(r) for r in role_ids} if r in self.role_allowances]
        return max(amounts) if amounts else None

    def approval_reason(self, cost_micros: int, role_ids: Iterable[str]) -> str | None:
        """Why a job must wait for a moderator, in plain words; None when it may run at once."""
        if self.approval_threshold_micros is not None and cost_micros > self.approval_threshold_micros:
            return (
                f"it costs {fmt_usd(cost_micros)}, above this server's approval threshold of"
                f" {fmt_usd(self.approval_threshold_micros)}"
            )
        if self.trusted_roles and not set(self.trusted_roles) & {str(r) for r in role_ids}:
            return "on this server only members with certain roles generate without a moderator's approval"
        return None

    def channel_allowed(self, channel_id: str | None) -> bool:
        return not self.generate_channels or (channel_id is not None and str(channel_id) in self.generate_channels)

    def blocked_terms(self, text: str) -> list[str]:
        """The blocklist's words and phrases found in `text`: case-insensitive, whole words only (so "ass" does
        not match "class"), any run of spaces inside a phrase."""
        return [term for term in self.blocklist if _term_pattern(term).search(text)]

    def problems(self) -> list[str]:
        """What is inconsistent across fields (each field is valid on its own)."""
        found = []
        if not self.tier_allowed(self.default_tier):
            found.append(f"the default tier {self.default_tier} is above the maximum tier {self.max_tier}")
        if self.default_duration > self.max_duration:
            found.append(
                f"the default duration {self.default_duration} s is above the maximum duration {self.max_duration} s"
            )
        return found


def _term_pattern(term: str) -> re.Pattern[str]:
    words = (re.escape(word) for word in term.split())
    return re.compile(r"(?<!\w)" + r"\s+".join(words) + r"(?!\w)", re.IGNORECASE)


# --- what a moderator types ------------------------------------------------------------------------

_OFF = {"off", "none", "no", "disable", "disabled", "-", "clear"}
_ALL = {"all", "any", "everyone", "everywhere", "none", "clear", "-", "off", ""}
_BOOL = {word: True for word in ("on", "yes", "true", "enable", "enabled", "allow", "1")} | {
    word: False for word in ("off", "no", "false", "disable", "disabled", "deny", "0")
}
_MENTION = re.compile(r"^<(?:@&|#|@!?)?(\d+)>$")
_DURATION = re.compile(r"(\d+)\s*(d|days?|h|hours?|m|min|mins|minutes?|s|secs?|seconds?)?", re.IGNORECASE)
_UNIT_S = {"d": 86400, "h": 3600, "m": 60, "s": 1}


def _money(text: str) -> int:
    try:
        value = usd(text)
    except ValueError:
        raise ValueError(f"{text.strip()!r} is not a dollar amount") from None
    if value < 0:
        raise ValueError("it cannot be negative")
    return value


def _optional_money(text: str) -> int | None:
    return None if text.strip().lower() in _OFF else _money(text)


def _choice(options: tuple[str, ...], aliases: dict[str, str] | None = None) -> Callable[[str], str]:
    def parse(text: str) -> str:
        key = text.strip().lower().replace("-", "_").replace(" ", "_")
        key = (aliases or {}).get(key, key)
        if key not in options:
            raise ValueError(f"{text.strip()!r} is not one of them")
        return key

    return parse


def _int(text: str, *, suffixes: tuple[str, ...] = ()) -> int:
    raw = text.strip().lower()
    for suffix in suffixes:
        raw = raw.removesuffix(suffix).strip()
    if not raw.isdigit():
        raise ValueError(f"{text.strip()!r} is not a whole number")
    return int(raw)


def _seconds(text: str) -> int:
    raw = text.strip().lower().replace(" ", "")
    if raw.isdigit():
        return int(raw)
    total, pos = 0, 0
    for match in _DURATION.finditer(raw):
        if match.start() != pos or not match.group(2):
            raise ValueError(f"{text.strip()!r} is not a length of time")
        total += int(match.group(1)) * _UNIT_S[match.group(2)[0]]
        pos = match.end()
    if pos != len(raw) or not raw:
        raise ValueError(f"{text.strip()!r} is not a length of time")
    return total


def _one_id_text(text: str) -> str:
    token = text.strip()
    match = _MENTION.match(token)
    return match.group(1) if match else token


def _id_list(text: str) -> list[str]:
    if text.strip().lower() in _ALL:
        return []
    return [_one_id_text(token) for token in re.split(r"[\s,]+", text.strip()) if token]


def _optional_id(text: str) -> str | None:
    return None if text.strip().lower() in _OFF | {""} else _one_id_text(text)


def _role_allowances(text: str) -> dict[str, int]:
    if text.strip().lower() in _OFF | {""}:
        return {}
    out: dict[str, int] = {}
    for part in re.split(r"[,;\n]+", text):
        if not part.strip():
            continue
        role, sep, amount = part.strip().replace(":", "=", 1).partition("=")
        if not sep:
            role, _, amount = part.strip().partition(" ")
        if not amount.strip():
            raise ValueError(f"{part.strip()!r} has no amount")
        out[_one_id_text(role)] = _money(amount)
    return out


def _terms(text: str) -> list[str]:
    if text.strip().lower() in _OFF | {""}:
        return []
    return [term.strip() for term in re.split(r"[,;\n]+", text) if term.strip()]


def _flag(text: str) -> bool:
    key = text.strip().lower()
    if key not in _BOOL:
        raise ValueError(f"{text.strip()!r} is neither on nor off")
    return _BOOL[key]


def _show_seconds(seconds: int) -> str:
    parts = []
    for unit, size in (("day", 86400), ("hour", 3600), ("minute", 60), ("second", 1)):
        count, seconds = divmod(seconds, size)
        if count:
            parts.append(f"{count} {unit}{'s' if count != 1 else ''}")
    return " ".join(parts) or "0 seconds"


Mention = Callable[[str], str]


def role_mention(role_id: str) -> str:
    return f"<@&{role_id}>"


def channel_mention(channel_id: str) -> str:
    return f"<#{channel_id}>"


@dataclass(frozen=True)
class FieldSpec:
    label: str
    accepted: str  # the form a moderator types, for error messages and help
    parse: Callable[[str], Any]
    show: Callable[[Any, Mention, Mention], str]


def _usd_or(off: str) -> Callable[[Any, Mention, Mention], str]:
    return lambda v, role, channel: off if v is None else fmt_usd(v)


def _list_or(empty: str, kind: str) -> Callable[[Any, Mention, Mention], str]:
    return lambda v, role, channel: empty if not v else ", ".join((role if kind == "role" else channel)(x) for x in v)


def _days(v: Any, role: Mention, channel: Mention) -> str:
    return f"{v} day{'s' if v != 1 else ''}"


FIELDS: dict[str, FieldSpec] = {
    "default_tier": FieldSpec("Default tier", "standard, pro or 4k", _choice(TIERS), lambda v, r, c: v),
    "max_tier": FieldSpec("Highest tier members may ask for", "standard, pro or 4k", _choice(TIERS), lambda v, r, c: v),
    "default_duration": FieldSpec(
        "Default duration",
        "a number of seconds from 3 to 15, e.g. 5",
        lambda t: _int(t, suffixes=("seconds", "second", "secs", "sec", "s")),
        lambda v, r, c: f"{v} s",
    ),
    "max_duration": FieldSpec(
        "Longest duration members may ask for",
        "a number of seconds from 3 to 15, e.g. 10",
        lambda t: _int(t, suffixes=("seconds", "second", "secs", "sec", "s")),
        lambda v, r, c: f"{v} s",
    ),
    "default_aspect_ratio": FieldSpec(
        "Default aspect ratio", "16:9, 9:16 or 1:1", _choice(("16:9", "9:16", "1:1")), lambda v, r, c: v
    ),
    "confirm_threshold_micros": FieldSpec(
        "Ask members to confirm jobs above", "a dollar amount, e.g. $1.00", _money, lambda v, r, c: fmt_usd(v)
    ),
    "member_allowance_micros": FieldSpec(
        "Allowance per member", "a dollar amount, e.g. $2.50 (0 for none)", _money, lambda v, r, c: fmt_usd(v)
    ),
    "allowance_period": FieldSpec(
        "Allowance refills", "daily, weekly or monthly", _choice(("daily", "weekly", "monthly")), lambda v, r, c: v
    ),
    "role_allowances": FieldSpec(
        "Allowance by role",
        "role=amount pairs separated by commas, e.g. @Patron=$10, @Staff=$5 (none to clear)",
        _role_allowances,
        lambda v, role, c: "none" if not v else ", ".join(f"{role(k)} {fmt_usd(a)}" for k, a in v.items()),
    ),
    "approval_threshold_micros": FieldSpec(
        "Jobs need a moderator's approval above",
        "a dollar amount, e.g. $3.00, or off",
        _optional_money,
        _usd_or("off (no threshold)"),
    ),
    "trusted_roles": FieldSpec(
        "Roles that generate without approval",
        "role mentions or ids, or everyone",
        _id_list,
        _list_or("everyone", "role"),
    ),
    "generate_channels": FieldSpec(
        "Channels where /generate works",
        "channel mentions or ids, or all",
        _id_list,
        _list_or("all channels", "channel"),
    ),
    "blocklist": FieldSpec(
        "Blocked words in prompts",
        "words or phrases separated by commas (none to clear)",
        _terms,
        lambda v, r, c: "none" if not v else ", ".join(v),
    ),
    "nsfw_policy": FieldSpec(
        "Clips flagged NSFW",
        "block, age_restricted_only or allow",
        _choice(
            ("block", "age_restricted_only", "allow"),
            {
                "age_restricted": "age_restricted_only",
                "age_restricted_channels": "age_restricted_only",
                "nsfw_channels": "age_restricted_only",
            },
        ),
        lambda v, r, c: {
            "block": "never shown",
            "age_restricted_only": "shown only in age-restricted channels",
            "allow": "shown anywhere",
        }[v],
    ),
    "moderator_role_id": FieldSpec(
        "Moderator role",
        "a role mention or id, or none",
        _optional_id,
        lambda v, role, c: "none (Manage Server only)" if v is None else role(v),
    ),
    "log_channel_id": FieldSpec(
        "Moderators' log channel",
        "a channel mention or id, or none",
        _optional_id,
        lambda v, r, channel: "none" if v is None else channel(v),
    ),
    "pool_draws_allowed": FieldSpec(
        "Members may draw from the pool", "on or off", _flag, lambda v, r, c: "yes" if v else "no"
    ),
    "pool_draw_cap_micros": FieldSpec(
        "Most a member may draw from the pool per period",
        "a dollar amount, e.g. $2.00, or off for no cap",
        _optional_money,
        _usd_or("no cap"),
    ),
    "gift_min_account_age_days": FieldSpec(
        "Givers' Discord accounts must be at least",
        "a number of days, e.g. 30",
        lambda t: _int(t, suffixes=("days", "day", "d")),
        _days,
    ),
    "gift_min_membership_days": FieldSpec(
        "Givers must have been members for at least",
        "a number of days, e.g. 7",
        lambda t: _int(t, suffixes=("days", "day", "d")),
        _days,
    ),
    "gift_daily_cap_micros": FieldSpec(
        "Most a member may give per day", "a dollar amount, e.g. $5.00", _money, lambda v, r, c: fmt_usd(v)
    ),
    "approval_timeout_s": FieldSpec(
        "Jobs waiting for approval are released after",
        "a length of time from 1m to 30d, e.g. 3600, 90m, 12h or 1d",
        _seconds,
        lambda v, r, c: _show_seconds(v),
    ),
}

# Short names a moderator may type instead of the field's own name.
ALIASES = {
    "tier": "default_tier", "duration": "default_duration", "aspect_ratio": "default_aspect_ratio",
    "confirm_threshold": "confirm_threshold_micros", "allowance": "member_allowance_micros",
    "member_allowance": "member_allowance_micros", "period": "allowance_period",
    "approval_threshold": "approval_threshold_micros", "channels": "generate_channels",
    "nsfw": "nsfw_policy", "moderator_role": "moderator_role_id", "log_channel": "log_channel_id",
    "pool_draws": "pool_draws_allowed", "pool_cap": "pool_draw_cap_micros", "pool_draw_cap": "pool_draw_cap_micros",
    "gift_min_account_age": "gift_min_account_age_days", "gift_min_membership": "gift_min_membership_days",
    "gift_daily_cap": "gift_daily_cap_micros", "approval_timeout": "approval_timeout_s",
}  # fmt: skip


def field_name(name: str) -> str:
    """The settings field a moderator means (its own name or a short alias); ValueError lists the names."""
    key = name.strip().lower().replace("-", "_").replace(" ", "_")
    key = ALIASES.get(key, key)
    if key not in FIELDS:
        raise ValueError(f"there is no setting {name.strip()!r}; the settings are {', '.join(FIELDS)}")
    return key


def _plain(error: ValidationError) -> str:
    first = error.errors(include_url=False, include_input=False)[0]
    return str(first["msg"]).removeprefix("Value error, ")


def set_field(settings: GuildSettings, name: str, text: str) -> GuildSettings:
    """The settings with one field changed from what a moderator typed. Raises ValueError naming the field,
    what is wrong and the accepted form, e.g. "Default duration (default_duration): 20 is above 15; use a
    number of seconds from 3 to 15, e.g. 5"."""
    key = field_name(name)
    spec = FIELDS[key]
    try:
        value = spec.parse(text)
        updated = settings.changed(**{key: value})
    except ValidationError as exc:
        raise ValueError(f"{spec.label} ({key}): {_range_message(exc, text)}; use {spec.accepted}") from None
    except ValueError as exc:
        raise ValueError(f"{spec.label} ({key}): {exc}; use {spec.accepted}") from None
    new_problems = [p for p in updated.problems() if p not in settings.problems()]
    if new_problems:
        raise ValueError(f"{spec.label} ({key}): {'; '.join(new_problems)}")
    return updated


def _range_message(exc: ValidationError, text: str) -> str:
    first = exc.errors(include_url=False, include_input=False)[0]
    context = first.get("ctx") or {}
    shown = text.strip()
    for bound, words in (("ge", "below"), ("gt", "at or below"), ("le", "above"), ("lt", "at or above")):
        if bound in context:
            return f"{shown} is {words} {context[bound]}"
    return _plain(exc)


def describe(name: str, value: Any, *, role: Mention = role_mention, channel: Mention = channel_mention) -> str:
    """One field's value in plain words, as `summary` shows it."""
    return FIELDS[name].show(value, role, channel)


def summary(
    settings: GuildSettings, *, role: Mention = role_mention, channel: Mention = channel_mention
) -> list[tuple[str, str]]:
    """Every setting as (label, value in plain words), in a stable order. Roles and channels are shown with
    `role`/`channel` (Discord mentions by default, which Discord renders as names)."""
    return [(spec.label, spec.show(getattr(settings, name), role, channel)) for name, spec in FIELDS.items()]
