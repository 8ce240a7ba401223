"""Scenario `jobs`: 1,000 jobs in flight through the engine against a provider that takes a set time and returns a
5 MB clip → peak RSS, CPU per job, provider requests per job, and the delay between the provider finishing and
reelbot noticing — with polling, and with webhooks."""

from __future__ import annotations

import statistics
import tempfile
from collections.abc import Iterator
from pathlib import Path
from typing import Any

from bench.common import MB, Figure, Server, clean_env, free_port, percentile, run_child
from bench.limits import loopback_copy
from bench.report import Context, Section

NAME = "jobs"
TITLE = "Many jobs in flight"
REAL_GEN_S = 90.0  # the generation time the goals speak of


def settings_env(fake: Server, jobs: int, first_s: float, max_s: float, webhook: bool) -> dict[str, str]:
    """reelbot's settings for a run: the fake provider, scaled poll timings, caps that let every job be in flight."""
    env = clean_env(
        **fake.env, REELBOT_PROVIDER=fake.payload["provider"], REELBOT_POLL_FIRST_S=f"{first_s:g}",
        REELBOT_POLL_MAX_S=f"{max_s:g}", REELBOT_MAX_CONCURRENCY=str(jobs), REELBOT_GUILD_MAX_JOBS=str(jobs),
        WAVESPEED_MAX_CONCURRENCY=str(jobs), FAL_MAX_CONCURRENCY=str(jobs), REELBOT_DEFAULT_ALLOWANCE_USD="10",
    )  # fmt: skip
    if webhook:
        port = free_port()
        env.update(REELBOT_WEBHOOK_URL=f"http://127.0.0.1:{port}", REELBOT_WEBHOOK_LISTEN=f"127.0.0.1:{port}",
                   # the backstop poll's 120 s default, scaled like the poll timings (first_s is 10 s scaled)
                   REELBOT_WEBHOOK_BACKSTOP_S=f"{first_s * 12:g}")  # fmt: skip
    return env


def summarize(result: dict[str, Any], stats: dict[str, Any]) -> dict[str, Any]:
    """Per-run figures from the engine's answer and the fake's record of the tasks."""
    tasks, jobs, gen_s = stats["tasks"], result["jobs"], stats["gen_s"]
    delays = [t["noticed"] - t["finish"] for t in tasks if t["noticed"] is not None]
    submits, reads, other = len(tasks), sum(t["reads"] for t in tasks), sum(stats["other_requests"].values())
    return {
        "jobs": jobs,
        "delivered": result["delivered"],
        "failed": result["failed"],
        "errors": result["errors"],
        "noticed": len(delays),
        "requests_per_job": (submits + reads) / jobs,
        "other_per_job": other / jobs,
        "reads_per_job": reads / jobs,
        "other_requests": stats["other_requests"],
        "downloads_per_job": sum(t["downloads"] for t in tasks) / jobs,
        "delay_median_s": statistics.median(delays) if delays else float("nan"),
        "delay_mean_s": statistics.mean(delays) if delays else float("nan"),
        "delay_p95_s": percentile(delays, 95),
        "delay_max_s": max(delays, default=float("nan")),
        "gen_s": gen_s,
        "cpu_ms_per_job": result["cpu_s"] * 1000 / jobs,
        "peak_rss_mb": result["peak_rss"] / MB,
        "rss_before_mb": result["rss_before"] / MB,
        "wall_s": result["wall_s"],
        "accept_s": result["accept_s"],
        "webhooks": result.get("webhooks_accepted"),
    }


def one_run(ctx: Context, *, jobs: int, gen_s: float, first_s: float, max_s: float, clip: int,
            webhook: bool) -> dict[str, Any]:  # fmt: skip
    with Server({"provider": "wavespeed", "gen_s": gen_s, "clip_bytes": clip}, logs=ctx.logs) as fake:
        env = settings_env(fake, jobs, first_s, max_s, webhook)
        result = run_child("bench.engine_run", {"jobs": jobs, "provider": "wavespeed", "tag": "reelbot",
                                                "timeout_s": gen_s * 4 + 120},
                           logs=ctx.logs, env=env, timeout=gen_s * 4 + 240)  # fmt: skip
        stats = fake.stats("reelbot")
    return summarize(result, stats)


def poll_growth() -> float:
    """The factor reelbot's poll gaps grow by (read from the engine, so the report follows the code)."""
    from bot.engine import runner

    return float(getattr(runner, "POLL_GROWTH", 1.5))


def webhook_backstop_s() -> float | None:
    """reelbot's backstop poll interval when a webhook is registered, if it has one (None: the normal schedule)."""
    from bot.settings import Settings

    field = Settings.model_fields.get("webhook_backstop_s")
    return float(field.default) if field is not None else None


