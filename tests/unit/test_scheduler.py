"""Fairness and caps, as pure functions over job records."""

from __future__ import annotations

import dataclasses
from itertools import count

from hypothesis import given
from hypothesis import strategies as st

from bot.engine.scheduler import Caps, queue_order, queue_positions, startable
from bot.engine.states import JobState
from bot.store.jobs import Job

_ids = count()


def job(user: str, *, state: JobState = JobState.QUEUED, guild: str | None = "g1", provider: str = "p") -> Job:
    n = next(_ids)
    blank = {f.name: None for f in dataclasses.fields(Job)}
    blank.update(
        id=f"j{n:04d}", user_id=user, guild_id=guild, request_json="{}", provider=provider, state=state,
        cost_micros=0, price_is_estimate=False, nsfw=False, created_at=f"2026-11-22T00:00:{n % 60:02d}.{n:03d}Z",
        updated_at="", charged_micros=0,
    )  # fmt: skip
    return Job(**blank)


def test_one_member_queuing_ten_does_not_starve_the_others() -> None:
    greedy = [job("alice") for _ in range(10)]
    others = [job("bob"), job("carol")]
    order = [j.user_id for j in queue_order([*greedy, *others])]
    assert order[:3] == ["alice", "bob", "carol"]
    assert order[3:] == ["alice"] * 9


def test_positions_are_one_based_and_complete() -> None:
    jobs = [job("a"), job("a"), job("b")]
    positions = queue_positions(jobs)
    assert sorted(positions.values()) == [1, 2, 3]
    assert positions[jobs[2].id] == 2  # b's first job comes before a's second


def test_per_user_cap_counts_jobs_in_flight() -> None:
    running = [job("a", state=JobState.RUNNING), job("a", state=JobState.DOWNLOADING)]
    chosen = startable([job("a"), job("b")], running, Caps(per_user=2))
    assert [j.user_id for j in chosen] == ["b"]


def test_provider_cap_leaves_jobs_waiting_in_reelbot() -> None:
    queued = [job("a", provider="ws"), job("b", provider="ws"), job("c", provider="local")]
    chosen = startable(queued, [job("z", state=JobState.SUBMITTED, provider="ws")], Caps(per_provider={"ws": 2}))
    assert [j.user_id for j in chosen] == ["a", "c"]


def test_global_and_guild_caps() -> None:
    queued = [job(u, guild="g1") for u in "abcd"] + [job("e", guild="g2")]
    chosen = startable(queued, [], Caps(global_max=3, per_guild=2))
    assert [(j.user_id, j.guild_id) for j in chosen] == [("a", "g1"), ("b", "g1"), ("e", "g2")]


def test_downloading_jobs_do_not_hold_provider_slots() -> None:
    active = [job("x", state=JobState.DOWNLOADING, provider="ws")]
    assert len(startable([job("a", provider="ws")], active, Caps(per_provider={"ws": 1}))) == 1


@given(st.lists(st.tuples(st.sampled_from("abcde"), st.sampled_from(["p", "q"])), max_size=30),
       st.integers(1, 6), st.integers(1, 3), st.integers(1, 4))  # fmt: skip
def test_caps_are_never_exceeded(specs: list[tuple[str, str]], global_max: int, per_user: int, per_p: int) -> None:
    queued = [job(user, provider=provider) for user, provider in specs]
    caps = Caps(global_max=global_max, per_user=per_user, per_provider={"p": per_p, "q": per_p})
    chosen = startable(queued, [], caps)
    assert len(chosen) <= global_max
    for user in "abcde":
        assert sum(j.user_id == user for j in chosen) <= per_user
    for provider in "pq":
        assert sum(j.provider == provider for j in chosen) <= per_p
    # work-conserving: a waiting job is left out only because some cap is full
    for waiting in (j for j in queued if j not in chosen):
        full = (
            len(chosen) >= global_max
            or sum(j.user_id == waiting.user_id for j in chosen) >= per_user
            or sum(j.provider == waiting.provider for j in chosen) >= per_p
        )
        assert full
