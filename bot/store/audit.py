"""The audit: admin actions (append-only) and one time-ordered stream of them merged with the ledger.

Every decision a moderator, an owner or reelbot itself makes about money or settings is one `admin_actions`
row; the money itself moves in `ledger_entries`. `audit_page` reads both for one server, newest first, with
a keyset cursor so that rows written while someone pages never shift or repeat what they see.
"""

from __future__ import annotations

import json
import re
from collections.abc import AsyncIterator
from dataclasses import dataclass
from enum import StrEnum
from typing import Any, Literal

import aiosqlite

from bot.store.db import now_iso, transaction


class ActionKind(StrEnum):
    """The kinds reelbot writes; `record_action` accepts any lowercase identifier, so a new one needs no migration."""

    SETTINGS_CHANGE = "settings_change"
    QUOTA_REQUEST = "quota_request"
    QUOTA_APPROVE = "quota_approve"
    QUOTA_DENY = "quota_deny"
    QUOTA_WITHDRAW = "quota_withdraw"
    GIFT = "gift"
    POOL_FUND = "pool_fund"
    JOB_APPROVE = "job_approve"
    JOB_DENY = "job_deny"
    JOB_APPROVAL_EXPIRED = "job_approval_expired"
    GRANT = "grant"


Source = Literal["ledger", "admin"]
_KIND = re.compile(r"^[a-z0-9_]+$")
_MAX_LIMIT = 500


async def record_action(
    db: aiosqlite.Connection,
    *,
    guild_id: str | None,
    actor: str,
    kind: str,
    target: str | None = None,
    amount_micros: int | None = None,
    reason: str,
    detail: dict[str, Any] | None = None,
    conn: aiosqlite.Connection | None = None,
) -> int:
    """Append one admin action and return its id. Pass `conn` to write it in the caller's transaction (so the
    action and the change it records commit together); otherwise it gets a transaction of its own.
    A `job_id` in `detail` is also stored in its own column, for the audit's job column."""
    if not actor or not actor.strip():
        raise ValueError("an admin action needs an actor")
    if not reason or not reason.strip():
        raise ValueError("an admin action needs a reason")
    kind = str(kind)
    if not _KIND.match(kind):
        raise ValueError(f"{kind!r} is not an action kind (lowercase letters, digits and _)")
    detail_json = json.dumps(detail, sort_keys=True, default=str) if detail else None
    job_id = str(detail["job_id"]) if detail and detail.get("job_id") else None
    values = (guild_id, actor, kind, target, amount_micros, reason, job_id, detail_json, now_iso())
    sql = (
        "INSERT INTO admin_actions (guild_id, actor, kind, target, amount_micros, reason, job_id, detail_json,"
        " created_at) VALUES (?,?,?,?,?,?,?,?,?)"
    )
    if conn is not None:
        cursor = await conn.execute(sql, values)
    else:
        async with transaction(db) as own:
            cursor = await own.execute(sql, values)
    assert cursor.lastrowid is not None
    return cursor.lastrowid


# --- reading: one stream of ledger entries and admin actions ------------------------------------------


@dataclass(frozen=True)
class AuditRow:
    at: str
    source: Source
    id: int  # the row's id within its source
    kind: str
    actor: str
    target: str | None  # ledger: the account; admin: whom the action concerns
    amount_micros: int | None  # ledger: the balance change; admin: the amount decided, if any
    held_micros: int | None  # ledger only: the change in what is reserved (reserve/capture/release)
    reason: str
    job_id: str | None
    bucket: str | None = None  # ledger only
    counterparty: str | None = None  # ledger transfers only
    detail: dict[str, Any] | None = None  # admin only

    @property
    def cursor(self) -> str:
        return f"{self.at}|{self.source}|{self.id}"


@dataclass(frozen=True)
class AuditPage:
    rows: list[AuditRow]
    next_cursor: str | None  # pass back as `before_id` for the next (older) page; None at the end


def _parse_cursor(cursor: str) -> tuple[str, str, int]:
    at, _, rest = cursor.partition("|")
    source, _, number = rest.partition("|")
    if not at or source not in ("ledger", "admin") or not number.isdigit():
        raise ValueError(f"{cursor!r} is not an audit cursor")
    return at, source, int(number)


def _member_account(guild_id: str, member: str) -> str:
    # the ledger's id scheme (bot.ledger.user_account_id); repeated here so the store does not import the domain
    return f"user:{guild_id}:{member}"


