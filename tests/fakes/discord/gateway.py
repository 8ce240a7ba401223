"""The gateway websocket: HELLO, IDENTIFY → READY + GUILD_CREATE, heartbeats, RESUME and dispatches.

Frames are uncompressed JSON text (discord.py only decompresses binary frames, so whatever `compress` it asks
for, text works). A session outlives its socket: dispatches sent while the bot is reconnecting are buffered and
replayed after RESUME, as Discord does. A client that closes with 1000/1001 ends its session (Discord
invalidates it), so a restarted bot has to IDENTIFY again.
"""

from __future__ import annotations

import asyncio
import json
import logging
import secrets
from dataclasses import dataclass, field
from typing import TYPE_CHECKING, Any

from aiohttp import WSMsgType, web

if TYPE_CHECKING:
    from .server import FakeDiscord

log = logging.getLogger(__name__)

DISPATCH, HEARTBEAT, IDENTIFY, PRESENCE, VOICE, RESUME, RECONNECT, REQUEST_MEMBERS, INVALID_SESSION, HELLO, ACK = (
    0,
    1,
    2,
    3,
    4,
    6,
    7,
    8,
    9,
    10,
    11,
)

INTENT_GUILDS = 1 << 0
INTENT_GUILD_MEMBERS = 1 << 1
INTENT_GUILD_PRESENCES = 1 << 8
INTENT_GUILD_MESSAGES = 1 << 9
INTENT_DIRECT_MESSAGES = 1 << 12
INTENT_MESSAGE_CONTENT = 1 << 15
PRIVILEGED_INTENTS = INTENT_GUILD_MEMBERS | INTENT_GUILD_PRESENCES | INTENT_MESSAGE_CONTENT


@dataclass(eq=False)
class Session:
    id: str
    intents: int
    shard: list[int] | None
    seq: int = 0
    sent: list[dict[str, Any]] = field(default_factory=list)  # every dispatch, for replay on RESUME
    ws: web.WebSocketResponse | None = None
    ended: bool = False  # closed with 1000/1001 or invalidated: can't be resumed
    ready: bool = False  # READY and every GUILD_CREATE sent
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)

    @property
    def live(self) -> bool:
        return self.ws is not None and not self.ws.closed

    async def dispatch(self, event: str, data: dict[str, Any]) -> dict[str, Any]:
        """Number the event and send it if the bot is connected (else it waits for RESUME)."""
        async with self.lock:
            self.seq += 1
            frame = {"op": DISPATCH, "t": event, "s": self.seq, "d": data}
            self.sent.append(frame)
            if self.live:
                assert self.ws is not None
                await self.ws.send_str(json.dumps(frame))
            return frame


