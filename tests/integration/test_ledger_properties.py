"""Ledger invariants under random sequences of operations, checked against a model in plain Python ints.

Hypothesis drives grants, reservations, captures (whole and partial), releases, repeated resolutions,
transfers, adjustments, expiries, allowance changes and clock jumps across daily, weekly and monthly
boundaries. After every step: available never below zero in either bucket, every cached number equal to the
sum of its entries (`verify()` clean), each reservation resolved at most once, and the model agrees.
"""

from __future__ import annotations

import asyncio
import copy
import itertools
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import pytest
from hypothesis import HealthCheck, settings
from hypothesis import strategies as st
from hypothesis.stateful import (
    RuleBasedStateMachine,
    initialize,
    invariant,
    precondition,
    rule,
    run_state_machine_as_test,
)

from bot.ledger import AllowancePolicy, InsufficientQuota, Ledger, Period, iso, next_period_start, period_start
from bot.store.db import connect
from bot.store.migrate import migrate

UNIT = 100_000  # $0.10: small multiples make exact-fit and off-by-one cases common
MEMBERS = ("alice", "bob")
GUILD = "g"


@dataclass
class ModelAccount:
    is_member: bool
    allowance: int = 0  # allowance bucket balance
    allowance_held: int = 0
    extra: int = 0
    extra_held: int = 0
    period: str | None = None
    granted: int = 0  # allowance received for `period`, net of cuts

    def free(self, bucket: str) -> int:
        return self.allowance - self.allowance_held if bucket == "allowance" else self.extra - self.extra_held


@dataclass
class ModelJob:
    account: str
    holds: list[tuple[str, int, str | None]]  # (bucket, amount, allowance period)
    resolved: bool = False


@dataclass
class Model:
    """The ledger's rules restated over plain ints, independent of SQL and cached columns."""

    policy: AllowancePolicy
    accounts: dict[str, ModelAccount] = field(default_factory=dict)
    jobs: dict[str, ModelJob] = field(default_factory=dict)

    def refreshed(self, account_id: str, now: datetime) -> ModelAccount:
        """A copy brought up to date: a refused operation rolls its transaction back, rollover included."""
        return self.refresh(account_id, now, commit=False)

    def refresh(self, account_id: str, now: datetime, *, commit: bool = True) -> ModelAccount:
        account = self.accounts[account_id] if commit else copy.copy(self.accounts[account_id])
        if not account.is_member:
            return account
        start = iso(period_start(now, self.policy.period))
        unspent = account.free("allowance")
        if account.period != start:
            account.allowance += self.policy.amount - unspent
            account.period, account.granted = start, self.policy.amount
        elif self.policy.amount > account.granted:
            account.allowance += self.policy.amount - account.granted
            account.granted = self.policy.amount
        elif self.policy.amount < account.granted and unspent > 0:
            trim = min(account.granted - self.policy.amount, unspent)
            account.allowance -= trim
            account.granted -= trim
        return account

    def resolve(self, job_id: str, capture: int, now: datetime) -> None:
        job = self.jobs[job_id]
        account = self.refresh(job.account, now)
        for bucket, held, period in job.holds:
            take = min(capture, held)
            capture -= take
            if bucket == "allowance":
                account.allowance_held -= held
                account.allowance -= take
                if period != account.period:  # allowance from an ended period does not come back
                    account.allowance -= held - take
            else:
                account.extra_held -= held
                account.extra -= take
        job.resolved = True