def schedule_note(gen_s: float = REAL_GEN_S, first_s: float = 10.0, max_s: float = 30.0) -> str:
    """What reelbot's poll schedule implies for a job of `gen_s`, worked out from the engine's own delays: the
    schedule without jitter, and the median over 10,000 jittered schedules (as the engine draws them)."""
    import random

    from bot.engine.runner import poll_delays

    def follow(delays: Iterator[float]) -> tuple[list[float], float]:
        at, checks = 0.0, []
        while at < gen_s:
            at += next(delays)
            checks.append(at)
        return checks, at - gen_s

    checks, late = follow(poll_delays(first_s, max_s, jitter=0.0))
    rng = random.Random(1)
    drawn = [follow(poll_delays(first_s, max_s, rng=rng)) for _ in range(10_000)]
    median_late = statistics.median(d[1] for d in drawn)
    median_reads = statistics.median(len(d[0]) for d in drawn)
    backstop = webhook_backstop_s()
    if backstop is None:
        webhooks = ("With webhooks the same reads still run until the callback arrives, and the callback adds one "
                    "confirming read.")  # fmt: skip
    else:
        webhooks = (f"With a webhook registered, polling is only a backstop every {backstop:g} s (scaled like the "
                    "rest here), so a job whose callback arrives costs its submit and one confirming "
                    "read.")  # fmt: skip
    return (
        f"reelbot's poll schedule at its defaults (first check {first_s:g} s, gap ×{poll_growth():g} up to "
        f"{max_s:g} s, ±20 % jitter) checks, without the jitter, at {', '.join(f'{c:.4g}' for c in checks)} s after "
        f"the submit: a job done at {gen_s:g} s is seen {late:.2g} s late after {len(checks)} status reads. Over "
        f"10,000 jittered schedules drawn as the engine draws them, the median is {median_late:.1f} s late "
        f"({100 * median_late / gen_s:.0f} % of {gen_s:g} s) after {median_reads:g} reads — what the measured medians "
        f"above should match. {webhooks}"
    )


def run(ctx: Context) -> Section:
    jobs, gen_s, clip = (100, 3.0, 1 * MB) if ctx.quick else (1000, 9.0, 5 * MB)
    scale = REAL_GEN_S / gen_s
    first_s, max_s = 10 / scale, 30 / scale  # reelbot's defaults (10 s, 30 s), scaled like the generation
    section = Section(NAME, TITLE, (
        f"{jobs:,} jobs accepted at once through `Engine.accept` (each from its own member, $10 allowance) and run by "
        f"the engine as `reelbot worker` runs it (open_app, the App's engine, 1 s tick, INFO logging), caps raised so "
        f"that all {jobs:,} are in flight together. The WaveSpeed fake runs in another process and finishes each task "
        f"{gen_s:g} s after its submit, by the clock, then serves a {clip / MB:.0f} MB clip; the engine downloads it "
        f"and hands it to a delivery with no size limit (nothing is fitted). Time is scaled {scale:g}:1 — a "
        f"{REAL_GEN_S:g} s generation takes {gen_s:g} s — and so are reelbot's poll timings "
        f"(REELBOT_POLL_FIRST_S={first_s:g}, REELBOT_POLL_MAX_S={max_s:g}: the defaults 10 s and 30 s scaled; "
        "with webhooks the backstop interval too), so "
        "requests per job and the notice delay as a share of the generation time carry over to full scale. "
        "**Polling:** no webhook. **Webhooks:** REELBOT_WEBHOOK_URL points at reelbot's receiver; the fake POSTs a "
        "signed WaveSpeed callback when a task finishes (a callback wakes the job, which confirms with one poll). "
        "Requests per job = every request reelbot made to the provider's API about a task (its submit and every "
        "status read) ÷ jobs; requests about no task (the webhook-secret fetch, once per process) are listed apart, "
        "and the clip download is one more GET, not counted. Notice delay = from the "
        "moment the provider finished to the first status answer that said so. Peak RSS is the engine process's "
        "ru_maxrss; CPU per job = the process's CPU time (all threads) from the first accept to the last delivery ÷ "
        "jobs. Physical limits: RSS — the same process idle (App open, engine started); CPU — receiving the clip's "
        "bytes from a loopback socket into a file (no HTTP); requests — 2 (one submit, one read that says done); "
        "notice delay — 0."
    ))  # fmt: skip
    copy_cpu_ms = statistics.median(
        loopback_copy(clip, Path(tempfile.gettempdir()) / f"reelbot-bench-copy-{n}.bin")[1] * 1000 for n in range(3)
    )
    rows = ["| mode | run | delivered | failed | wall s | accept s | requests/job | reads/job | other requests | "
            "downloads/job | delay median s (% of gen) | p95 s | max s | CPU ms/job | peak RSS MB | idle RSS MB |",
            "|---|---|--:|--:|--:|--:|--:|--:|---|--:|--:|--:|--:|--:|--:|--:|"]  # fmt: skip
    for mode in ("polling", "webhooks"):
        per_run = []
        for run_no in range(1, ctx.runs + 1):
            ctx.say(f"  jobs ({mode}) run {run_no}/{ctx.runs}: {jobs} jobs, {gen_s:g} s generation")
            r = one_run(ctx, jobs=jobs, gen_s=gen_s, first_s=first_s, max_s=max_s, clip=clip,
                        webhook=mode == "webhooks")  # fmt: skip
            per_run.append(r)
            rows.append(
                f"| {mode} | {run_no} | {r['delivered']} | {r['failed']} | {r['wall_s']:.1f} | {r['accept_s']:.2f} | "
                f"{r['requests_per_job']:.2f} | {r['reads_per_job']:.2f} | {r['other_requests'] or '—'} | "
                f"{r['downloads_per_job']:.2f} | {r['delay_median_s']:.2f} ({100 * r['delay_median_s'] / gen_s:.1f} %)"
                f" | {r['delay_p95_s']:.2f} | {r['delay_max_s']:.2f} | {r['cpu_ms_per_job']:.2f} | "
                f"{r['peak_rss_mb']:.0f} | {r['rss_before_mb']:.0f} |"
            )
            if r["errors"]:
                rows.append(f"| | | failures: {r['errors']} |" + " |" * 13)
        section.figures += figures(mode, per_run, jobs=jobs, gen_s=gen_s, copy_cpu_ms=copy_cpu_ms, clip=clip)
    busy = statistics.median(r["cpu_ms_per_job"] for r in per_run) * jobs / 1000
    section.details = [*rows, "", schedule_note(), "",
                       f"Scaling time concentrates the load: at the measured CPU per job, these {jobs:,} jobs need "
                       f"about {busy:.0f} s of the engine's CPU, all of it due within a {gen_s:g} s window, so the "
                       "engine is busy for most of each run (the wall column) and the notice delays here include "
                       f"queueing behind that work; at full scale the same work is spread over {scale:g}× the time.",
                       ""]  # fmt: skip
    return section


