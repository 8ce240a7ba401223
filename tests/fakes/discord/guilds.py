"""The fake's world, part 2: guilds and channels (text, forum, announcement, threads, DMs).

A guild computes permissions with Discord's documented algorithm (base role permissions, then @everyone / role /
member overwrites), so the `app_permissions` in an interaction, the GUILD_CREATE overwrites discord.py caches
and the 403s the REST side answers always agree.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import UTC, datetime
from typing import Any

from .models import (
    ALL_PERMISSIONS,
    BOT_DEFAULT,
    EVERYONE_DEFAULT,
    THREAD_TYPES,
    ChannelType,
    Member,
    Message,
    Overwrite,
    Permission,
    Role,
    User,
    World,
    iso,
)


@dataclass(eq=False)
class Channel:
    id: int
    type: ChannelType
    name: str | None
    guild: Guild | None
    world: World
    position: int = 0
    nsfw: bool = False
    topic: str | None = None
    parent: Channel | None = None  # the category, or a thread's channel
    overwrites: dict[int, Overwrite] = field(default_factory=dict)
    recipients: list[User] = field(default_factory=list)  # DMs
    messages: list[Message] = field(default_factory=list)
    # threads
    owner_id: int | None = None
    archived: bool = False
    locked: bool = False
    invitable: bool = True
    auto_archive_duration: int = 1440
    thread_members: set[int] = field(default_factory=set)
    applied_tags: list[str] = field(default_factory=list)
    rate_limit_per_user: int = 0
    created_at: datetime = field(default_factory=lambda: datetime.now(UTC))

    @property
    def is_thread(self) -> bool:
        return self.type in THREAD_TYPES

    @property
    def is_dm(self) -> bool:
        return self.type == ChannelType.DM

    @property
    def permission_source(self) -> Channel:
        """Threads use their parent channel's overwrites."""
        return self.parent if self.is_thread and self.parent is not None else self

    @property
    def effective_nsfw(self) -> bool:
        return self.permission_source.nsfw

    def live_messages(self) -> list[Message]:
        return [m for m in self.messages if not m.deleted]

    # --- permissions --------------------------------------------------------------------------

    def set_overwrite(self, target: User | Role | Member, *, allow: int = 0, deny: int = 0) -> None:
        """Set the channel overwrite for a role or member (Discord's model), and tell connected bots."""
        if self.guild is None or self.is_thread:
            raise ValueError("overwrites exist only on guild channels (threads use their parent's)")
        kind = 0 if isinstance(target, Role) else 1
        self.overwrites[target.id] = Overwrite(target.id, kind, int(allow), int(deny))
        self.world.notify("CHANNEL_UPDATE", self.payload(), self.guild)

    def deny_bot(self, permissions: int) -> None:
        """Take permissions away from the bot in this channel (a member overwrite for the bot user)."""
        guild = self._require_guild()
        current = self.overwrites.get(guild.bot_member.id)
        allow = current.allow & ~int(permissions) if current else 0
        deny = (current.deny if current else 0) | int(permissions)
        self.set_overwrite(guild.bot_member, allow=allow, deny=deny)

    def allow_bot(self, permissions: int) -> None:
        guild = self._require_guild()
        current = self.overwrites.get(guild.bot_member.id)
        deny = current.deny & ~int(permissions) if current else 0
        allow = (current.allow if current else 0) | int(permissions)
        self.set_overwrite(guild.bot_member, allow=allow, deny=deny)

    def bot_permissions(self) -> int:
        guild = self._require_guild()
        return guild.permissions_for(guild.bot_member, self)

    def _require_guild(self) -> Guild:
        if self.guild is None:
            raise ValueError(f"channel {self.id} is not in a guild")
        return self.guild

    # --- JSON ---------------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        if self.is_dm:
            return {
                "id": str(self.id),
                "type": int(self.type),
                "last_message_id": self._last_message_id(),
                "recipients": [user.payload() for user in self.recipients],
                "flags": 0,
            }
        data: dict[str, Any] = {
            "id": str(self.id),
            "type": int(self.type),
            "guild_id": str(self.guild.id) if self.guild else None,
            "name": self.name,
            "parent_id": str(self.parent.id) if self.parent else None,
            "nsfw": self.nsfw,
            "rate_limit_per_user": self.rate_limit_per_user,
            "last_message_id": self._last_message_id(),
            "flags": 0,
        }
        if self.is_thread:
            live = [m for m in self.messages if not m.deleted]
            data.update(
                owner_id=str(self.owner_id),
                message_count=len(live),
                total_message_sent=len(self.messages),
                member_count=len(self.thread_members),
                applied_tags=list(self.applied_tags),
                thread_metadata={
                    "archived": self.archived,
                    "auto_archive_duration": self.auto_archive_duration,
                    "archive_timestamp": iso(self.created_at),
                    "locked": self.locked,
                    "invitable": self.invitable,
                    "create_timestamp": iso(self.created_at),
                },
            )
            return data
        data.update(
            position=self.position,
            topic=self.topic,
            permission_overwrites=[o.payload() for o in self.overwrites.values()],
        )
        if self.type in (ChannelType.GUILD_FORUM, ChannelType.GUILD_MEDIA):
            data.update(
                available_tags=[],
                default_reaction_emoji=None,
                default_sort_order=None,
                default_forum_layout=0,
                default_thread_rate_limit_per_user=0,
                default_auto_archive_duration=1440,
            )
        return data

    def _last_message_id(self) -> str | None:
        live = self.live_messages()
        return str(live[-1].id) if live else None


