"""Opening the SQLite database: WAL, foreign keys, a busy timeout, and explicit transactions."""

from __future__ import annotations

import asyncio
import weakref
from collections.abc import AsyncIterator
from contextlib import asynccontextmanager
from datetime import UTC, datetime
from pathlib import Path

import aiosqlite

BUSY_TIMEOUT_MS = 30_000


def now_iso() -> str:
    """UTC, millisecond precision, one fixed format so that text comparison orders correctly."""
    return datetime.now(UTC).strftime("%Y-%m-%dT%H:%M:%S.%f")[:-3] + "Z"


async def connect(path: Path | str) -> aiosqlite.Connection:
    """A connection in autocommit mode: every write path opens its own transaction with `transaction()`."""
    if str(path) != ":memory:":
        Path(path).parent.mkdir(parents=True, exist_ok=True)
    db = await aiosqlite.connect(str(path), isolation_level=None)
    db.row_factory = aiosqlite.Row
    await db.execute(f"PRAGMA busy_timeout = {BUSY_TIMEOUT_MS}")
    await db.execute("PRAGMA journal_mode = WAL")
    await db.execute("PRAGMA synchronous = NORMAL")
    await db.execute("PRAGMA foreign_keys = ON")
    return db


# One connection is shared by many coroutines; SQLite has one transaction per connection, so coroutines
# take turns. (Not re-entrant: code inside a transaction passes `conn` down instead of opening another.)
_locks: weakref.WeakKeyDictionary[aiosqlite.Connection, asyncio.Lock] = weakref.WeakKeyDictionary()


def _lock(db: aiosqlite.Connection) -> asyncio.Lock:
    lock = _locks.get(db)
    if lock is None:
        lock = _locks[db] = asyncio.Lock()
    return lock


@asynccontextmanager
async def transaction(db: aiosqlite.Connection) -> AsyncIterator[aiosqlite.Connection]:
    """BEGIN IMMEDIATE takes the write lock up front, so read-then-write logic (a balance check, a state
    check) cannot interleave with another writer — in this process or any other on the same file."""
    async with _lock(db):
        await db.execute("BEGIN IMMEDIATE")
        try:
            yield db
        except BaseException:
            await db.execute("ROLLBACK")
            raise
        else:
            await db.execute("COMMIT")
