"""Overspending is impossible: many concurrent reservations — coroutines, connections, OS processes — against
a balance that covers exactly 50 of them accept exactly 50."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

from bot.ledger import AllowancePolicy, InsufficientQuota, Ledger, Period
from bot.money import usd
from bot.store.db import connect
from bot.store.ledger import LedgerRepository
from bot.store.migrate import migrate
from tests.integration.processes import release_together

PRICE = usd("0.10")
COVERED = 50
ATTEMPTS = 200
NOW = datetime(2025, 1, 15, 12, 0, tzinfo=UTC)
POLICY = AllowancePolicy(usd("2.00"), Period.DAILY)
WORKER = Path(__file__).with_name("ledger_worker.py")
REFUSAL = "this costs $0.10 but you have $0.00 available ($5.00 reserved by jobs in progress)"


async def funded_account(db: aiosqlite.Connection) -> tuple[Ledger, str]:
    """An account whose allowance ($2) and extra ($3) together cover exactly COVERED reservations."""
    ledger = Ledger(db, clock=lambda: NOW, default_allowance=POLICY)
    account = await ledger.account_for_user("g", "racer")
    await ledger.grant(account, usd("3.00"), actor="test", reason="race")
    assert (await ledger.balance(account)).available == COVERED * PRICE
    return ledger, account


async def attempt(ledger: Ledger, account: str, job_id: str) -> str | None:
    try:
        await ledger.reserve(account, PRICE, job_id=job_id, actor="racer")
    except InsufficientQuota as refused:
        return str(refused)
    return None


async def settled(ledger: Ledger, account: str) -> None:
    balance = await ledger.balance(account)
    assert (balance.reserved, balance.available, balance.balance) == (COVERED * PRICE, 0, COVERED * PRICE)
    assert await ledger.verify() == []


async def test_200_coroutines_on_one_connection(tmp_path: Path) -> None:
    db = await connect(tmp_path / "race.db")
    try:
        await migrate(db)
        ledger, account = await funded_account(db)
        outcomes = await asyncio.gather(*(attempt(ledger, account, f"job-{i}") for i in range(ATTEMPTS)))
        refusals = [o for o in outcomes if o is not None]
        assert ATTEMPTS - len(refusals) == COVERED
        assert all(r.startswith(REFUSAL) for r in refusals), refusals[0]
        await settled(ledger, account)
    finally:
        await db.close()


async def test_200_coroutines_on_eight_connections(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    conns = [await connect(path) for _ in range(8)]
    watcher = await connect(path)
    try:
        await migrate(conns[0])
        _, account = await funded_account(conns[0])
        ledgers = [Ledger(c, clock=lambda: NOW, default_allowance=POLICY) for c in conns]
        lowest: list[int] = []
        done = asyncio.Event()

        async def watch() -> None:  # samples committed state from outside while the race runs
            store = LedgerRepository(watcher)
            while not done.is_set():
                row = await store.get_account(account)
                assert row is not None
                lowest.append(row.balance_micros - row.reserved_micros)
                await asyncio.sleep(0)

        watching = asyncio.create_task(watch())
        outcomes = await asyncio.gather(
            *(attempt(ledgers[i % len(ledgers)], account, f"job-{i}") for i in range(ATTEMPTS))
        )
        done.set()
        await watching
        refusals = [o for o in outcomes if o is not None]
        assert ATTEMPTS - len(refusals) == COVERED
        assert all(r.startswith(REFUSAL) for r in refusals)
        assert lowest and min(lowest) >= 0
        await settled(ledgers[0], account)
    finally:
        for c in (*conns, watcher):
            await c.close()


def start_workers(path: Path, account: str) -> list[subprocess.Popen[str]]:
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    clock = NOW.isoformat()
    return [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(path), account, str(PRICE), str(ATTEMPTS // 4), f"w{n}", clock],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(4)
    ]


def race(workers: list[subprocess.Popen[str]]) -> list[dict]:
    """Wait until every worker is connected, start them together, collect their reports."""
    return [json.loads(out) for out in release_together(workers)]


def test_four_processes_racing_on_one_file(tmp_path: Path) -> None:
    path = tmp_path / "race.db"

    async def fund() -> str:
        db = await connect(path)
        try:
            await migrate(db)
            ledger = Ledger(db, clock=lambda: NOW)  # extras only: the workers need not agree on an allowance
            account = await ledger.account_for_user("g", "racer")
            await ledger.grant(account, COVERED * PRICE, actor="test", reason="race")
            return account
        finally:
            await db.close()

    async def check(account: str) -> None:
        db = await connect(path)
        try:
            await settled(Ledger(db, clock=lambda: NOW), account)
        finally:
            await db.close()

    account = asyncio.run(fund())
    reports = race(start_workers(path, account))
    assert sum(r["accepted"] for r in reports) == COVERED
    assert {m for r in reports for m in r["refusals"]} == {REFUSAL}
    asyncio.run(check(account))