def _query(
    guild_id: str,
    *,
    member: str | None,
    kind: str | None,
    source: Source | None,
    before: tuple[str, str, int] | None,
    after: tuple[str, str, int] | None,
    limit: int,
) -> tuple[str, list[Any]]:
    ledger_where, ledger_args = ["a.guild_id = ?"], [guild_id]
    admin_where, admin_args = ["x.guild_id = ?"], [guild_id]
    if member is not None:
        ledger_where.append("(e.account_id = ? OR e.actor = ?)")
        ledger_args += [_member_account(guild_id, member), member]
        admin_where.append("(x.actor = ? OR x.target = ?)")
        admin_args += [member, member]
    if kind is not None:
        ledger_where.append("e.kind = ?")
        ledger_args.append(kind)
        admin_where.append("x.kind = ?")
        admin_args.append(kind)
    # The cursor condition goes into each branch, so each side reads only what the page can use.
    for bound, op in ((before, "<"), (after, ">")):
        if bound is not None:
            at, src, number = bound
            ledger_where.append(f"(e.created_at, 'ledger', e.id) {op} (?, ?, ?)")
            ledger_args += [at, src, number]
            admin_where.append(f"(x.created_at, 'admin', x.id) {op} (?, ?, ?)")
            admin_args += [at, src, number]
    branches, args = [], []
    if source in (None, "ledger"):
        branches.append(
            "SELECT e.created_at AS at, 'ledger' AS source, e.id AS id, e.kind AS kind, e.actor AS actor,"
            " e.account_id AS target, e.amount_micros AS amount_micros, e.held_micros AS held_micros,"
            " e.reason AS reason, e.job_id AS job_id, e.bucket AS bucket, e.counterparty AS counterparty,"
            " NULL AS detail_json FROM ledger_entries e JOIN accounts a ON a.id = e.account_id"
            f" WHERE {' AND '.join(ledger_where)}"
        )
        args += ledger_args
    if source in (None, "admin"):
        branches.append(
            "SELECT x.created_at AS at, 'admin' AS source, x.id AS id, x.kind AS kind, x.actor AS actor,"
            " x.target AS target, x.amount_micros AS amount_micros, NULL AS held_micros, x.reason AS reason,"
            " x.job_id AS job_id, NULL AS bucket, NULL AS counterparty, x.detail_json AS detail_json"
            f" FROM admin_actions x WHERE {' AND '.join(admin_where)}"
        )
        args += admin_args
    order = "ASC" if after is not None else "DESC"
    sql = f"SELECT * FROM ({' UNION ALL '.join(branches)}) ORDER BY at {order}, source {order}, id {order} LIMIT ?"
    return sql, [*args, limit]


def _row(row: aiosqlite.Row) -> AuditRow:
    detail = json.loads(row["detail_json"]) if row["detail_json"] else None
    return AuditRow(
        at=row["at"], source=row["source"], id=row["id"], kind=row["kind"], actor=row["actor"],
        target=row["target"], amount_micros=row["amount_micros"], held_micros=row["held_micros"],
        reason=row["reason"], job_id=row["job_id"], bucket=row["bucket"], counterparty=row["counterparty"],
        detail=detail,
    )  # fmt: skip


async def audit_page(
    db: aiosqlite.Connection,
    guild_id: str,
    *,
    member: str | None = None,
    kind: str | None = None,
    before_id: str | None = None,
    limit: int = 20,
    source: Source | None = None,
) -> AuditPage:
    """One page of the server's ledger entries and admin actions, newest first.

    `member` keeps rows the member made or that concern them (their account's entries, actions naming them as
    actor or target); `kind` keeps one kind (a ledger kind such as `capture`, or an action kind such as
    `quota_approve`; `grant` matches both ledger grants and moderators' grant actions unless `source` says
    which). `before_id` is the previous page's `next_cursor` (an opaque string): the keyset makes paging
    stable while rows are being written — new rows are newer than any cursor and never shift older pages.
    """
    if not 1 <= limit <= _MAX_LIMIT:
        raise ValueError(f"limit must be 1–{_MAX_LIMIT}")
    before = _parse_cursor(before_id) if before_id else None
    sql, args = _query(guild_id, member=member, kind=kind, source=source, before=before, after=None,
                       limit=limit + 1)  # fmt: skip
    async with db.execute(sql, args) as cursor:
        rows = [_row(row) for row in await cursor.fetchall()]
    more = len(rows) > limit
    rows = rows[:limit]
    return AuditPage(rows, rows[-1].cursor if more and rows else None)


async def audit_rows(
    db: aiosqlite.Connection,
    guild_id: str,
    *,
    member: str | None = None,
    kind: str | None = None,
    source: Source | None = None,
    chunk: int = _MAX_LIMIT,
) -> AsyncIterator[AuditRow]:
    """Every row of the server's audit stream, oldest first (for the CSV export), read in chunks."""
    after: tuple[str, str, int] | None = ("", "", 0)  # before everything: ISO timestamps are never empty
    while True:
        sql, args = _query(guild_id, member=member, kind=kind, source=source, before=None, after=after,
                           limit=chunk)  # fmt: skip
        async with db.execute(sql, args) as cursor:
            rows = [_row(row) for row in await cursor.fetchall()]
        for row in rows:
            yield row
        if len(rows) < chunk:
            return
        last = rows[-1]
        after = (last.at, last.source, last.id)


async def actions_for_job(db: aiosqlite.Connection, job_id: str) -> list[AuditRow]:
    """The admin actions about one job (approved by whom, denied why), oldest first."""
    sql = (
        "SELECT created_at AS at, 'admin' AS source, id, kind, actor, target, amount_micros, NULL AS held_micros,"
        " reason, job_id, NULL AS bucket, NULL AS counterparty, detail_json FROM admin_actions WHERE job_id = ?"
        " ORDER BY id"
    )
    async with db.execute(sql, (job_id,)) as cursor:
        return [_row(row) for row in await cursor.fetchall()]
