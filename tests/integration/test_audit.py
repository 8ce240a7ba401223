"""The audit: admin actions are append-only and commit with their caller; `/audit`'s stream merges them with the
ledger in time order, filters by member and kind, pages stably while rows are written; the CSV export parses
back to the same rows."""

from __future__ import annotations

import asyncio
import csv
import io
import json
import os
import sqlite3
import subprocess
import sys
from pathlib import Path

import aiosqlite
import pytest

from bot.cli_audit import CSV_COLUMNS
from bot.ledger import Ledger
from bot.money import usd
from bot.store.audit import AuditRow, audit_page, record_action
from bot.store.db import connect, transaction
from bot.store.migrate import migrate

G = "g1"


async def test_admin_actions_are_append_only(db: aiosqlite.Connection) -> None:
    action = await record_action(db, guild_id=G, actor="mod", kind="grant", target="u1", amount_micros=5,
                                 reason="because")  # fmt: skip
    for sql in ("UPDATE admin_actions SET reason = 'rewritten'", "DELETE FROM admin_actions"):
        with pytest.raises(sqlite3.IntegrityError, match="append-only"):
            await db.execute(sql)
    async with db.execute("SELECT id, reason FROM admin_actions") as cursor:
        assert [tuple(row) for row in await cursor.fetchall()] == [(action, "because")]


@pytest.mark.parametrize(
    ("fields", "message"),
    [
        ({"actor": " "}, "needs an actor"),
        ({"reason": ""}, "needs a reason"),
        ({"kind": "Quota Approve"}, "not an action kind"),
    ],
)
async def test_an_action_needs_an_actor_a_reason_and_a_kind(
    db: aiosqlite.Connection, fields: dict[str, str], message: str
) -> None:
    values = {"actor": "mod", "kind": "gift", "reason": "why", **fields}
    with pytest.raises(ValueError, match=message):
        await record_action(db, guild_id=G, **values)


async def test_an_action_commits_or_rolls_back_with_its_callers_transaction(db: aiosqlite.Connection) -> None:
    with pytest.raises(RuntimeError):
        async with transaction(db) as conn:
            await record_action(db, guild_id=G, actor="mod", kind="gift", reason="x", conn=conn)
            raise RuntimeError("the change it records failed")
    assert (await audit_page(db, G)).rows == []
    async with transaction(db) as conn:
        await record_action(db, guild_id=G, actor="mod", kind="gift", reason="x", detail={"job_id": "j1"}, conn=conn)
    [row] = (await audit_page(db, G)).rows
    assert (row.kind, row.job_id, row.detail) == ("gift", "j1", {"job_id": "j1"})


async def seed(db: aiosqlite.Connection) -> Ledger:
    """Two members of G, one of another server; ledger entries and admin actions interleaved in time (a
    millisecond apart: rows of one millisecond are ordered by source, admin actions first)."""
    ledger = Ledger(db)
    u1, u2 = await ledger.account_for_user(G, "u1"), await ledger.account_for_user(G, "u2")
    outsider = await ledger.account_for_user("g2", "u1")
    steps = [
        lambda: ledger.grant(u1, usd("2.00"), actor="mod", reason="welcome"),
        lambda: record_action(db, guild_id=G, actor="u2", kind="quota_request", target="u2", amount_micros=usd("1"),
                              reason="please"),
        lambda: ledger.grant(u2, usd("1.00"), actor="mod", reason="request approved"),
        lambda: record_action(db, guild_id=G, actor="mod", kind="quota_approve", target="u2", amount_micros=usd("1"),
                              reason="ok"),
        lambda: ledger.reserve(u1, usd("0.25"), job_id="job1", actor="u1"),
        lambda: ledger.capture("job1", actor="engine"),
        lambda: ledger.grant(outsider, usd("9.00"), actor="mod", reason="another server"),
        lambda: record_action(db, guild_id="g2", actor="mod", kind="quota_approve", target="u1", reason="elsewhere"),
        lambda: record_action(db, guild_id=None, actor="owner", kind="settings_change", reason="global"),
    ]  # fmt: skip
    for step in steps:
        await step()
        await asyncio.sleep(0.003)
    return ledger


