"""Members ask for more quota; a moderator approves it (in full or in part) or denies it with a reason.

A decision is one transaction: a compare-and-set of the request from `open`, the ledger grant and the admin
action commit together, so two moderators pressing Approve at once produce exactly one grant — whether they
share a connection, use two, or run in two processes — and the loser is told who decided and how.
Who may decide is the Discord side's business (it knows the roles); the one rule kept here is that nobody
decides their own request.
"""

from __future__ import annotations

from dataclasses import dataclass

import aiosqlite

from bot.ledger import Balance, Ledger
from bot.money import Micros, fmt_usd, usd
from bot.store.audit import ActionKind, record_action
from bot.store.db import now_iso, transaction
from bot.store.guilds import GuildSettingsRepository
from bot.store.requests import QuotaRequest, QuotaRequestRepository

# The most a member may ask for at once where the server's settings name no limit of their own.
DEFAULT_MAX_REQUEST_MICROS: Micros = usd("25.00")
MAX_REASON_CHARS = 500


class RequestError(Exception):
    """A request or decision refused; the message says why in plain words."""


class InvalidQuotaRequest(RequestError, ValueError):
    pass


class RequestAlreadyOpen(RequestError):
    def __init__(self, existing: QuotaRequest) -> None:
        self.existing = existing
        super().__init__(
            f"you already have a request open (#{existing.id}, {fmt_usd(existing.amount_micros)}: "
            f"{existing.reason}); wait for a moderator's answer or withdraw it first"
        )


class UnknownRequest(RequestError, LookupError):
    pass


class NotAllowed(RequestError):
    pass


class AlreadyDecided(RequestError):
    """Someone else decided (or the member withdrew) first; `request` says who and how."""

    def __init__(self, request: QuotaRequest) -> None:
        self.request = request
        self.decided_by = request.decided_by
        self.state = request.state
        super().__init__(f"request #{request.id} was already {describe_outcome(request)}")


def describe_outcome(request: QuotaRequest) -> str:
    """'approved by 123 ($5.00 of $10.00)', 'denied by 123: not now', 'withdrawn by its member', 'still open'."""
    if request.state == "approved":
        assert request.granted_micros is not None
        part = (
            fmt_usd(request.granted_micros)
            if request.granted_micros == request.amount_micros
            else f"{fmt_usd(request.granted_micros)} of {fmt_usd(request.amount_micros)}"
        )
        return f"approved by {request.decided_by} ({part})"
    if request.state == "denied":
        return f"denied by {request.decided_by}: {request.decision_reason}"
    if request.state == "withdrawn":
        return "withdrawn by its member"
    return "still open"


@dataclass(frozen=True)
class Decision:
    request: QuotaRequest  # as decided: state, granted_micros, decided_by, decision_reason
    approved: bool
    amount_micros: Micros  # granted (0 when denied)
    balance: Balance | None  # the member's balance after the grant (None when denied)
    action_id: int  # the admin action recording it


def _clean_reason(reason: str | None, *, what: str) -> str:
    text = " ".join((reason or "").split())
    if not text:
        raise InvalidQuotaRequest(f"{what} needs a reason")
    if len(text) > MAX_REASON_CHARS:
        raise InvalidQuotaRequest(f"the reason is {len(text)} characters; keep it to {MAX_REASON_CHARS}")
    return text