class LedgerMachine(RuleBasedStateMachine):
    folder: Path  # set per test run
    numbers = itertools.count()

    def __init__(self) -> None:
        super().__init__()
        self.loop = asyncio.new_event_loop()
        self.now = datetime(2025, 1, 29, 21, 0, tzinfo=UTC)  # near a day, a week and a month boundary
        self.db = self.run(connect(self.folder / f"machine-{next(self.numbers)}.db"))
        self.run(migrate(self.db))
        self.jobs = itertools.count()

    def run(self, awaitable: Any) -> Any:
        return self.loop.run_until_complete(awaitable)

    def teardown(self) -> None:
        self.run(self.db.close())
        self.loop.close()

    @initialize(amount=st.integers(1, 6), period=st.sampled_from(Period))
    def open_accounts(self, amount: int, period: Period) -> None:
        policy = AllowancePolicy(amount * UNIT, period)
        self.ledger = Ledger(self.db, clock=lambda: self.now, default_allowance=policy)
        self.model = Model(policy)
        for member in MEMBERS:
            self.model.accounts[self.run(self.ledger.account_for_user(GUILD, member))] = ModelAccount(True)
        self.model.accounts[self.run(self.ledger.account_for_pool(GUILD))] = ModelAccount(False)
        self.account_ids = sorted(self.model.accounts)

    def account(self, index: int) -> str:
        return self.account_ids[index % len(self.account_ids)]

    def open_jobs(self) -> list[str]:
        return [job_id for job_id, job in self.model.jobs.items() if not job.resolved]

    def resolved_jobs(self) -> list[str]:
        return [job_id for job_id, job in self.model.jobs.items() if job.resolved]

    # --- rules ------------------------------------------------------------------------------------

    @rule(who=st.integers(0, 2), units=st.integers(1, 8))
    def grant(self, who: int, units: int) -> None:
        account_id = self.account(who)
        self.run(self.ledger.grant(account_id, units * UNIT, actor="test", reason="grant"))
        self.model.refresh(account_id, self.now).extra += units * UNIT

    @rule(who=st.integers(0, 2), units=st.integers(0, 7), odd=st.sampled_from([0, 0, 1, 33_333]))
    def reserve(self, who: int, units: int, odd: int) -> None:
        account_id, amount = self.account(who), units * UNIT + odd
        job_id = f"job-{next(self.jobs)}"
        model = self.model.refreshed(account_id, self.now)
        free_allowance, free_extra = model.free("allowance"), model.free("extra")
        if amount > free_allowance + free_extra:
            with pytest.raises(InsufficientQuota) as refused:
                self.run(self.ledger.reserve(account_id, amount, job_id=job_id, actor="test"))
            assert (refused.value.needed, refused.value.available) == (amount, free_allowance + free_extra)
            return
        reservation = self.run(self.ledger.reserve(account_id, amount, job_id=job_id, actor="test"))
        from_allowance = min(amount, free_allowance)
        assert (reservation.from_allowance, reservation.from_extra) == (from_allowance, amount - from_allowance)
        holds = [("allowance", from_allowance, model.period), ("extra", amount - from_allowance, None)]
        model.allowance_held += from_allowance
        model.extra_held += amount - from_allowance
        self.model.accounts[account_id] = model
        self.model.jobs[job_id] = ModelJob(account_id, [h for h in holds if h[1]] or [("extra", 0, None)])

    @precondition(lambda self: self.open_jobs())
    @rule(pick=st.integers(0, 10_000), percent=st.sampled_from([None, 0, 33, 50, 99, 100]))
    def capture(self, pick: int, percent: int | None) -> None:
        job_id = self.open_jobs()[pick % len(self.open_jobs())]
        total = sum(held for _, held, _ in self.model.jobs[job_id].holds)
        amount = None if percent is None else total * percent // 100
        assert self.run(self.ledger.capture(job_id, actor="engine", amount=amount)) is True
        self.model.resolve(job_id, total if amount is None else amount, self.now)

    @precondition(lambda self: self.open_jobs())
    @rule(pick=st.integers(0, 10_000))
    def release(self, pick: int) -> None:
        job_id = self.open_jobs()[pick % len(self.open_jobs())]
        assert self.run(self.ledger.release(job_id, actor="engine", reason="failed")) is True
        self.model.resolve(job_id, 0, self.now)

    @precondition(lambda self: self.resolved_jobs())
    @rule(pick=st.integers(0, 10_000), again=st.sampled_from(["capture", "release"]))
    def resolve_again(self, pick: int, again: str) -> None:
        job_id = self.resolved_jobs()[pick % len(self.resolved_jobs())]
        if again == "capture":
            assert self.run(self.ledger.capture(job_id, actor="engine")) is False
        else:
            assert self.run(self.ledger.release(job_id, actor="engine", reason="late")) is False

    @rule(giver=st.integers(0, 2), receiver=st.integers(0, 2), units=st.integers(1, 5))
    def transfer(self, giver: int, receiver: int, units: int) -> None:
        src, dst = self.account(giver), self.account(receiver)
        if src == dst:
            return
        amount = units * UNIT
        model_src, model_dst = self.model.refreshed(src, self.now), self.model.refreshed(dst, self.now)
        if amount > model_src.free("extra"):
            with pytest.raises(InsufficientQuota):
                self.run(self.ledger.transfer(src, dst, amount, actor="test", reason="gift"))
            return
        self.run(self.ledger.transfer(src, dst, amount, actor="test", reason="gift"))
        model_src.extra -= amount
        model_dst.extra += amount
        self.model.accounts.update({src: model_src, dst: model_dst})

    @rule(who=st.integers(0, 2), units=st.integers(-5, 5).filter(bool))
    def adjust(self, who: int, units: int) -> None:
        account_id = self.account(who)
        model = self.model.refreshed(account_id, self.now)
        if -units * UNIT > model.free("extra"):
            with pytest.raises(InsufficientQuota):
                self.run(self.ledger.adjust(account_id, units * UNIT, actor="admin", reason="fix"))
            return
        self.run(self.ledger.adjust(account_id, units * UNIT, actor="admin", reason="fix"))
        model.extra += units * UNIT
        self.model.accounts[account_id] = model

    @rule(who=st.integers(0, 1))
    def expire_allowance(self, who: int) -> None:
        account_id = self.account(who)
        model = self.model.refresh(account_id, self.now)
        expired = self.run(self.ledger.expire(account_id, actor="admin", reason="reset"))
        assert expired == model.free("allowance")
        model.allowance -= expired

    @rule(amount=st.integers(0, 6), period=st.sampled_from(Period))
    def change_allowance(self, amount: int, period: Period) -> None:
        self.run(self.ledger.set_allowance(GUILD, amount * UNIT, period, actor="admin"))
        self.model.policy = AllowancePolicy(amount * UNIT, period)

    @rule(hours=st.integers(1, 24 * 35))
    def advance_clock(self, hours: int) -> None:
        self.now += timedelta(hours=hours)

    @rule()
    def advance_to_the_next_boundary(self) -> None:
        self.now = next_period_start(period_start(self.now, self.model.policy.period), self.model.policy.period)

    @rule(who=st.integers(0, 2))
    def read_balance(self, who: int) -> None:
        account_id = self.account(who)
        balance = self.run(self.ledger.balance(account_id))
        model = self.model.refresh(account_id, self.now)
        assert (balance.allowance_left, balance.extra) == (model.free("allowance"), model.free("extra"))
        assert balance.reserved == model.allowance_held + model.extra_held

    # --- invariants -------------------------------------------------------------------------------

    @invariant()
    def books_balance(self) -> None:
        if not hasattr(self, "ledger"):
            return
        assert self.run(self.ledger.verify()) == []
        for account_id, model in self.model.accounts.items():
            row = self.run(self.ledger.store.get_account(account_id))
            assert row is not None
            assert row.allowance_micros == model.allowance and row.allowance_reserved_micros == model.allowance_held
            assert row.balance_micros == model.allowance + model.extra
            assert row.reserved_micros == model.allowance_held + model.extra_held
            assert model.free("allowance") >= 0 and model.free("extra") >= 0

    @invariant()
    def each_reservation_resolved_at_most_once(self) -> None:
        if not hasattr(self, "ledger"):
            return
        for job_id, job in self.model.jobs.items():
            entries = self.run(self.ledger.store.job_entries(job_id))
            resolutions = {(e.bucket, e.kind) for e in entries if e.kind != "reserve"}
            kinds = [(e.bucket, e.kind) for e in entries if e.kind != "reserve"]
            assert len(kinds) == len(resolutions)  # never two captures or two releases of one hold
            assert bool(kinds) == job.resolved


def test_ledger_invariants_hold_under_random_operations(tmp_path: Path) -> None:
    LedgerMachine.folder = tmp_path
    run_state_machine_as_test(
        LedgerMachine,
        settings=settings(
            max_examples=50,
            stateful_step_count=40,
            deadline=None,
            suppress_health_check=[HealthCheck.too_slow],
            database=None,
        ),
    )