def figures(mode: str, runs: list[dict[str, Any]], *, jobs: int, gen_s: float, copy_cpu_ms: float,
            clip: int) -> list[Figure]:  # fmt: skip
    idle = statistics.median(r["rss_before_mb"] for r in runs)
    rss = Figure(NAME, f"{mode}: peak RSS, {jobs:,} jobs", "MB", [r["peak_rss_mb"] for r in runs], goal="< 250 MB",
                 limit=f"{idle:.0f} MB idle", digits=0)  # fmt: skip
    cpu = Figure(NAME, f"{mode}: CPU per job", "ms", [r["cpu_ms_per_job"] for r in runs], goal="< 20 ms",
                 limit=f"{copy_cpu_ms:.2f} ms to receive {clip / MB:.0f} MB", digits=2)  # fmt: skip
    polling = mode == "polling"
    requests = Figure(NAME, f"{mode}: provider requests per job ({REAL_GEN_S:g} s generation)", "",
                      [r["requests_per_job"] for r in runs], goal="≤ 8" if polling else "2", limit="2",
                      digits=2)  # fmt: skip
    share = Figure(NAME, f"{mode}: notice delay, median job, share of generation time", "%",
                   [100 * r["delay_median_s"] / gen_s for r in runs], goal="< 15 %" if polling else "—",
                   limit="0")  # fmt: skip
    seconds = Figure(NAME, f"{mode}: notice delay, median job (scaled run)", "s", [r["delay_median_s"] for r in runs],
                     goal="< 0.5 s" if not polling else "—", limit="0", digits=3)  # fmt: skip
    p95 = Figure(NAME, f"{mode}: notice delay, p95 job, share of generation time", "%",
                 [100 * r["delay_p95_s"] / gen_s for r in runs], limit="0")  # fmt: skip
    mean = Figure(NAME, f"{mode}: notice delay, mean over jobs, share of generation time", "%",
                  [100 * r["delay_mean_s"] / gen_s for r in runs], limit="0")  # fmt: skip
    rss.met = rss.median < 250
    cpu.met = cpu.median < 20
    requests.met = requests.median <= (8 if polling else 2)
    if polling:
        share.met = share.median < 15
        return [rss, cpu, requests, share, mean, p95]
    seconds.met = seconds.median < 0.5
    return [rss, cpu, requests, seconds, share, mean, p95]
