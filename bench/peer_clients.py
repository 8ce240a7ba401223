"""The peers' side of the `peers` scenario: the same jobs through each provider's own SDK, its submit-and-wait call
at its default settings, pointed at the loopback fake by its own settings (nothing in either package is patched).

- `wavespeed` (PyPI `wavespeed`): `wavespeed.Client(base_url=...)` — the client's documented base-URL argument —
  with the key from `WAVESPEED_API_KEY`; `Client.run(model, input)` submits, then polls every `poll_interval`
  (default 1.0 s) until the task is done. It is synchronous (`requests`), so each job runs on a thread.
- `fal` (PyPI `fal-client`): `fal_client.subscribe_async(application, arguments)` with `FAL_KEY`; the queue host
  comes from `FAL_QUEUE_RUN_HOST`, which fal-client reads at import and always reaches over https://, so the fake
  serves TLS with a throwaway certificate trusted through `SSL_CERT_FILE` (read by httpx). It submits, polls the
  status every `interval` (default 0.1 s) and then reads the result.

Payload: {"client": "wavespeed"|"fal", "jobs": N, "tag": T, "base_url": URL}. Answer: CPU and wall seconds, and
how many jobs completed.
"""

from __future__ import annotations

import asyncio
import time
from concurrent.futures import ThreadPoolExecutor
from typing import Any

from bench.common import child_main, cpu_seconds, peak_rss_bytes

WAVESPEED_MODEL = "kwaivgi/kling-video-o3-std/reference-to-video"
FAL_APPLICATION = "fal-ai/kling-video/o3/standard/reference-to-video"


def run_wavespeed(payload: dict[str, Any]) -> dict[str, Any]:
    import wavespeed

    client = wavespeed.Client(base_url=payload["base_url"])
    body = {"prompt": f"[{payload['tag']}] a paper boat sails across a puddle", "duration": 5,
            "aspect_ratio": "16:9", "sound": False, "shot_type": "intelligent"}  # fmt: skip
    count = int(payload["jobs"])
    cpu0, start = cpu_seconds(), time.perf_counter()
    with ThreadPoolExecutor(max_workers=count) as pool:
        futures = [pool.submit(client.run, WAVESPEED_MODEL, body) for _ in range(count)]
        outputs = [future.result() for future in futures]
    return {"client": "wavespeed", "jobs": count, "completed": sum(1 for o in outputs if o.get("outputs")),
            "cpu_s": cpu_seconds() - cpu0, "wall_s": time.perf_counter() - start,
            "peak_rss": peak_rss_bytes()}  # fmt: skip


async def run_fal(payload: dict[str, Any]) -> dict[str, Any]:
    import fal_client

    arguments = {"prompt": f"[{payload['tag']}] a paper boat sails across a puddle", "duration": "5",
                 "aspect_ratio": "16:9", "generate_audio": False}  # fmt: skip
    count = int(payload["jobs"])
    cpu0, start = cpu_seconds(), time.perf_counter()
    results = await asyncio.gather(*(fal_client.subscribe_async(FAL_APPLICATION, arguments) for _ in range(count)))
    return {"client": "fal", "jobs": count, "completed": sum(1 for r in results if r.get("video")),
            "cpu_s": cpu_seconds() - cpu0, "wall_s": time.perf_counter() - start,
            "peak_rss": peak_rss_bytes()}  # fmt: skip


def main(payload: dict[str, Any]) -> Any:
    return run_wavespeed(payload) if payload["client"] == "wavespeed" else run_fal(payload)


if __name__ == "__main__":
    child_main(main)
