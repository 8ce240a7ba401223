"""A separate OS process that races others to decide one quota request (used by test_requests).

Usage: python requests_worker.py DB REQUEST_ID MODERATOR_ID APPROVE(1|0) [AMOUNT_MICROS]
Prints "ready", waits for a line on stdin (so every worker starts together), decides, and prints one JSON
line: {"won": true, "granted": n} or {"won": false, "error": "<AlreadyDecided message>"}.
"""

from __future__ import annotations

import asyncio
import json
import sys

from bot.ledger import Ledger
from bot.requests import AlreadyDecided, QuotaRequests
from bot.store.db import connect
from bot.store.guilds import GuildSettingsRepository


async def main(db_path: str, request_id: int, moderator: str, approve: bool, amount: int | None) -> None:
    db = await connect(db_path)
    try:
        requests = QuotaRequests(db, Ledger(db), GuildSettingsRepository(db))
        print("ready", flush=True)
        sys.stdin.readline()
        try:
            decision = await requests.decide(request_id, moderator_id=moderator, approve=approve, amount=amount,
                                             reason=None if approve else f"denied by {moderator}")  # fmt: skip
        except AlreadyDecided as lost:
            print(json.dumps({"won": False, "error": str(lost)}), flush=True)
        else:
            print(json.dumps({"won": True, "granted": decision.amount_micros}), flush=True)
    finally:
        await db.close()


if __name__ == "__main__":
    path, request, mod, approving = sys.argv[1:5]
    micros = int(sys.argv[5]) if len(sys.argv) > 5 else None
    asyncio.run(main(path, int(request), mod, approving == "1", micros))
