"""The measured side of `jobs` and `peers`: reelbot's own engine in a process of its own, set up as `reelbot worker`
sets it up (open_app, the App's engine with a 1 s tick, INFO logging), driven by Engine.accept.

Payload: {"jobs": N, "provider": "wavespeed"|"fal", "tag": T, "timeout_s": S}; the settings (provider URL and key,
poll timings, caps, webhook URL) come from the environment the parent sets. Every job's prompt starts with `[T]`
so the fake can tell whose tasks are whose. Its answer: CPU seconds and wall time from the first accept until
the last clip is delivered, RSS before and at peak, and how many jobs were delivered or failed.
"""

from __future__ import annotations

import asyncio
import time
from collections import Counter
from typing import Any

from bench.common import child_main, cpu_seconds, peak_rss_bytes, rss_bytes
from bot.engine.delivery import Clip
from bot.store.jobs import Job


class Sink:
    """A Delivery that takes clips and throws them away (no size limit, so nothing is fitted)."""

    size_limit: int | None = None

    def __init__(self, expected: int) -> None:
        self.expected = expected
        self.delivered = 0
        self.failed = 0
        self.errors: Counter[str] = Counter()
        self.done = asyncio.Event()
        self.finished_at = 0.0

    async def progress(self, job: Job) -> None:
        return None

    async def deliver(self, job: Job, clip: Clip) -> str:
        if clip.path is not None:
            clip.path.unlink(missing_ok=True)  # 1,000 × 5 MB need not stay on disk
        self.delivered += 1
        self._check()
        return "bench"

    async def failure(self, job: Job) -> None:
        self.failed += 1
        self.errors[f"{job.state.value}: {job.error_message}"] += 1
        self._check()

    def _check(self) -> None:
        if self.delivered + self.failed >= self.expected and not self.done.is_set():
            self.finished_at = time.perf_counter()
            self.done.set()


async def main(payload: dict[str, Any]) -> dict[str, Any]:
    from bot.observe.logs import setup_logging
    from bot.request import GenerationRequest
    from bot.services import open_app
    from bot.settings import load_settings

    settings = load_settings()
    setup_logging(settings.log_level, settings.log_format, settings=settings)
    count, provider_name, tag = int(payload["jobs"]), payload["provider"], payload["tag"]
    sink = Sink(count)
    async with open_app(settings) as app:
        engine = app.engine(lambda job: sink, tick_s=1.0)  # as `reelbot worker` runs it
        await engine.start()
        request = GenerationRequest.create(prompt=f"[{tag}] a paper boat sails across a puddle", duration=5)
        adapter = app.provider(provider_name)
        await asyncio.sleep(0.2)  # let the engine's first dispatch run before the clock starts
        rss_before = rss_bytes()
        cpu0, wall0 = cpu_seconds(), time.perf_counter()
        await asyncio.gather(*(
            engine.accept(request, provider=provider_name, user_id=f"member{i}", guild_id="bench")
            for i in range(count)
        ))  # fmt: skip
        accepted = time.perf_counter() - wall0
        try:
            await asyncio.wait_for(sink.done.wait(), timeout=float(payload.get("timeout_s", 300)))
        except TimeoutError:
            pass
        cpu, wall = cpu_seconds() - cpu0, (sink.finished_at or time.perf_counter()) - wall0
        peak = peak_rss_bytes()
        calls = getattr(getattr(adapter, "api", None), "calls", None)
        receiver = engine.receiver
        await engine.stop()
    return {
        "jobs": count,
        "delivered": sink.delivered,
        "failed": sink.failed,
        "errors": dict(sink.errors.most_common(5)),
        "cpu_s": cpu,
        "wall_s": wall,
        "accept_s": accepted,
        "rss_before": rss_before,
        "peak_rss": peak,
        "adapter_calls": calls,
        "webhooks_accepted": receiver.accepted if receiver is not None else None,
        "webhooks_rejected": receiver.rejected if receiver is not None else None,
    }


if __name__ == "__main__":
    child_main(main)
