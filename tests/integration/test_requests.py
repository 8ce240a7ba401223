"""Quota requests on a real database: approval grants exactly once (coroutines, connections, processes), partial
approval, denial with a reason, one open request per member, cards remembered, and the books stay clean."""

from __future__ import annotations

import asyncio
import json
import os
import subprocess
import sys
from pathlib import Path

import aiosqlite
import pytest

from bot.ledger import Ledger
from bot.money import usd
from bot.requests import (
    DEFAULT_MAX_REQUEST_MICROS,
    AlreadyDecided,
    InvalidQuotaRequest,
    NotAllowed,
    QuotaRequests,
    RequestAlreadyOpen,
    UnknownRequest,
    describe_outcome,
)
from bot.store.audit import audit_page
from bot.store.db import connect
from bot.store.guilds import GuildSettingsRepository
from bot.store.migrate import migrate
from tests.integration.processes import release_together

WORKER = Path(__file__).with_name("requests_worker.py")
G, MEMBER = "g1", "u1"


def service(db: aiosqlite.Connection) -> QuotaRequests:
    return QuotaRequests(db, Ledger(db), GuildSettingsRepository(db))


async def count(db: aiosqlite.Connection, sql: str, *args: object) -> int:
    async with db.execute(sql, args) as cursor:
        row = await cursor.fetchone()
    assert row is not None
    return int(row[0])


async def grants_to(db: aiosqlite.Connection, user: str = MEMBER) -> int:
    return await count(db, "SELECT COUNT(*) FROM ledger_entries WHERE kind = 'grant' AND account_id = ?",
                       f"user:{G}:{user}")  # fmt: skip


async def available(db: aiosqlite.Connection, user: str = MEMBER) -> int:
    ledger = Ledger(db)
    return (await ledger.balance(await ledger.account_for_user(G, user))).available


async def clean(db: aiosqlite.Connection) -> None:
    assert await Ledger(db).verify() == []


async def test_an_approved_request_raises_the_balance_and_is_audited_once(db: aiosqlite.Connection) -> None:
    requests = service(db)
    request = await requests.open_request(G, MEMBER, usd("5.00"), "  for the   contest ")
    assert (request.state, request.amount_micros, request.reason) == ("open", usd("5.00"), "for the contest")

    decision = await requests.decide(request.id, moderator_id="mod1", approve=True)
    assert decision.approved and decision.amount_micros == usd("5.00")
    assert decision.balance is not None and decision.balance.available == usd("5.00")
    assert (decision.request.state, decision.request.decided_by, decision.request.granted_micros) == (
        "approved", "mod1", usd("5.00"),
    )  # fmt: skip
    assert await available(db) == usd("5.00") and await grants_to(db) == 1

    approvals = (await audit_page(db, G, kind="quota_approve")).rows
    assert len(approvals) == 1
    action = approvals[0]
    assert (action.source, action.actor, action.target, action.amount_micros) == ("admin", "mod1", MEMBER, usd("5"))
    assert action.detail == {"request_id": request.id, "requested_micros": usd("5.00")}
    asked = (await audit_page(db, G, kind="quota_request")).rows
    assert [(a.actor, a.amount_micros, a.reason) for a in asked] == [(MEMBER, usd("5"), "for the contest")]
    grant = (await audit_page(db, G, kind="grant", source="ledger")).rows
    assert [(g.actor, g.target, g.amount_micros) for g in grant] == [("mod1", f"user:{G}:{MEMBER}", usd("5"))]
    assert f"#{request.id}" in grant[0].reason
    await clean(db)


async def test_partial_approval_grants_only_the_part(db: aiosqlite.Connection) -> None:
    requests = service(db)
    request = await requests.open_request(G, MEMBER, usd("5.00"), "bigger clips")
    for wrong in (0, -1, usd("5.01")):
        with pytest.raises(InvalidQuotaRequest, match=r"approve between \$0 and the \$5.00 asked for"):
            await requests.decide(request.id, moderator_id="mod1", approve=True, amount=wrong)
    assert (await requests.get(request.id)).is_open and await grants_to(db) == 0  # nothing was written

    decision = await requests.decide(request.id, moderator_id="mod1", approve=True, amount=usd("2.00"),
                                     reason="half now")  # fmt: skip
    assert decision.amount_micros == usd("2.00") and await available(db) == usd("2.00")
    assert decision.request.decision_reason == "half now"
    assert describe_outcome(decision.request) == "approved by mod1 ($2.00 of $5.00)"
    [action] = (await audit_page(db, G, kind="quota_approve")).rows
    assert (action.amount_micros, action.reason) == (usd("2.00"), "half now")
    await clean(db)