class QuotaRequests:
    def __init__(self, db: aiosqlite.Connection, ledger: Ledger, guilds: GuildSettingsRepository) -> None:
        self.db = db
        self.ledger = ledger
        self.guilds = guilds
        self.store = QuotaRequestRepository(db)

    async def max_request(self, guild_id: str) -> Micros:
        settings = await self.guilds.get(guild_id)
        limit = getattr(settings, "max_request_micros", None)
        return DEFAULT_MAX_REQUEST_MICROS if limit is None else int(limit)

    async def open_request(self, guild_id: str, user_id: str, amount: Micros, reason: str) -> QuotaRequest:
        """Record a member's request (and a `quota_request` admin action). Raises InvalidQuotaRequest (not
        positive, above the server's limit, no reason) or RequestAlreadyOpen (naming the open one)."""
        if amount <= 0:
            raise InvalidQuotaRequest("ask for more than $0")
        limit = await self.max_request(guild_id)
        if amount > limit:
            raise InvalidQuotaRequest(
                f"{fmt_usd(amount)} is more than this server lets members ask for at once ({fmt_usd(limit)})"
            )
        text = _clean_reason(reason, what="a request")
        async with transaction(self.db) as conn:
            existing = await self.store.open_for(guild_id, user_id, conn=conn)
            if existing is not None:
                raise RequestAlreadyOpen(existing)
            request = await self.store.insert(
                conn, guild_id=guild_id, user_id=user_id, amount_micros=amount, reason=text, at=now_iso()
            )
            await record_action(
                self.db, guild_id=guild_id, actor=user_id, kind=ActionKind.QUOTA_REQUEST, target=user_id,
                amount_micros=amount, reason=text, detail={"request_id": request.id}, conn=conn,
            )  # fmt: skip
        return request

    async def decide(
        self,
        request_id: int,
        *,
        moderator_id: str,
        approve: bool,
        amount: Micros | None = None,
        reason: str | None = None,
    ) -> Decision:
        """Approve (the full amount, or `amount` with 0 < amount ≤ requested) or deny (a reason is required).
        Raises UnknownRequest, NotAllowed (one's own request), AlreadyDecided (someone was first; says who and
        how) or InvalidQuotaRequest."""
        async with transaction(self.db) as conn:
            request = await self.store.get(request_id, conn=conn)
            if request is None:
                raise UnknownRequest(f"there is no quota request #{request_id}")
            if moderator_id == request.user_id:
                raise NotAllowed("you cannot decide your own quota request")
            if not request.is_open:
                raise AlreadyDecided(request)
            at = now_iso()
            if approve:
                granted = request.amount_micros if amount is None else amount
                if not 0 < granted <= request.amount_micros:
                    raise InvalidQuotaRequest(
                        f"approve between $0 and the {fmt_usd(request.amount_micros)} asked for"
                        f" (not {fmt_usd(granted)})"
                    )
                note = " ".join((reason or "").split())[:MAX_REASON_CHARS] or None
                state, kind = "approved", ActionKind.QUOTA_APPROVE
                why = note or f"approved quota request #{request.id}"
            else:
                granted = 0
                note = why = _clean_reason(reason, what="denying a request")
                state, kind = "denied", ActionKind.QUOTA_DENY
            # Compare-and-set under the write lock: exactly one decision, even across processes.
            if not await self.store.close(conn, request.id, state=state, by=moderator_id, at=at,
                                          granted_micros=granted or None, reason=note):  # fmt: skip
                current = await self.store.get(request.id, conn=conn)
                assert current is not None
                raise AlreadyDecided(current)
            balance = None
            if approve:
                account = await self.ledger.account_for_user(request.guild_id, request.user_id, conn=conn)
                balance = await self.ledger.grant(
                    account, granted, actor=moderator_id, conn=conn,
                    reason=f"quota request #{request.id} approved: {note or request.reason}"[:MAX_REASON_CHARS],
                )  # fmt: skip
            action_id = await record_action(
                self.db, guild_id=request.guild_id, actor=moderator_id, kind=kind, target=request.user_id,
                amount_micros=granted if approve else request.amount_micros, reason=why, conn=conn,
                detail={"request_id": request.id, "requested_micros": request.amount_micros},
            )  # fmt: skip
            decided = await self.store.get(request.id, conn=conn)
            assert decided is not None
        return Decision(decided, approve, granted, balance, action_id)

    async def withdraw(self, request_id: int, *, user_id: str) -> QuotaRequest:
        """The member takes back their open request. Raises UnknownRequest, NotAllowed, AlreadyDecided."""
        async with transaction(self.db) as conn:
            request = await self.store.get(request_id, conn=conn)
            if request is None:
                raise UnknownRequest(f"there is no quota request #{request_id}")
            if request.user_id != user_id:
                raise NotAllowed("only the member who asked can withdraw a request")
            if not await self.store.close(conn, request.id, state="withdrawn", by=user_id, at=now_iso()):
                current = await self.store.get(request.id, conn=conn)
                assert current is not None
                raise AlreadyDecided(current)
            await record_action(
                self.db, guild_id=request.guild_id, actor=user_id, kind=ActionKind.QUOTA_WITHDRAW, target=user_id,
                amount_micros=request.amount_micros, reason="withdrawn by the member",
                detail={"request_id": request.id}, conn=conn,
            )  # fmt: skip
            withdrawn = await self.store.get(request.id, conn=conn)
            assert withdrawn is not None
        return withdrawn

    async def attach_card(self, request_id: int, channel_id: str, message_id: str) -> None:
        """Remember the moderators' approval card, so it can be found and edited after a restart."""
        if not await self.store.attach_card(request_id, str(channel_id), str(message_id)):
            raise UnknownRequest(f"there is no quota request #{request_id}")

    async def get(self, request_id: int) -> QuotaRequest:
        request = await self.store.get(request_id)
        if request is None:
            raise UnknownRequest(f"there is no quota request #{request_id}")
        return request

    async def open_requests(self, guild_id: str | None = None) -> list[QuotaRequest]:
        """Requests still waiting for a decision, oldest first."""
        return await self.store.list(guild_id=guild_id, state="open")


__all__ = [
    "AlreadyDecided",
    "Decision",
    "InvalidQuotaRequest",
    "NotAllowed",
    "QuotaRequest",
    "QuotaRequests",
    "RequestAlreadyOpen",
    "RequestError",
    "UnknownRequest",
    "describe_outcome",
]