def keys(rows: list[AuditRow]) -> list[tuple[str, str, int]]:
    return [(r.at, r.source, r.id) for r in rows]


async def test_the_stream_merges_ledger_and_actions_newest_first(db: aiosqlite.Connection) -> None:
    await seed(db)
    rows = (await audit_page(db, G, limit=50)).rows
    assert [(r.source, r.kind) for r in rows] == [
        ("ledger", "capture"), ("ledger", "reserve"), ("admin", "quota_approve"), ("ledger", "grant"),
        ("admin", "quota_request"), ("ledger", "grant"),
    ]  # fmt: skip
    assert keys(rows) == sorted(keys(rows), reverse=True)
    capture, reserve = rows[0], rows[1]
    assert (capture.target, capture.amount_micros, capture.held_micros, capture.job_id) == (
        f"user:{G}:u1", -usd("0.25"), -usd("0.25"), "job1",
    )  # fmt: skip
    assert (reserve.amount_micros, reserve.held_micros, reserve.bucket) == (0, usd("0.25"), "extra")


async def test_filters_by_member_as_actor_or_target_and_by_kind(db: aiosqlite.Connection) -> None:
    await seed(db)
    u2 = (await audit_page(db, G, member="u2")).rows
    assert [(r.source, r.kind, r.actor) for r in u2] == [
        ("admin", "quota_approve", "mod"), ("ledger", "grant", "mod"), ("admin", "quota_request", "u2"),
    ]  # fmt: skip
    by_mod = (await audit_page(db, G, member="mod")).rows  # as the actor: both grants and the approval
    assert sorted(r.kind for r in by_mod) == ["grant", "grant", "quota_approve"]
    assert [r.reason for r in (await audit_page(db, G, kind="grant")).rows] == ["request approved", "welcome"]
    assert [r.reason for r in (await audit_page(db, G, kind="quota_approve", member="u1")).rows] == []
    assert [r.reason for r in (await audit_page(db, "g2", kind="quota_approve", member="u1")).rows] == ["elsewhere"]
    assert [r.kind for r in (await audit_page(db, G, source="admin")).rows] == ["quota_approve", "quota_request"]


async def test_pages_are_stable_while_rows_are_written(tmp_path: Path) -> None:
    path = tmp_path / "pages.db"
    reader, writer = await connect(path), await connect(path)
    try:
        await migrate(reader)
        ledger = Ledger(writer)
        account = await ledger.account_for_user(G, "u1")
        for i in range(20):
            await ledger.grant(account, usd("0.01"), actor="mod", reason=f"grant {i}")
            await record_action(writer, guild_id=G, actor="mod", kind="gift", target="u1", reason=f"action {i}")
        snapshot = keys((await audit_page(reader, G, limit=500)).rows)
        assert len(snapshot) == 40

        async def keep_writing(stop: asyncio.Event) -> int:
            written = 0
            while not stop.is_set():
                await ledger.grant(account, usd("0.01"), actor="mod", reason="meanwhile")
                await record_action(writer, guild_id=G, actor="mod", kind="gift", target="u1", reason="meanwhile")
                written += 2
                await asyncio.sleep(0)
            return written

        stop = asyncio.Event()
        writing = asyncio.create_task(keep_writing(stop))
        await asyncio.sleep(0.05)  # some rows newer than the snapshot exist before the first page
        seen: list[AuditRow] = []
        cursor = None
        first = await audit_page(reader, G, limit=7)
        # the first page starts at whatever is newest now; page from its last row on, down to the snapshot
        seen, cursor = list(first.rows), first.next_cursor
        while cursor is not None:
            page = await audit_page(reader, G, limit=7, before_id=cursor)
            seen += page.rows
            cursor = page.next_cursor
            await asyncio.sleep(0.01)  # let the writer add rows between pages
        stop.set()
        assert await writing > 0
        seen_keys = keys(seen)
        assert len(seen_keys) == len(set(seen_keys))  # nothing twice
        assert seen_keys == sorted(seen_keys, reverse=True)  # strictly newest first across pages
        assert set(snapshot) <= set(seen_keys)  # nothing written before paging was skipped
        older = [k for k in seen_keys if k <= snapshot[0]]
        assert older == snapshot  # and what existed is exactly what the pages show below the snapshot's top
    finally:
        await reader.close()
        await writer.close()


