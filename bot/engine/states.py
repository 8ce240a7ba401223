"""The job state machine: which states exist and which moves between them are legal."""

from __future__ import annotations

from enum import StrEnum


class JobState(StrEnum):
    QUEUED = "queued"
    AWAITING_APPROVAL = "awaiting_approval"
    SUBMITTING = "submitting"
    SUBMITTED = "submitted"
    RUNNING = "running"
    DOWNLOADING = "downloading"
    DELIVERING = "delivering"
    DONE = "done"
    FAILED = "failed"
    CANCELLED = "cancelled"
    UNKNOWN = "unknown"

    @property
    def finished(self) -> bool:
        return self in FINISHED


FINISHED = frozenset({JobState.DONE, JobState.FAILED, JobState.CANCELLED, JobState.UNKNOWN})
UNFINISHED = frozenset(JobState) - FINISHED
# States in which the provider may be working (or have worked) on the job: money may be spent.
AT_PROVIDER = frozenset({JobState.SUBMITTING, JobState.SUBMITTED, JobState.RUNNING})

_S = JobState
TRANSITIONS: dict[JobState, frozenset[JobState]] = {
    _S.QUEUED: frozenset({_S.AWAITING_APPROVAL, _S.SUBMITTING, _S.FAILED, _S.CANCELLED, _S.UNKNOWN}),
    _S.AWAITING_APPROVAL: frozenset({_S.QUEUED, _S.FAILED, _S.CANCELLED}),
    # back to QUEUED only when the provider provably refused the submit (rate limit, 5xx): safe to send again
    _S.SUBMITTING: frozenset(
        {_S.QUEUED, _S.SUBMITTED, _S.RUNNING, _S.DOWNLOADING, _S.FAILED, _S.CANCELLED, _S.UNKNOWN}
    ),
    _S.SUBMITTED: frozenset({_S.RUNNING, _S.DOWNLOADING, _S.FAILED, _S.CANCELLED, _S.UNKNOWN}),
    _S.RUNNING: frozenset({_S.DOWNLOADING, _S.FAILED, _S.CANCELLED, _S.UNKNOWN}),
    _S.DOWNLOADING: frozenset({_S.DELIVERING, _S.FAILED, _S.UNKNOWN}),
    _S.DELIVERING: frozenset({_S.DONE, _S.FAILED}),
    _S.DONE: frozenset(),
    _S.FAILED: frozenset(),
    _S.CANCELLED: frozenset(),
    _S.UNKNOWN: frozenset(),
}


def can_move(source: JobState, target: JobState) -> bool:
    return target in TRANSITIONS[source]