async def test_a_denial_needs_a_reason_grants_nothing_and_ends_the_request(db: aiosqlite.Connection) -> None:
    requests = service(db)
    request = await requests.open_request(G, MEMBER, usd("3.00"), "more please")
    for missing in (None, "", "   "):
        with pytest.raises(InvalidQuotaRequest, match="denying a request needs a reason"):
            await requests.decide(request.id, moderator_id="mod1", approve=False, reason=missing)

    decision = await requests.decide(request.id, moderator_id="mod1", approve=False, reason="budget is spent")
    assert not decision.approved and decision.amount_micros == 0 and decision.balance is None
    assert (decision.request.state, decision.request.decision_reason) == ("denied", "budget is spent")
    assert await grants_to(db) == 0 and await available(db) == 0
    [action] = (await audit_page(db, G, kind="quota_deny")).rows
    assert (action.actor, action.target, action.reason) == ("mod1", MEMBER, "budget is spent")

    with pytest.raises(AlreadyDecided, match="already denied by mod1: budget is spent") as lost:
        await requests.decide(request.id, moderator_id="mod2", approve=True)
    assert lost.value.decided_by == "mod1" and lost.value.state == "denied"
    await clean(db)


async def test_nobody_decides_their_own_request(db: aiosqlite.Connection) -> None:
    requests = service(db)
    request = await requests.open_request(G, MEMBER, usd("1.00"), "mine")
    with pytest.raises(NotAllowed, match="your own"):
        await requests.decide(request.id, moderator_id=MEMBER, approve=True)
    assert (await requests.get(request.id)).is_open and await grants_to(db) == 0


async def test_one_open_request_per_member_and_sane_amounts(db: aiosqlite.Connection) -> None:
    requests = service(db)
    for wrong, message in ((0, "more than"), (-5, "more than"), (DEFAULT_MAX_REQUEST_MICROS + 1, r"\$25.00")):
        with pytest.raises(InvalidQuotaRequest, match=message):
            await requests.open_request(G, MEMBER, wrong, "x")
    with pytest.raises(InvalidQuotaRequest, match="needs a reason"):
        await requests.open_request(G, MEMBER, usd("1"), " ")

    first = await requests.open_request(G, MEMBER, usd("1.00"), "first")
    with pytest.raises(RequestAlreadyOpen, match=rf"#{first.id}, \$1.00: first") as already:
        await requests.open_request(G, MEMBER, usd("2.00"), "second")
    assert already.value.existing.id == first.id
    other_server = await requests.open_request("g2", MEMBER, usd("2.00"), "elsewhere")  # per server
    assert other_server.id != first.id

    await requests.decide(first.id, moderator_id="mod1", approve=False, reason="no")
    again = await requests.open_request(G, MEMBER, usd("2.00"), "second try")
    assert [r.id for r in await requests.open_requests(G)] == [again.id]


async def test_the_member_can_withdraw_their_open_request(db: aiosqlite.Connection) -> None:
    requests = service(db)
    request = await requests.open_request(G, MEMBER, usd("1.00"), "oops")
    with pytest.raises(NotAllowed):
        await requests.withdraw(request.id, user_id="someone-else")
    withdrawn = await requests.withdraw(request.id, user_id=MEMBER)
    assert withdrawn.state == "withdrawn"
    with pytest.raises(AlreadyDecided, match="withdrawn by its member"):
        await requests.decide(request.id, moderator_id="mod1", approve=True)
    assert await grants_to(db) == 0
    assert [a.kind for a in (await audit_page(db, G, member=MEMBER)).rows] == ["quota_withdraw", "quota_request"]