class Gateway:
    def __init__(self, fake: FakeDiscord) -> None:
        self.fake = fake
        self.sessions: list[Session] = []
        self.sockets: set[web.WebSocketResponse] = set()
        self.connections = 0
        self.identifies = 0
        self.resumes = 0
        self.heartbeats = 0
        self.close_codes: list[int | None] = []  # how each client socket ended
        self.heartbeat_interval_ms = 41250

    # --- who gets what -------------------------------------------------------------------------

    @property
    def current(self) -> Session | None:
        """Where an interaction goes: the newest connected session, else the newest resumable one (its events
        wait for RESUME, as Discord's do)."""
        open_sessions = [s for s in self.sessions if not s.ended]
        live = [s for s in open_sessions if s.live]
        return (live or open_sessions or [None])[-1]

    async def send_to_current(self, event: str, data: dict[str, Any]) -> Session:
        session = self.current
        if session is None:
            raise RuntimeError(f"no bot is connected to the fake gateway, can't send {event}")
        await session.dispatch(event, data)
        return session

    async def broadcast(self, event: str, data: dict[str, Any], intent: int) -> None:
        for session in self.sessions:
            if not session.ended and session.intents & intent:
                await session.dispatch(event, data)

    async def request_reconnect(self) -> None:
        """op 7: the bot must reconnect and RESUME."""
        session = self.current
        if session is None or session.ws is None:
            raise RuntimeError("no connected session to reconnect")
        await session.ws.send_str(json.dumps({"op": RECONNECT, "d": None}))

    async def invalidate_session(self, *, resumable: bool = False) -> None:
        """op 9: `resumable=False` makes the bot IDENTIFY again."""
        session = self.current
        if session is None or session.ws is None:
            raise RuntimeError("no connected session to invalidate")
        if not resumable:
            session.ended = True
        await session.ws.send_str(json.dumps({"op": INVALID_SESSION, "d": resumable}))

    async def close_all(self) -> None:
        for ws in list(self.sockets):
            await ws.close(code=1001)

    # --- the socket ------------------------------------------------------------------------------

    async def handle(self, request: web.Request) -> web.WebSocketResponse:
        ws = web.WebSocketResponse(max_msg_size=0)
        await ws.prepare(request)
        self.sockets.add(ws)
        self.connections += 1
        session: Session | None = None
        try:
            await ws.send_str(json.dumps({"op": HELLO, "d": {"heartbeat_interval": self.heartbeat_interval_ms}}))
            async for message in ws:
                if message.type != WSMsgType.TEXT:
                    continue
                frame = json.loads(message.data)
                session = await self._on_frame(ws, frame, session)
        finally:
            self.sockets.discard(ws)
            self.close_codes.append(ws.close_code)
            if session is not None and session.ws is ws:
                session.ws = None
                if ws.close_code in (1000, 1001):
                    session.ended = True
        return ws

    async def _on_frame(
        self, ws: web.WebSocketResponse, frame: dict[str, Any], session: Session | None
    ) -> Session | None:
        op, data = frame.get("op"), frame.get("d")
        if op == HEARTBEAT:
            self.heartbeats += 1
            await ws.send_str(json.dumps({"op": ACK}))
        elif op == IDENTIFY:
            return await self._identify(ws, data)
        elif op == RESUME:
            return await self._resume(ws, data)
        elif op == REQUEST_MEMBERS and session is not None:
            await self._member_chunk(session, data)
        elif op in (PRESENCE, VOICE):
            pass  # accepted, nothing to model
        else:
            self.fake.unhandled.append(("GATEWAY", f"op {op}"))
            await ws.close(code=4001, message=b"Unknown opcode")
        return session

    async def _identify(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        if data.get("token") != self.fake.token:
            await ws.close(code=4004, message=b"Authentication failed")
            return None
        intents = data.get("intents")
        if not isinstance(intents, int):
            await ws.close(code=4013, message=b"Invalid intent(s)")
            return None
        if intents & PRIVILEGED_INTENTS & ~self.fake.privileged_intents:
            await ws.close(code=4014, message=b"Disallowed intent(s)")
            return None
        session = Session(secrets.token_hex(16), intents, data.get("shard"), ws=ws)
        self.sessions.append(session)
        self.identifies += 1
        await session.dispatch("READY", self.fake.ready_payload(session))
        for guild in self.fake.guilds:
            await session.dispatch(
                "GUILD_CREATE", guild.gateway_payload(with_members=bool(intents & INTENT_GUILD_MEMBERS))
            )
        session.ready = True
        return session

    async def _resume(self, ws: web.WebSocketResponse, data: dict[str, Any]) -> Session | None:
        session = next((s for s in self.sessions if s.id == data.get("session_id")), None)
        if data.get("token") != self.fake.token:
            await ws.close(code=4004, message=b"Authentication failed")
            return None
        if session is None or session.ended:
            await ws.send_str(json.dumps({"op": INVALID_SESSION, "d": False}))
            return None
        async with session.lock:
            if session.ws is not None and not session.ws.closed:
                await session.ws.close(code=4000)  # Discord drops the old socket of a resumed session
            session.ws = ws
            after = data.get("seq") or 0
            for frame in session.sent:
                if frame["s"] > after:
                    await ws.send_str(json.dumps(frame))
        self.resumes += 1
        await session.dispatch("RESUMED", {})
        return session

    async def _member_chunk(self, session: Session, data: dict[str, Any]) -> None:
        guild = self.fake.guild(int(data["guild_id"]))
        members = list(guild.members.values())
        if data.get("user_ids"):
            wanted = {int(u) for u in data["user_ids"]}
            members = [m for m in members if m.id in wanted]
        chunk = {
            "guild_id": str(guild.id),
            "members": [m.payload() for m in members],
            "chunk_index": 0,
            "chunk_count": 1,
            "not_found": [],
        }
        if data.get("nonce") is not None:
            chunk["nonce"] = data["nonce"]
        await session.dispatch("GUILD_MEMBERS_CHUNK", chunk)
