"""Which queued jobs may start now, and each waiting job's place in line.

Pure functions over job records, so fairness is easy to test: caps (global, per provider, per user, per
guild) bound what runs; among waiting jobs, users take turns — one member queuing ten jobs waits behind
everyone else's first job, not in front of it.
"""

from __future__ import annotations

from collections import defaultdict
from collections.abc import Iterable, Mapping
from dataclasses import dataclass, field

from bot.engine.states import JobState
from bot.store.jobs import Job

# A job holds a provider slot from the moment it may be sent until the provider is done with it.
HOLDS_PROVIDER_SLOT = frozenset({JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING})
# A job counts against its owner's cap until it is delivered.
IN_FLIGHT = HOLDS_PROVIDER_SLOT | {JobState.DOWNLOADING, JobState.DELIVERING}


@dataclass(frozen=True)
class Caps:
    global_max: int = 16
    per_user: int = 2
    per_guild: int = 8
    per_provider: Mapping[str, int] = field(default_factory=dict)
    provider_default: int = 4

    def provider_max(self, provider: str) -> int:
        return self.per_provider.get(provider, self.provider_default)


def _user_key(job: Job) -> tuple[str, str]:
    return (job.guild_id or "", job.user_id)


def queue_order(queued: Iterable[Job]) -> list[Job]:
    """Round-robin across users: every user's first waiting job, then every user's second, and so on.
    Users are ordered by their oldest waiting job, so the order is stable as jobs arrive."""
    by_user: dict[tuple[str, str], list[Job]] = defaultdict(list)
    for job in sorted(queued, key=lambda j: (j.created_at, j.id)):
        by_user[_user_key(job)].append(job)
    users = list(by_user)  # insertion order = oldest waiting job first
    ordered: list[Job] = []
    depth = 0
    while len(ordered) < sum(len(jobs) for jobs in by_user.values()):
        for user in users:
            if depth < len(by_user[user]):
                ordered.append(by_user[user][depth])
        depth += 1
    return ordered


def queue_positions(queued: Iterable[Job]) -> dict[str, int]:
    """1-based place in line for each waiting job."""
    return {job.id: index for index, job in enumerate(queue_order(queued), start=1)}


def startable(queued: Iterable[Job], active: Iterable[Job], caps: Caps) -> list[Job]:
    """The waiting jobs that may start now, in order, without breaking any cap."""
    active = [job for job in active if job.state in IN_FLIGHT]
    total = sum(1 for job in active if job.state in HOLDS_PROVIDER_SLOT)
    per_provider: dict[str, int] = defaultdict(int)
    per_user: dict[tuple[str, str], int] = defaultdict(int)
    per_guild: dict[str, int] = defaultdict(int)
    for job in active:
        if job.state in HOLDS_PROVIDER_SLOT:
            per_provider[job.provider] += 1
        per_user[_user_key(job)] += 1
        if job.guild_id:
            per_guild[job.guild_id] += 1
    chosen = []
    for job in queue_order(j for j in queued if j.state is JobState.QUEUED):
        if total >= caps.global_max:
            break
        if per_provider[job.provider] >= caps.provider_max(job.provider):
            continue
        if per_user[_user_key(job)] >= caps.per_user:
            continue
        if job.guild_id and per_guild[job.guild_id] >= caps.per_guild:
            continue
        chosen.append(job)
        total += 1
        per_provider[job.provider] += 1
        per_user[_user_key(job)] += 1
        if job.guild_id:
            per_guild[job.guild_id] += 1
    return chosen
