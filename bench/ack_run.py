"""The `ack` scenario's run: the loopback Discord (and a provider fake) here, reelbot's real bot — `python -m bot run`,
the ReelBot with its cogs, engine and SQLite — in a process of its own, connected to it as in
tests/integration/discord/test_bot_restart.py. After a few warm-up commands, N members run `/generate` (a prompt and
one image) at the same moment; for each interaction the fake records when it wrote INTERACTION_CREATE to the bot's
socket and when the bot's deferral callback arrived.

Payload: {"interactions": N, "warmup": W}. Answer: the N latencies (s), how many got no accepted answer, the fake's
rule violations, and the loopback round trip measured here before the bot starts.
"""

from __future__ import annotations

import asyncio
import contextlib
import signal
import sys
import time
from pathlib import Path
from typing import Any

from bench.common import child_main, clean_env
from bench.fakes import build
from bench.limits import loopback_rtt_us

FIXTURES = Path(__file__).resolve().parents[1] / "tests" / "fixtures"


async def main(payload: dict[str, Any]) -> dict[str, Any]:
    from tests.fakes.discord import FakeDiscord

    count, warmup = int(payload["interactions"]), int(payload.get("warmup", 5))
    scratch = Path(payload["scratch"])
    rtt_us = await loopback_rtt_us()
    image = ("rocket.jpg", (FIXTURES / "rocket.jpg").read_bytes(), "image/jpeg")
    # A paid provider whose tasks outlast the scenario: the bot's jobs queue and wait, nothing renders on our CPU.
    provider = build("wavespeed", gen_s=3600, clip_bytes=0)
    await provider.start()
    async with FakeDiscord() as fake:
        guild = fake.add_guild("studio")
        channel = guild.add_text_channel("clips")
        members = [fake.add_user(f"member{i}") for i in range(count + warmup + 3)]
        for member in members:
            guild.add_member(member)
        env = clean_env(
            DISCORD_TOKEN=fake.token, DISCORD_API_BASE=fake.api_base, DISCORD_GATEWAY_URL=fake.gateway_url,
            REELBOT_DEV_GUILD=str(guild.id), REELBOT_PROVIDER="wavespeed", REELBOT_DEFAULT_ALLOWANCE_USD="10",
            **provider.settings_env(),
        )  # fmt: skip
        with (scratch / "bot.log").open("ab") as log:
            bot = await asyncio.create_subprocess_exec(sys.executable, "-m", "bot", "run", env=env, cwd=scratch,
                                                       stdout=asyncio.subprocess.DEVNULL, stderr=log)  # fmt: skip
        try:
            async with asyncio.timeout(60):
                while not fake.gateway.identifies:
                    if bot.returncode is not None:
                        raise RuntimeError(f"the bot exited ({bot.returncode}); see {scratch / 'bot.log'}")
                    await asyncio.sleep(0.05)
            spare = iter(members[count + warmup :])

            async def generate(member: Any) -> Any:
                return await fake.slash(member, channel, "generate", {"prompt": "Figure 1 lifts off into the clouds"},
                                        attachments={"image1": image})  # fmt: skip

            # Ready when a command is answered (discord.py holds on_ready ~2 s for guilds; commands work before).
            async with asyncio.timeout(30):
                while True:
                    try:
                        await (await generate(next(spare))).response(timeout=5)
                        break
                    except (TimeoutError, RuntimeError):
                        await asyncio.sleep(0.5)
            for member in members[count : count + warmup]:
                await (await generate(member)).response(timeout=10)
            await asyncio.sleep(1.0)  # let the warm-up jobs' follow-up work (threads, status edits) settle
            fake.violations.clear()

            started = time.monotonic()
            burst = await asyncio.gather(*(generate(member) for member in members[:count]))
            sent_in = time.monotonic() - started
            await asyncio.gather(*(ix.response(timeout=15) for ix in burst), return_exceptions=True)
            latencies = [ix.response_time for ix in burst if ix.response_time is not None]
            types = sorted({ix.callback.type for ix in burst if ix.callback is not None})
            unanswered = sum(1 for ix in burst if ix.response_time is None)
            violations = [f"{v.kind}: {v.detail}" for v in fake.violations]
            await asyncio.sleep(2.0)  # the accepted jobs settle before shutdown
        finally:
            if bot.returncode is None:
                bot.send_signal(signal.SIGINT)
                try:
                    async with asyncio.timeout(20):
                        await bot.wait()
                except TimeoutError:
                    bot.kill()
                    await bot.wait()
    with contextlib.suppress(Exception):
        await provider.stop()
    return {
        "latencies": latencies,
        "unanswered": unanswered,
        "callback_types": types,
        "violations": violations[:10],
        "sent_in_s": sent_in,
        "rtt_us": rtt_us,
    }


if __name__ == "__main__":
    child_main(main)