async def test_a_bad_cursor_and_limit_are_refused(db: aiosqlite.Connection) -> None:
    with pytest.raises(ValueError, match="not an audit cursor"):
        await audit_page(db, G, before_id="garbage")
    with pytest.raises(ValueError, match="limit"):
        await audit_page(db, G, limit=0)


def run_cli(tmp_path: Path, *args: str) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("REELBOT_", "DISCORD_", "FAL_", "KLING_"))}
    environment.update(REELBOT_DB=str(tmp_path / "reelbot.db"), REELBOT_DATA_DIR=str(tmp_path / "data"))
    return subprocess.run([sys.executable, "-m", "bot", *args], cwd=tmp_path, env=environment, capture_output=True,
                          text=True, timeout=60)  # fmt: skip


async def test_the_csv_export_parses_back_to_the_stream(tmp_path: Path) -> None:
    db = await connect(tmp_path / "reelbot.db")
    try:
        await migrate(db)
        await seed(db)
        await record_action(db, guild_id=G, actor="mod", kind="job_deny", target="u1", amount_micros=usd("0.252"),
                            reason='said "no", firmly\nand twice', detail={"job_id": "job9"})  # fmt: skip
        expected = list(reversed((await audit_page(db, G, limit=500)).rows))  # oldest first, like the file
    finally:
        await db.close()

    result = run_cli(tmp_path, "audit", "export", "--guild", G, "--out", str(tmp_path / "out" / "audit.csv"))
    assert result.returncode == 0, result.stderr
    assert f"wrote {len(expected)} rows" in result.stderr
    with open(tmp_path / "out" / "audit.csv", newline="", encoding="utf-8") as handle:
        reader = csv.DictReader(handle)
        assert tuple(reader.fieldnames or ()) == CSV_COLUMNS
        parsed = list(reader)
    assert len(parsed) == len(expected) == 7
    for line, row in zip(parsed, expected, strict=True):
        assert (line["at"], line["source"], int(line["id"]), line["kind"], line["actor"]) == (
            row.at, row.source, row.id, row.kind, row.actor,
        )  # fmt: skip
        assert line["target"] == (row.target or "") and line["reason"] == row.reason
        assert line["job_id"] == (row.job_id or "")
        # money as decimal dollar strings that read back to the exact micro-dollars
        assert (usd(line["amount_usd"]) if line["amount_usd"] else None) == row.amount_micros
        assert (usd(line["held_usd"]) if line["held_usd"] else None) == row.held_micros
        assert (json.loads(line["detail"]) if line["detail"] else None) == row.detail
    capture = next(line for line in parsed if line["kind"] == "capture")
    assert (capture["amount_usd"], capture["held_usd"]) == ("-0.25", "-0.25")
    assert parsed[-1]["reason"] == 'said "no", firmly\nand twice' and parsed[-1]["job_id"] == "job9"

    to_stdout = run_cli(tmp_path, "audit", "export", "--guild", G, "--member", "u2")
    assert to_stdout.returncode == 0, to_stdout.stderr
    kinds = [line["kind"] for line in csv.DictReader(io.StringIO(to_stdout.stdout))]
    assert kinds == ["quota_request", "grant", "quota_approve"]

    listed = run_cli(tmp_path, "audit", "list", "--guild", G, "--limit", "4", "--json")
    assert listed.returncode == 0, listed.stderr
    first = json.loads(listed.stdout)
    assert len(first["rows"]) == 4 and first["next_cursor"]
    rest = run_cli(tmp_path, "audit", "list", "--guild", G, "--limit", "4", "--before", first["next_cursor"],
                   "--json")  # fmt: skip
    second = json.loads(rest.stdout)
    assert len(second["rows"]) == 3 and second["next_cursor"] is None
    bad = run_cli(tmp_path, "audit", "list", "--guild", G, "--before", "nonsense")
    assert bad.returncode == 2 and "not an audit cursor" in bad.stderr