@dataclass(eq=False)
class Guild:
    id: int
    name: str
    owner: User
    world: World
    bot_user: User
    upload_limit: int
    roles: dict[int, Role] = field(default_factory=dict)
    members: dict[int, Member] = field(default_factory=dict)
    channels: list[Channel] = field(default_factory=list)  # incl. threads
    locale: str = "en-US"
    premium_tier: int = 0

    def __post_init__(self) -> None:
        self.roles[self.id] = Role(self.id, "@everyone", EVERYONE_DEFAULT, self, position=0)
        self.bot_role = self.add_role(self.bot_user.username, BOT_DEFAULT, managed=True, _notify=False)
        self.members[self.owner.id] = Member(self.owner, self)
        self.members[self.bot_user.id] = Member(self.bot_user, self, roles=[self.bot_role])

    @property
    def everyone(self) -> Role:
        return self.roles[self.id]

    @property
    def bot_member(self) -> Member:
        return self.members[self.bot_user.id]

    @property
    def threads(self) -> list[Channel]:
        return [c for c in self.channels if c.is_thread]

    # --- building -----------------------------------------------------------------------------

    def add_role(self, name: str, permissions: int = 0, *, managed: bool = False, _notify: bool = True) -> Role:
        role = Role(self.world.next_id(), name, int(permissions), self, position=len(self.roles), managed=managed)
        self.roles[role.id] = role
        if _notify:
            self.world.notify("GUILD_ROLE_CREATE", {"guild_id": str(self.id), "role": role.payload()}, self)
        return role

    def add_member(
        self,
        user: User,
        roles: list[Role] | tuple[Role, ...] = (),
        *,
        permissions: int | None = None,
        nick: str | None = None,
    ) -> Member:
        """Add a member; `permissions` is a shortcut that gives them a personal role with those permissions."""
        member_roles = list(roles)
        if permissions is not None:
            member_roles.append(self.add_role(f"{user.username}-permissions", permissions))
        member = Member(user, self, roles=member_roles, nick=nick)
        self.members[user.id] = member
        return member

    def add_text_channel(self, name: str, *, nsfw: bool = False, topic: str | None = None) -> Channel:
        return self._add_channel(name, ChannelType.GUILD_TEXT, nsfw=nsfw, topic=topic)

    def add_announcement_channel(self, name: str) -> Channel:
        return self._add_channel(name, ChannelType.GUILD_ANNOUNCEMENT)

    def add_forum_channel(self, name: str, *, nsfw: bool = False) -> Channel:
        return self._add_channel(name, ChannelType.GUILD_FORUM, nsfw=nsfw)

    def add_thread(self, parent: Channel, name: str, *, private: bool = False, owner: User | None = None) -> Channel:
        """A thread that already exists (e.g. a user's), sent in GUILD_CREATE or as THREAD_CREATE."""
        thread = self.new_thread(
            parent, name, ChannelType.PRIVATE_THREAD if private else ChannelType.PUBLIC_THREAD, owner or self.owner
        )
        self.world.notify("THREAD_CREATE", {**thread.payload(), "newly_created": True}, self)
        return thread

    def new_thread(
        self,
        parent: Channel,
        name: str,
        kind: ChannelType,
        owner: User,
        *,
        thread_id: int | None = None,
        auto_archive_duration: int = 1440,
    ) -> Channel:
        thread = Channel(
            thread_id or self.world.next_id(),
            kind,
            name,
            self,
            self.world,
            parent=parent,
            owner_id=owner.id,
            auto_archive_duration=auto_archive_duration,
        )
        thread.thread_members.add(owner.id)
        self.channels.append(thread)
        return thread

    def _add_channel(self, name: str, kind: ChannelType, *, nsfw: bool = False, topic: str | None = None) -> Channel:
        channel = Channel(
            self.world.next_id(), kind, name, self, self.world, position=len(self.channels), nsfw=nsfw, topic=topic
        )
        self.channels.append(channel)
        self.world.notify("CHANNEL_CREATE", channel.payload(), self)
        return channel

    def set_bot_permissions(self, permissions: int) -> None:
        """The bot's guild-wide permissions (its managed role)."""
        self.bot_role.set_permissions(int(permissions))

    # --- permissions (DD topics/permissions.mdx, "Permission Overwrites") ----------------------

    def permissions_for(self, member: Member, channel: Channel | None = None) -> int:
        # Plain ints throughout: `~` on an IntFlag would drop the bits the enum doesn't name.
        if member.id == self.owner.id:
            return ALL_PERMISSIONS
        base = int(self.everyone.permissions)
        for role in member.roles:
            base |= int(role.permissions)
        if base & Permission.ADMINISTRATOR:
            return ALL_PERMISSIONS
        if channel is None:
            return base
        source = channel.permission_source
        perms = base
        everyone = source.overwrites.get(self.id)
        if everyone:
            perms = (perms & ~everyone.deny) | everyone.allow
        allow = deny = 0
        for role in member.roles:
            overwrite = source.overwrites.get(role.id)
            if overwrite and overwrite.type == 0:
                allow |= overwrite.allow
                deny |= overwrite.deny
        perms = (perms & ~deny) | allow
        personal = source.overwrites.get(member.id)
        if personal and personal.type == 1:
            perms = (perms & ~personal.deny) | personal.allow
        # Implicit permissions: no VIEW_CHANNEL means nothing; in a channel without SEND_MESSAGES the
        # sending-related permissions are denied too (threads are governed by SEND_MESSAGES_IN_THREADS).
        if not perms & Permission.VIEW_CHANNEL:
            return 0
        if not channel.is_thread and not perms & Permission.SEND_MESSAGES:
            perms &= ~int(
                Permission.MENTION_EVERYONE
                | Permission.SEND_TTS_MESSAGES
                | Permission.ATTACH_FILES
                | Permission.EMBED_LINKS
            )
        return perms

    # --- JSON ---------------------------------------------------------------------------------

    def payload(self) -> dict[str, Any]:
        """The guild object (GET /guilds/{id})."""
        return {
            "id": str(self.id),
            "name": self.name,
            "icon": None,
            "splash": None,
            "discovery_splash": None,
            "owner_id": str(self.owner.id),
            "afk_channel_id": None,
            "afk_timeout": 300,
            "verification_level": 0,
            "default_message_notifications": 0,
            "explicit_content_filter": 0,
            "roles": [role.payload() for role in self.roles.values()],
            "emojis": [],
            "stickers": [],
            "features": [],
            "mfa_level": 0,
            "application_id": None,
            "system_channel_id": None,
            "system_channel_flags": 0,
            "rules_channel_id": None,
            "vanity_url_code": None,
            "description": None,
            "banner": None,
            "premium_tier": self.premium_tier,
            "preferred_locale": self.locale,
            "public_updates_channel_id": None,
            "nsfw_level": 0,
            "premium_progress_bar_enabled": False,
        }

    def gateway_payload(self, *, with_members: bool) -> dict[str, Any]:
        """GUILD_CREATE: the guild plus channels, active threads and (the bot, or all with GUILD_MEMBERS) members."""
        members = list(self.members.values()) if with_members else [self.bot_member]
        return {
            **self.payload(),
            "unavailable": False,
            "large": False,
            "member_count": len(self.members),
            "joined_at": iso(self.bot_member.joined_at),
            "channels": [c.payload() for c in self.channels if not c.is_thread],
            "threads": [t.payload() for t in self.threads if not t.archived],
            "members": [m.payload() for m in members],
            "voice_states": [],
            "presences": [],
            "stage_instances": [],
            "guild_scheduled_events": [],
            "soundboard_sounds": [],
        }
