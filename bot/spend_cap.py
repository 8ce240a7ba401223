"""The operator's daily spend cap (`REELBOT_DAILY_SPEND_CAP_USD`): what all servers together may commit on the
operator's provider account per UTC day.

`check` runs inside `Engine.accept`'s transaction, after the write lock is taken, so acceptances in any
number of coroutines or processes are counted one after another and can never pass the cap together.
Committed = reserved + captured for the jobs accepted today; a released job gives its money back and stops
counting. The first refusal of a day is recorded in its own row, so the owners are told once a day however
many processes refuse jobs and however often they restart.
"""

from __future__ import annotations

from dataclasses import dataclass
from datetime import UTC, date, datetime, timedelta

import aiosqlite

from bot.ledger import Clock, iso, utc_now
from bot.money import Micros, fmt_usd
from bot.store.spend import SpendRepository


class SpendCapReached(Exception):
    """A job would take the day's spending past the operator's cap; nothing was recorded or charged."""

    def __init__(self, *, day: str, cap: Micros, committed: Micros, needed: Micros, resets_at: datetime) -> None:
        self.day = day
        self.cap = cap
        self.committed = committed
        self.needed = needed
        self.resets_at = resets_at
        super().__init__(
            "the bot's daily spending limit has been reached, so it cannot start new jobs until the limit resets"
            " at 00:00 UTC; nothing was charged"
        )

    def owner_message(self) -> str:
        """For the owners' DM: the numbers behind it."""
        return (
            f"reelbot refused a job on {self.day} (UTC): {fmt_usd(self.committed)} of today's"
            f" {fmt_usd(self.cap)} cap (REELBOT_DAILY_SPEND_CAP_USD) is already committed and the job costs"
            f" {fmt_usd(self.needed)}. New jobs are refused until 00:00 UTC."
        )


@dataclass(frozen=True)
class SpendToday:
    day: str
    cap: Micros | None
    committed: Micros


def _day(value: str | date | datetime) -> str:
    if isinstance(value, datetime):
        return value.astimezone(UTC).date().isoformat()
    if isinstance(value, date):
        return value.isoformat()
    return date.fromisoformat(value).isoformat()


class SpendCap:
    def __init__(self, db: aiosqlite.Connection, cap: Micros | None, *, clock: Clock = utc_now) -> None:
        if cap is not None and cap < 0:
            raise ValueError("the daily spend cap cannot be negative")
        self.db = db
        self.cap = cap
        self.clock = clock
        self.store = SpendRepository(db)

    def _today(self) -> tuple[datetime, datetime]:
        now = self.clock()
        now = now.replace(tzinfo=UTC) if now.tzinfo is None else now.astimezone(UTC)
        start = now.replace(hour=0, minute=0, second=0, microsecond=0)
        return start, start + timedelta(days=1)

    async def committed_today(self, *, conn: aiosqlite.Connection | None = None) -> SpendToday:
        start, end = self._today()
        committed = await self.store.committed(conn or self.db, iso(start), iso(end))
        return SpendToday(start.date().isoformat(), self.cap, committed)

    async def check(self, conn: aiosqlite.Connection, amount: Micros) -> None:
        """Raise SpendCapReached if `amount` would take today's committed spend past the cap. Call it inside
        the transaction that reserves the money (the caller's `conn`), so the sum cannot go stale."""
        if self.cap is None:
            return
        start, end = self._today()
        committed = await self.store.committed(conn, iso(start), iso(end))
        if committed + amount > self.cap:
            raise SpendCapReached(day=start.date().isoformat(), cap=self.cap, committed=committed, needed=amount,
                                  resets_at=end)  # fmt: skip

    async def record_refusal(self, refused: SpendCapReached) -> bool:
        """Remember that the day's cap refused a job (in its own transaction: the job's was rolled back).
        True for the day's first refusal."""
        return await self.store.note_refusal(refused.day, cap_micros=refused.cap, committed_micros=refused.committed,
                                             at=iso(self.clock()))  # fmt: skip

    async def owner_notice_due(self, day: str | date | datetime | None = None) -> bool:
        """Has the cap refused a job that day (default: today) without the owners having been told yet?"""
        row = await self.store.day(_day(day) if day is not None else self._today()[0].date().isoformat())
        return row is not None and row.told_at is None

    async def mark_owner_told(self, day: str | date | datetime | None = None) -> bool:
        """Claim the day's notice before sending it: True for exactly one caller across all processes (and only
        once a refusal was recorded), so the owners are told at most once a day."""
        key = _day(day) if day is not None else self._today()[0].date().isoformat()
        return await self.store.mark_told(key, iso(self.clock()))
