"""reelbot's Prometheus metrics, one registry per App (never the global default: two Apps in one process,
as in tests, must not share counters).

Labels name providers, states, outcomes and HTTP statuses — never a user, guild, channel or job id, which
would make a series per person and grow without end.
"""

from __future__ import annotations

import math
from collections.abc import Iterable, Iterator
from datetime import UTC, datetime
from typing import TYPE_CHECKING, Literal

from prometheus_client import (
    CollectorRegistry,
    Counter,
    Histogram,
    PlatformCollector,
    ProcessCollector,
    disable_created_metrics,
)
from prometheus_client.core import GaugeMetricFamily, Metric
from prometheus_client.exposition import choose_encoder
from prometheus_client.registry import Collector

from bot.engine.states import JobState

if TYPE_CHECKING:
    from bot.store.jobs import Job, JobRepository

# Local previews take seconds; hosted generations minutes; the deadline defaults to 30 minutes.
JOB_BUCKETS = (1, 5, 15, 30, 60, 120, 180, 300, 450, 600, 900, 1200, 1800, 3600)
# Discord wants an answer within 3 s; what matters is how close to that we come.
ACK_BUCKETS = (0.05, 0.1, 0.25, 0.5, 0.75, 1.0, 1.5, 2.0, 2.5, 3.0, 5.0)
JOBS_HELP = "Jobs recorded in the database, by state and provider (counted at scrape time)"


def _parse(stamp: str) -> datetime:
    return datetime.strptime(stamp, "%Y-%m-%dT%H:%M:%S.%fZ").replace(tzinfo=UTC)


def status_labels(status: int | str) -> tuple[str, str]:
    """(status_class, status) for an HTTP status code, or for a transport failure's name."""
    if isinstance(status, int):
        return f"{status // 100}xx", str(status)
    return "error", status


class _JobCounts(Collector):
    """The `reelbot_jobs` gauge, from the last database count: every state for every provider seen, so a
    state that empties shows 0 rather than vanishing."""

    def __init__(self) -> None:
        self.counts: dict[tuple[str, str], int] = {}

    def describe(self) -> Iterable[Metric]:
        return [GaugeMetricFamily("reelbot_jobs", JOBS_HELP, labels=["state", "provider"])]

    def collect(self) -> Iterator[Metric]:
        family = GaugeMetricFamily("reelbot_jobs", JOBS_HELP, labels=["state", "provider"])
        for provider in sorted({provider for _, provider in self.counts}):
            for state in JobState:
                family.add_metric([state.value, provider], self.counts.get((state.value, provider), 0))
        yield family


class Metrics:
    def __init__(self) -> None:
        # No `_created` series beside every counter and histogram: they double the output and nobody graphs them.
        disable_created_metrics()
        self.registry = CollectorRegistry()
        ProcessCollector(registry=self.registry)  # process_*: CPU, memory, open files (Linux)
        PlatformCollector(registry=self.registry)  # python_info
        self._job_counts = _JobCounts()
        self.registry.register(self._job_counts)
        self.job_duration = Histogram(
            "reelbot_job_duration_seconds", "Time from a job's acceptance to its final state",
            ["provider", "state"], buckets=JOB_BUCKETS, registry=self.registry,
        )  # fmt: skip
        self.provider_requests = Counter(
            "reelbot_provider_http_requests", "HTTP requests to providers, by outcome (status_class 'error': no "
            "response, status names the failure)", ["provider", "method", "status_class", "status"],
            registry=self.registry,
        )  # fmt: skip
        self.reservations = Counter(
            "reelbot_ledger_reservations", "Quota reservations for new jobs, accepted or refused (not enough quota)",
            ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.discord_429 = Counter(
            "reelbot_discord_rest_429", "429 responses from Discord's REST API (retried by discord.py, or raised "
            "when the wait was too long)", ["outcome"], registry=self.registry,
        )  # fmt: skip
        self.discord_global_limits = Counter(
            "reelbot_discord_global_rate_limits", "Discord global rate limits hit", registry=self.registry
        )
        self.ack_seconds = Histogram(
            "reelbot_interaction_ack_seconds", "Time from a Discord interaction's creation to our first response",
            ["command", "response"], buckets=ACK_BUCKETS, registry=self.registry,
        )  # fmt: skip
        # Children that exist from the start, so a dashboard sees 0 rather than no data.
        for outcome in ("accepted", "refused"):
            self.reservations.labels(outcome)
        for outcome in ("retried", "raised"):
            self.discord_429.labels(outcome)

    # --- hooks the rest of reelbot calls ------------------------------------------------------------
    def job_finished(self, job: Job) -> None:
        """A job reached a final state (called once, by the process that moved it there)."""
        ended = job.entered(job.state) or job.updated_at
        seconds = (_parse(ended) - _parse(job.created_at)).total_seconds()
        self.job_duration.labels(job.provider, job.state.value).observe(max(0.0, seconds))

    def provider_request(self, provider: str, method: str, status: int | str) -> None:
        """One HTTP exchange with a provider: `status` is the response code, or the transport failure."""
        status_class, code = status_labels(status)
        self.provider_requests.labels(provider, method.upper(), status_class, code).inc()

    def reservation(self, outcome: Literal["accepted", "refused"]) -> None:
        self.reservations.labels(outcome).inc()

    def discord_rate_limited(self, outcome: Literal["retried", "raised"]) -> None:
        self.discord_429.labels(outcome).inc()

    def discord_global_rate_limit(self) -> None:
        self.discord_global_limits.inc()

    def observe_ack(self, seconds: float, *, command: str = "generate", response: str = "defer") -> None:
        """How long a member waited for the first sign of life from us (clock skew can make it negative)."""
        if math.isfinite(seconds):
            self.ack_seconds.labels(command, response).observe(max(0.0, seconds))

    # --- exposition -----------------------------------------------------------------------------------
    async def refresh(self, jobs: JobRepository) -> None:
        """Recount jobs by state and provider: one GROUP BY, at scrape time."""
        self._job_counts.counts = await jobs.count_by_state_and_provider()

    def exposition(self, accept: str | None = None) -> tuple[bytes, str]:
        """(body, content type): the classic text format, or OpenMetrics when the scraper asks for it."""
        encoder, content_type = choose_encoder(accept or "")
        return encoder(self.registry), content_type
