"""A separate OS process that races others to accept jobs under one daily spend cap (used by test_spend_cap).

Usage: python spend_cap_worker.py DB DATA_DIR CAP_USD ATTEMPTS NAME
Prints "ready", waits for a line on stdin (so every worker starts together), fires ATTEMPTS acceptances at once
through its own App (the real Engine.accept) and prints one JSON line:
{"accepted": n, "capped": n, "told": n}, where "told" counts calls of the engine's owner-notice hook.
"""

from __future__ import annotations

import asyncio
import json
import sys
from pathlib import Path

from bot.request import GenerationRequest
from bot.services import open_app
from bot.settings import load_settings
from bot.spend_cap import SpendCapReached

FIXTURES = Path(__file__).parents[1] / "fixtures"


async def main(db_path: str, data_dir: str, cap: str, attempts: int, name: str) -> None:
    settings = load_settings(REELBOT_DB=db_path, REELBOT_DATA_DIR=data_dir, REELBOT_DAILY_SPEND_CAP_USD=cap,
                             WAVESPEED_API_KEY="test-key", WAVESPEED_BASE_URL="http://127.0.0.1:9")  # fmt: skip
    async with open_app(settings) as app:
        engine = app.engine(lambda job: None)  # type: ignore[arg-type,return-value]  # jobs are never run here
        told: list[str] = []

        async def tell(refused: SpendCapReached) -> None:
            told.append(refused.day)

        engine.on_spend_cap_reached = tell
        image = await app.media.ingest(FIXTURES / "coffee.png")
        request = GenerationRequest.create(images=[image], prompt="Figure 1 steams", duration=3)
        print("ready", flush=True)
        sys.stdin.readline()

        async def attempt(i: int) -> str:
            try:
                await engine.accept(request, provider="wavespeed", user_id=f"{name}-{i % 3}", guild_id="g")
            except SpendCapReached:
                return "capped"
            return "accepted"

        outcomes = await asyncio.gather(*(attempt(i) for i in range(attempts)))
        print(json.dumps({"accepted": outcomes.count("accepted"), "capped": outcomes.count("capped"),
                          "told": len(told)}), flush=True)  # fmt: skip


if __name__ == "__main__":
    path, data, cap_usd, count, worker = sys.argv[1:6]
    asyncio.run(main(path, data, cap_usd, int(count), worker))
