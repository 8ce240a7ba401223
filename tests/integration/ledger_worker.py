"""A separate OS process that races other processes to reserve from one account (used by test_ledger_race).

Usage: python ledger_worker.py DB ACCOUNT AMOUNT_MICROS ATTEMPTS NAME CLOCK_ISO
Prints "ready", waits for a line on stdin (so every worker starts together), then fires ATTEMPTS
reservations at once over a few connections of its own and prints one JSON line:
{"accepted": n, "refusals": [distinct messages]}.
"""

from __future__ import annotations

import asyncio
import json
import sys
from datetime import datetime

from bot.ledger import InsufficientQuota, Ledger
from bot.store.db import connect

CONNECTIONS = 5


async def main(db_path: str, account: str, amount: int, attempts: int, name: str, now: datetime) -> None:
    # Several connections, so that this process's attempts also race each other for SQLite's write lock.
    conns = [await connect(db_path) for _ in range(CONNECTIONS)]
    try:
        ledgers = [Ledger(db, clock=lambda: now) for db in conns]
        print("ready", flush=True)
        sys.stdin.readline()

        async def attempt(i: int) -> str | None:
            try:
                await ledgers[i % CONNECTIONS].reserve(account, amount, job_id=f"{name}-{i}", actor=name)
            except InsufficientQuota as refused:
                return str(refused)
            return None

        outcomes = await asyncio.gather(*(attempt(i) for i in range(attempts)))
        refusals = [o for o in outcomes if o is not None]
        print(json.dumps({"accepted": attempts - len(refusals), "refusals": sorted(set(refusals))}), flush=True)
    finally:
        for db in conns:
            await db.close()


if __name__ == "__main__":
    path, account_id, micros, count, worker, clock = sys.argv[1:7]
    asyncio.run(main(path, account_id, int(micros), int(count), worker, datetime.fromisoformat(clock)))