async def test_the_card_is_remembered_across_connections(tmp_path: Path) -> None:
    path = tmp_path / "cards.db"
    first = await connect(path)
    try:
        await migrate(first)
        request = await service(first).open_request(G, MEMBER, usd("1.00"), "card")
        await service(first).attach_card(request.id, "111", "222")
        with pytest.raises(UnknownRequest):
            await service(first).attach_card(9999, "1", "2")
    finally:
        await first.close()
    second = await connect(path)  # as after a restart
    try:
        [pending] = await service(second).open_requests()
        assert (pending.id, pending.card_channel_id, pending.card_message_id) == (request.id, "111", "222")
    finally:
        await second.close()


async def racing_decisions(services: list[QuotaRequests], request_id: int) -> list[object]:
    async def decide(i: int) -> object:
        try:
            approve = i % 3 != 2  # approvals, partial approvals and denials all race
            amount = usd("1.00") if i % 3 == 1 else None
            return await services[i % len(services)].decide(
                request_id, moderator_id=f"mod{i}", approve=approve, amount=amount,
                reason=None if approve else "no",
            )  # fmt: skip
        except AlreadyDecided as lost:
            return lost

    return list(await asyncio.gather(*(decide(i) for i in range(12))))


def one_winner(outcomes: list[object]) -> object:
    winners = [o for o in outcomes if not isinstance(o, AlreadyDecided)]
    losers = [o for o in outcomes if isinstance(o, AlreadyDecided)]
    assert len(winners) == 1 and len(losers) == len(outcomes) - 1
    winner = winners[0]
    who = winner.request.decided_by  # type: ignore[attr-defined]
    assert all(loser.decided_by == who and f"by {who}" in str(loser) for loser in losers)
    return winner


async def test_simultaneous_decisions_on_one_connection_make_one_decision(db: aiosqlite.Connection) -> None:
    request = await service(db).open_request(G, MEMBER, usd("4.00"), "race")
    winner = one_winner(await racing_decisions([service(db)], request.id))
    granted = winner.amount_micros  # type: ignore[attr-defined]
    assert await grants_to(db) == (1 if granted else 0) and await available(db) == granted
    decisions = await count(db, "SELECT COUNT(*) FROM admin_actions WHERE kind IN ('quota_approve', 'quota_deny')")
    assert decisions == 1
    await clean(db)


async def test_simultaneous_decisions_on_many_connections_make_one_decision(tmp_path: Path) -> None:
    path = tmp_path / "race.db"
    conns = [await connect(path) for _ in range(6)]
    try:
        await migrate(conns[0])
        request = await service(conns[0]).open_request(G, MEMBER, usd("4.00"), "race")
        winner = one_winner(await racing_decisions([service(c) for c in conns], request.id))
        assert await available(conns[0]) == winner.amount_micros  # type: ignore[attr-defined]
        assert await grants_to(conns[0]) <= 1
        await clean(conns[0])
    finally:
        for conn in conns:
            await conn.close()


async def test_two_processes_approving_at_once_grant_once(tmp_path: Path) -> None:
    path = tmp_path / "procs.db"
    db = await connect(path)
    try:
        await migrate(db)
        request = await service(db).open_request(G, MEMBER, usd("4.00"), "race across processes")
        reports = await asyncio.to_thread(_race, path, request.id)
        assert sorted(r["won"] for r in reports) == [False, True]
        [lost] = [r for r in reports if not r["won"]]
        [won] = [r for r in reports if r["won"]]
        assert won["granted"] == usd("4.00") and "already approved by mod" in lost["error"]
        assert await grants_to(db) == 1 and await available(db) == usd("4.00")
        assert len((await audit_page(db, G, kind="quota_approve")).rows) == 1
        await clean(db)
    finally:
        await db.close()


def _race(path: Path, request_id: int) -> list[dict]:
    """Two processes, each connected and waiting, told to decide at the same moment."""
    env = {**os.environ, "PYTHONPATH": str(Path(__file__).parents[2])}
    workers = [
        subprocess.Popen(
            [sys.executable, str(WORKER), str(path), str(request_id), f"mod{n}", "1"],
            stdin=subprocess.PIPE,
            stdout=subprocess.PIPE,
            stderr=subprocess.PIPE,
            text=True,
            env=env,
        )
        for n in range(2)
    ]
    return [json.loads(out) for out in release_together(workers)]
