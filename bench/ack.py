"""Scenario `ack`: 200 `/generate` interactions arrive at once through the fake Discord → time to the deferral."""

from __future__ import annotations

import statistics

from bench.common import Figure, percentile, run_child
from bench.report import Context, Section

NAME = "ack"
TITLE = "Acknowledgement"


def run(ctx: Context) -> Section:
    count = 50 if ctx.quick else 200
    section = Section(NAME, TITLE, (
        f"reelbot's real bot — `python -m bot run` (ReelBot, its cogs, the engine, SQLite), in a process of its own — "
        f"connected to the loopback Discord (tests/fakes/discord) as in the Discord tests, with WaveSpeed's fake "
        f"behind it (tasks that outlast the run, so no job renders on this machine). After 6 warm-up commands, "
        f"{count} different members run `/generate prompt:… image1:<112 KB JPEG>` at the same moment (each member's "
        "account has a $10 allowance; the $0.42 clip is under the confirm threshold, so the bot checks, defers, then "
        "downloads, reserves and opens a thread). Latency = from the fake writing INTERACTION_CREATE to the bot's "
        "socket to the deferral callback arriving at the fake; p50 and p99 are over the run's interactions. The fake "
        "Discord runs in the driving process, so its own work (CDN downloads, edits, threads of earlier commands) is "
        "in the figures too. Physical limit: a loopback TCP round trip through asyncio, measured in the same process."
    ))  # fmt: skip
    p50 = Figure(NAME, f"p50, {count} at once", "ms", goal="—")
    p99 = Figure(NAME, f"p99, {count} at once", "ms", goal="< 100 ms (Discord allows 3 s)")
    answered = Figure(NAME, f"answered within Discord's 3 s (of {count})", "", digits=0, goal=f"{count}",
                      limit=f"{count}")  # fmt: skip
    rtts: list[float] = []
    rows = [
        "| run | p50 ms | p90 ms | p99 ms | max ms | unanswered | burst sent in ms | loopback RTT µs |",
        "|---|--:|--:|--:|--:|--:|--:|--:|",
    ]
    for run_no in range(1, ctx.runs + 1):
        ctx.say(f"  ack run {run_no}/{ctx.runs}")
        r = run_child("bench.ack_run", {"interactions": count, "warmup": 5}, logs=ctx.logs, timeout=240)
        ms = [x * 1000 for x in r["latencies"]]
        p50.runs.append(percentile(ms, 50))
        p99.runs.append(percentile(ms, 99))
        answered.runs.append(len(ms))
        rtts.append(r["rtt_us"])
        cells = [percentile(ms, 50), percentile(ms, 90), percentile(ms, 99), max(ms)]
        rows.append(f"| {run_no} | {' | '.join(f'{c:.1f}' for c in cells)} | {r['unanswered']} | "
                    f"{r['sent_in_s'] * 1000:.1f} | {r['rtt_us']:.0f} |")  # fmt: skip
        if r["violations"]:
            rows.append(f"| | fake Discord saw: {'; '.join(r['violations'])} | | | | | | |")
    limit = f"{statistics.median(rtts):.0f} µs loopback RTT"
    p50.limit = p99.limit = limit
    p99.met = p99.median < 100
    answered.met = min(answered.runs) == count
    section.figures = [p50, p99, answered]
    section.details = [*rows, ""]
    return section
