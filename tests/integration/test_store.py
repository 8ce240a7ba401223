"""The SQLite layer on a real file: migrations, pragmas, and job transitions."""

from __future__ import annotations

import asyncio
from pathlib import Path

import aiosqlite
import pytest

from bot.engine.states import JobState
from bot.request import GenerationRequest
from bot.store.db import connect, transaction
from bot.store.jobs import IllegalTransition, JobRepository
from bot.store.migrate import available, current_version, migrate, statements


async def test_migrates_an_empty_database(tmp_path: Path) -> None:
    db = await connect(tmp_path / "a.db")
    try:
        applied = await migrate(db)
        assert [m.version for m in applied] == [m.version for m in available()]
        assert await current_version(db) == available()[-1].version
        async with db.execute("SELECT name FROM sqlite_master WHERE type = 'table'") as cursor:
            tables = {row[0] for row in await cursor.fetchall()}
        assert {"jobs", "job_events", "schema_migrations"} <= tables
    finally:
        await db.close()


async def test_already_migrated_database_is_left_alone(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    db = await connect(path)
    await migrate(db)
    await db.close()
    db = await connect(path)
    try:
        assert await migrate(db) == []
        async with db.execute("SELECT COUNT(*) FROM schema_migrations") as cursor:
            assert (await cursor.fetchone())[0] == len(available())
    finally:
        await db.close()


async def test_concurrent_migrators_apply_each_migration_once(tmp_path: Path) -> None:
    path = tmp_path / "a.db"
    conns = [await connect(path) for _ in range(4)]
    try:
        results = await asyncio.gather(*(migrate(c) for c in conns))
        assert sum(len(r) for r in results) == len(available())
    finally:
        for c in conns:
            await c.close()


async def test_pragmas(db: aiosqlite.Connection) -> None:
    for pragma, expected in (("journal_mode", "wal"), ("foreign_keys", 1), ("busy_timeout", 30000)):
        async with db.execute(f"PRAGMA {pragma}") as cursor:
            assert (await cursor.fetchone())[0] == expected


def test_statement_splitter_keeps_triggers_whole() -> None:
    sql = "CREATE TABLE t (a);\nCREATE TRIGGER x AFTER INSERT ON t BEGIN\n  SELECT 1;\n  SELECT 2;\nEND;\n-- end\n"
    assert len(statements(sql)) == 2


async def test_a_failed_migration_rolls_back(tmp_path: Path) -> None:
    db = await connect(tmp_path / "a.db")
    try:
        await migrate(db)
        with pytest.raises(aiosqlite.OperationalError):
            async with transaction(db):
                await db.execute("CREATE TABLE half_done (a)")
                await db.execute("THIS IS NOT SQL")
        async with db.execute("SELECT name FROM sqlite_master WHERE name = 'half_done'") as cursor:
            assert await cursor.fetchone() is None
    finally:
        await db.close()


async def test_job_lifecycle_records_timestamps_and_events(db: aiosqlite.Connection) -> None:
    jobs = JobRepository(db)
    job = await jobs.create(request=GenerationRequest.create(prompt="x"), provider="local", user_id="u1", cost_micros=5)
    assert job.state is JobState.QUEUED and job.queued_at
    moved = await jobs.transition(job.id, JobState.SUBMITTING, expect=JobState.QUEUED)
    assert moved is not None and moved.submitting_at and moved.state is JobState.SUBMITTING
    done = await jobs.transition(job.id, JobState.SUBMITTED, provider_task_id="t-1", poll_url="http://x/1")
    assert done is not None and done.provider_task_id == "t-1"
    assert [e[2] for e in await jobs.events(job.id)] == ["queued", "submitting", "submitted"]
    assert moved.request == GenerationRequest.create(prompt="x")


async def test_transition_is_compare_and_set(db: aiosqlite.Connection) -> None:
    jobs = JobRepository(db)
    job = await jobs.create(request=GenerationRequest.create(prompt="x"), provider="local", user_id="u1", cost_micros=0)
    winners = await asyncio.gather(
        jobs.transition(job.id, JobState.CANCELLED, expect=JobState.QUEUED),
        jobs.transition(job.id, JobState.SUBMITTING, expect=JobState.QUEUED),
    )
    assert sum(w is not None for w in winners) == 1


async def test_illegal_move_is_refused(db: aiosqlite.Connection) -> None:
    jobs = JobRepository(db)
    job = await jobs.create(request=GenerationRequest.create(prompt="x"), provider="local", user_id="u1", cost_micros=0)
    with pytest.raises(IllegalTransition):
        await jobs.transition(job.id, JobState.DONE, expect=JobState.QUEUED)
    with pytest.raises(ValueError, match="not updatable"):
        await jobs.transition(job.id, JobState.SUBMITTING, user_id="someone-else")


async def test_negative_cost_is_refused_by_the_schema(db: aiosqlite.Connection) -> None:
    jobs = JobRepository(db)
    with pytest.raises(aiosqlite.IntegrityError):
        await jobs.create(request=GenerationRequest.create(prompt="x"), provider="local", user_id="u", cost_micros=-1)
