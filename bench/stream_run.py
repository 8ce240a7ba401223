"""The `stream` scenario's run: a big clip downloaded through the provider adapter's own download path (streamed to a
file, capped, checked to be an MP4), then put through the engine's fit step with a limit it already meets.

Payload: {"bytes": N}; the WaveSpeed fake serving the clip runs in another process and its URL and key come from
the environment. RSS is sampled every 2 ms on a thread of its own; the baseline is taken after a warm-up download
of a small clip (connection pool, imports and buffers in place). Answer: download and fit wall time, each one's RSS
growth over the baseline, and the loopback copy of the same bytes into a file (the physical limit).
"""

from __future__ import annotations

import gc
import time
from pathlib import Path
from types import SimpleNamespace
from typing import Any

from bench.common import RssSampler, child_main, rss_bytes
from bench.limits import loopback_copy


async def main(payload: dict[str, Any]) -> dict[str, Any]:
    import httpx

    from bot.engine.runner import JobRunner
    from bot.providers import create_provider
    from bot.providers.base import TaskState, TaskStatus
    from bot.settings import load_settings

    size = int(payload["bytes"])
    scratch = Path(payload["scratch"])
    settings = load_settings(REELBOT_DATA_DIR=str(scratch / "data"))
    base = settings.wavespeed_base_url.rstrip("/")
    async with httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0)) as http:  # as bot.services opens it
        provider = create_provider("wavespeed", settings, http)
        runner = JobRunner(None, lambda name: provider, settings, None, None)  # type: ignore[arg-type]
        small = TaskState(TaskStatus.SUCCEEDED, output_url=f"{base}/files/small.mp4")
        await provider.download(small, scratch / "small.mp4", max_bytes=settings.max_output_bytes)
        gc.collect()
        baseline = rss_bytes()

        dest = scratch / "outputs" / "bench.mp4"
        state = TaskState(TaskStatus.SUCCEEDED, output_url=f"{base}/files/bench.mp4")
        sampler = RssSampler().start()
        start = time.perf_counter()
        await provider.download(state, dest, max_bytes=settings.max_output_bytes)
        download_s = time.perf_counter() - start
        download_peak = sampler.stop()
        received = dest.stat().st_size

        gc.collect()
        fit_baseline = rss_bytes()
        sampler = RssSampler().start()
        start = time.perf_counter()
        clip = await runner.fit(SimpleNamespace(id="bench"), dest, received)  # type: ignore[arg-type]
        fit_s = time.perf_counter() - start
        fit_peak = sampler.stop()
    copy_s, copy_cpu_s = loopback_copy(size, scratch / "copy.bin")
    return {
        "bytes": received,
        "download_s": download_s,
        "download_growth": download_peak - baseline,
        "baseline_rss": baseline,
        "fit_s": fit_s,
        "fit_growth": fit_peak - fit_baseline,
        "fit_transcoded": clip.transcoded,
        "copy_s": copy_s,
        "copy_cpu_s": copy_cpu_s,
    }


if __name__ == "__main__":
    child_main(main)
