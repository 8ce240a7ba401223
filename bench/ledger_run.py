"""The `ledger` scenario's run: N reservations at once against one SQLite database, through reelbot's Ledger.

Payload: {"reservations": N, "processes": P}. One account is funded to cover exactly half of them; the N attempts
are split over P processes (P = 1: N coroutines on the one shared connection, as the bot and the worker run;
P > 1: this process starts P workers, `python -m bench.ledger_run worker ...`, each with its own connection, and
releases them together). Answer: the wall time from the start signal to the last answer, how many were accepted,
the overspend (what was accepted beyond the funds; it must be 0) and whether `ledger verify` is clean, and
SQLite's bare commit rate on the same disk.
"""

from __future__ import annotations

import asyncio
import json
import subprocess
import sys
import time
from datetime import UTC, datetime
from pathlib import Path
from typing import Any

from bench.common import child_main, clean_env
from bench.limits import sqlite_commit_rate

PRICE = 420_000  # a 5 s standard clip, in micro-dollars
NOW = datetime(2026, 1, 15, 12, 0, tzinfo=UTC)


async def attempts(db_path: str, account: str, count: int, name: str, go: Any = None) -> tuple[int, float]:
    """`count` reservations at once over one connection; (accepted, seconds)."""
    from bot.ledger import InsufficientQuota, Ledger
    from bot.store.db import connect

    db = await connect(db_path)
    try:
        ledger = Ledger(db, clock=lambda: NOW)
        if go is not None:
            await go()

        async def one(i: int) -> bool:
            try:
                await ledger.reserve(account, PRICE, job_id=f"{name}-{i}", actor=name)
            except InsufficientQuota:
                return False
            return True

        start = time.perf_counter()
        outcomes = await asyncio.gather(*(one(i) for i in range(count)))
        return sum(outcomes), time.perf_counter() - start
    finally:
        await db.close()


async def main(payload: dict[str, Any]) -> dict[str, Any]:
    from bot.ledger import Ledger
    from bot.store.db import connect
    from bot.store.migrate import migrate

    total, processes = int(payload["reservations"]), int(payload.get("processes", 1))
    scratch = Path(payload["scratch"])
    path = scratch / "ledger.db"
    covered = total // 2
    db = await connect(path)
    await migrate(db)
    ledger = Ledger(db, clock=lambda: NOW)
    account = await ledger.account_for_user("bench", "racer")
    await ledger.grant(account, covered * PRICE, actor="bench", reason="funds for half the attempts")
    if processes == 1:
        accepted, seconds = await attempts(str(path), account, total, "p0")
    else:
        share = total // processes
        env = clean_env()
        workers = [subprocess.Popen([sys.executable, "-m", "bench.ledger_run", "worker", str(path), account,  # noqa: ASYNC220 - started before the clock, waited for below
                                     str(share), f"p{n}"], stdin=subprocess.PIPE, stdout=subprocess.PIPE,
                                    env=env, text=True) for n in range(processes)]  # fmt: skip
        for worker in workers:
            assert worker.stdout is not None
            if worker.stdout.readline().strip() != "ready":
                raise RuntimeError("a ledger worker did not start")
        start = time.perf_counter()
        for worker in workers:
            assert worker.stdin is not None
            worker.stdin.write("go\n")
            worker.stdin.flush()
        reports = []
        for worker in workers:
            out, _ = worker.communicate(timeout=120)
            reports.append(json.loads(out.strip().splitlines()[-1]))
        seconds = time.perf_counter() - start
        accepted = sum(r["accepted"] for r in reports)
        total = share * processes
    balance = await ledger.balance(account)
    mismatches = await ledger.verify()
    await db.close()
    rate = sqlite_commit_rate(scratch / "bare.db")
    return {
        "reservations": total,
        "processes": processes,
        "covered": covered,
        "accepted": accepted,
        "seconds": seconds,
        "overspend_micros": max(0, accepted * PRICE - covered * PRICE),
        "available_micros": balance.available,
        "verify_clean": not mismatches,
        "sqlite_commits_per_s": rate,
    }


def worker(db_path: str, account: str, count: int, name: str) -> None:
    async def wait_for_go() -> None:
        print("ready", flush=True)
        await asyncio.get_running_loop().run_in_executor(None, sys.stdin.readline)

    accepted, seconds = asyncio.run(attempts(db_path, account, count, name, wait_for_go))
    print(json.dumps({"accepted": accepted, "seconds": seconds}), flush=True)


if __name__ == "__main__":
    if sys.argv[1] == "worker":
        worker(sys.argv[2], sys.argv[3], int(sys.argv[4]), sys.argv[5])
    else:
        child_main(main)
