"""What the fake records about interactions: each one it sent, the bot's callbacks, and rule violations."""

from __future__ import annotations

import asyncio
import time
from dataclasses import dataclass, field
from typing import Any

from .guilds import Channel, Guild
from .models import MESSAGE_FLAG_EPHEMERAL, Attachment, Message, User

APPLICATION_COMMAND, MESSAGE_COMPONENT, AUTOCOMPLETE, MODAL_SUBMIT = 2, 3, 4, 5

# Interaction callback types (DD interactions/receiving-and-responding.mdx).
MESSAGE_WITH_SOURCE = 4
DEFERRED_MESSAGE_WITH_SOURCE = 5
DEFERRED_UPDATE_MESSAGE = 6
UPDATE_MESSAGE = 7
AUTOCOMPLETE_RESULT = 8
MODAL = 9

# Which callbacks Discord accepts for which interaction type.
ALLOWED_CALLBACKS = {
    APPLICATION_COMMAND: {MESSAGE_WITH_SOURCE, DEFERRED_MESSAGE_WITH_SOURCE, MODAL},
    MESSAGE_COMPONENT: {
        MESSAGE_WITH_SOURCE,
        DEFERRED_MESSAGE_WITH_SOURCE,
        DEFERRED_UPDATE_MESSAGE,
        UPDATE_MESSAGE,
        MODAL,
    },
    AUTOCOMPLETE: {AUTOCOMPLETE_RESULT},
    MODAL_SUBMIT: {MESSAGE_WITH_SOURCE, DEFERRED_MESSAGE_WITH_SOURCE, DEFERRED_UPDATE_MESSAGE, UPDATE_MESSAGE},
}

RESPONSE_DEADLINE_S = 3.0  # "If the 3 second deadline is exceeded, the token will be invalidated"
TOKEN_LIFETIME_S = 15 * 60


def owners(guild: Guild | None) -> dict[str, str]:
    """`authorizing_integration_owners` for a guild-installed app: the guild's id, or "0" in a DM with the bot."""
    return {"0": str(guild.id) if guild is not None else "0"}


@dataclass
class Violation:
    """Something the bot did (or failed to do) that Discord's rules forbid.

    kinds: "double_response" (a second callback: 40060), "late_response" (callback after the 3 s deadline:
    10062), "no_response" (nothing within 3 s: the member sees "The application did not respond"),
    "invalid_response_type" (e.g. a modal in answer to a modal submit).
    """

    kind: str
    detail: str
    interaction_id: int | None = None
    at: float = field(default_factory=time.monotonic)


@dataclass
class Callback:
    """One POST to /interactions/{id}/{token}/callback, accepted or not."""

    type: int
    data: dict[str, Any]
    files: list[Attachment]
    at: float
    status: int = 200

    @property
    def accepted(self) -> bool:
        return self.status == 200

    @property
    def flags(self) -> int:
        return int(self.data.get("flags", 0) or 0)

    @property
    def ephemeral(self) -> bool:
        return bool(self.flags & MESSAGE_FLAG_EPHEMERAL)

    @property
    def content(self) -> str | None:
        return self.data.get("content")

    @property
    def embeds(self) -> list[dict[str, Any]]:
        return self.data.get("embeds") or []

    @property
    def components(self) -> list[dict[str, Any]]:
        return self.data.get("components") or []

    @property
    def custom_id(self) -> str | None:
        """A modal's custom_id (type 9)."""
        return self.data.get("custom_id")

    @property
    def title(self) -> str | None:
        return self.data.get("title")

    @property
    def choices(self) -> list[dict[str, Any]]:
        return self.data.get("choices") or []


@dataclass(eq=False)
class Interaction:
    """One interaction the fake sent to the bot, and everything the bot did with its token."""

    id: int
    token: str
    type: int
    application_id: int
    user: User
    channel: Channel
    guild: Guild | None
    name: str  # command name, or the component / modal custom_id
    attachment_size_limit: int
    created_at: float = field(default_factory=time.time)
    payload: dict[str, Any] = field(default_factory=dict)
    sent_at: float | None = None  # monotonic, when written to the bot's socket
    callbacks: list[Callback] = field(default_factory=list)
    original: Message | None = None  # the response message (or, for components, the clicked message)
    message: Message | None = None  # the clicked message (components) or the modal's origin
    followups: list[Message] = field(default_factory=list)
    expired: bool = False
    _answered: asyncio.Event = field(default_factory=asyncio.Event, repr=False)

    @property
    def callback(self) -> Callback | None:
        """The accepted initial response, if any."""
        return next((c for c in self.callbacks if c.accepted), None)

    @property
    def acknowledged(self) -> bool:
        return self.callback is not None

    @property
    def responded_at(self) -> float | None:
        callback = self.callback
        return callback.at if callback else None

    @property
    def response_time(self) -> float | None:
        """Seconds from delivery to the accepted callback (the 3-second rule)."""
        if self.responded_at is None or self.sent_at is None:
            return None
        return self.responded_at - self.sent_at

    @property
    def token_expired(self) -> bool:
        return self.expired or time.time() - self.created_at > TOKEN_LIFETIME_S

    async def response(self, timeout: float = RESPONSE_DEADLINE_S) -> Callback:
        """Wait for the bot's accepted initial response (defer, message, modal, update)."""
        try:
            async with asyncio.timeout(timeout):
                await self._answered.wait()
        except TimeoutError as exc:
            tried = [(c.type, c.status) for c in self.callbacks]
            raise TimeoutError(
                f"interaction {self.name!r} got no accepted response in {timeout}s (tried {tried})"
            ) from exc
        assert self.callback is not None
        return self.callback

    def metadata(self) -> dict[str, Any]:
        """`interaction_metadata` on messages that answer this interaction."""
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": self.type,
            "user": self.user.payload(),
            "authorizing_integration_owners": owners(self.guild),
        }
        if self.type == APPLICATION_COMMAND:
            data["name"] = self.name
        if self.original is not None and self.type != MESSAGE_COMPONENT:
            data["original_response_message_id"] = str(self.original.id)
        if self.message is not None and self.type == MESSAGE_COMPONENT:
            data["interacted_message_id"] = str(self.message.id)
        return data

    def mark_answered(self) -> None:
        self._answered.set()

    def messages(self) -> list[Message]:
        """The messages this interaction's token may read or edit: the original response and follow-ups."""
        found = [self.original] if self.original is not None else []
        return found + self.followups
