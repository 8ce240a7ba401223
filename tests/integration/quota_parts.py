"""The server-administration parts (settings, pool, gifts, spend cap, funding) over one real SQLite file,
with an injected clock so tests cross period boundaries and expiries without waiting."""

from __future__ import annotations

from dataclasses import dataclass
from datetime import datetime, timedelta

import aiosqlite

from bot.funding import Funding
from bot.gifts import Gifts
from bot.guild_config import GuildConfig
from bot.ledger import AllowancePolicy, Ledger, Period
from bot.pool import Pool
from bot.spend_cap import SpendCap

OWNER = "1000"
NO_ALLOWANCE = AllowancePolicy(0, Period.DAILY)


class Clock:
    def __init__(self, start: datetime) -> None:
        self.now = start

    def __call__(self) -> datetime:
        return self.now

    def advance(self, **delta: float) -> None:
        self.now += timedelta(**delta)


@dataclass
class Parts:
    db: aiosqlite.Connection
    clock: Clock
    ledger: Ledger
    config: GuildConfig
    pool: Pool
    gifts: Gifts
    spend_cap: SpendCap
    funding: Funding


def build(
    db: aiosqlite.Connection,
    clock: Clock,
    *,
    cap: int | None = None,
    default: AllowancePolicy = NO_ALLOWANCE,
) -> Parts:
    ledger = Ledger(db, clock=clock, default_allowance=default)
    config = GuildConfig(db, ledger)
    pool = Pool(db, ledger, owner_ids=frozenset({OWNER}))
    spend_cap = SpendCap(db, cap, clock=clock)
    return Parts(db, clock, ledger, config, pool, Gifts(db, ledger, config), spend_cap,
                 Funding(ledger, config, pool, spend_cap))  # fmt: skip
