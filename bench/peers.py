"""Scenario `peers`: the same jobs driven by the `wavespeed` SDK's and `fal-client`'s own submit-and-wait, at their
default settings, on the same fake providers in the same run as reelbot → requests per job and notice delay, as
ratios against reelbot's."""

from __future__ import annotations

import statistics
from concurrent.futures import ThreadPoolExecutor
from contextlib import ExitStack
from typing import Any

from bench.common import Figure, Server, clean_env, run_child
from bench.jobs import poll_growth, settings_env
from bench.report import Context, Section

NAME = "peers"
TITLE = "Against the peers"


def one_run(ctx: Context, *, jobs: int, gen_s: float, poll: tuple[float, float] | None) -> dict[str, Any]:
    """One run: a WaveSpeed fake and a fal fake, and four clients at once — reelbot and the WaveSpeed SDK on the
    first, reelbot and fal-client on the second — each with its own prompt tag so the fake tells their tasks apart."""
    with ExitStack() as stack:
        ws = stack.enter_context(Server({"provider": "wavespeed", "gen_s": gen_s, "clip_bytes": 0}, logs=ctx.logs))
        fal = stack.enter_context(Server({"provider": "fal", "gen_s": gen_s, "clip_bytes": 0, "tls": True},
                                         logs=ctx.logs))  # fmt: skip

        def reelbot_env(fake: Server) -> dict[str, str]:
            first, most = poll or (10.0, 30.0)  # full scale: reelbot's defaults
            return settings_env(fake, jobs, first, most, webhook=False)

        timeout = gen_s * 3 + 180
        plans = {
            ("wavespeed", "reelbot"): ("bench.engine_run", {"jobs": jobs, "provider": "wavespeed", "tag": "reelbot",
                                                            "timeout_s": timeout}, reelbot_env(ws)),
            ("wavespeed", "sdk"): ("bench.peer_clients", {"client": "wavespeed", "jobs": jobs, "tag": "sdk",
                                                          "base_url": ws.base_url}, clean_env(**ws.env)),
            ("fal", "reelbot"): ("bench.engine_run", {"jobs": jobs, "provider": "fal", "tag": "reelbot",
                                                      "timeout_s": timeout}, reelbot_env(fal)),
            ("fal", "sdk"): ("bench.peer_clients", {"client": "fal", "jobs": jobs, "tag": "sdk",
                                                    "base_url": fal.base_url}, clean_env(**fal.env)),
        }  # fmt: skip
        with ThreadPoolExecutor(len(plans)) as pool:
            futures = {key: pool.submit(run_child, module, payload, logs=ctx.logs, env=env, timeout=timeout + 60)
                       for key, (module, payload, env) in plans.items()}  # fmt: skip
            answers = {key: future.result() for key, future in futures.items()}
        out: dict[str, Any] = {}
        for (provider, who), answer in answers.items():
            fake = ws if provider == "wavespeed" else fal
            stats = fake.stats(who)
            tasks = stats["tasks"]
            delays = [t["noticed"] - t["finish"] for t in tasks if t["noticed"] is not None]
            out[f"{provider}/{who}"] = {
                "completed": answer.get("completed", answer.get("delivered")),
                "requests_per_job": (len(tasks) + sum(t["reads"] for t in tasks)) / jobs,
                "delay_median_s": statistics.median(delays) if delays else float("nan"),
                "delay_mean_s": statistics.mean(delays) if delays else float("nan"),
                "delay_max_s": max(delays, default=float("nan")),
                "cpu_ms_per_job": answer["cpu_s"] * 1000 / jobs,
            }
    return out


def run(ctx: Context) -> Section:
    if ctx.quick:
        jobs, gen_s, poll = 5, 9.0, (1.0, 3.0)
    else:
        jobs, gen_s, poll = 20, 90.0, None
    scale = "" if poll is None else (f" (quick run: a {gen_s:g} s generation, reelbot's poll timings scaled to "
                                     f"{poll[0]:g} s / {poll[1]:g} s but the SDKs' fixed intervals not, so these "
                                     "ratios are not the full-scale ones)")  # fmt: skip
    section = Section(NAME, TITLE, (
        f"Full scale, no time scaling: each fake provider finishes a task {gen_s:g} s after its submit{scale}. In each "
        f"run four clients start together, {jobs} jobs each: reelbot's engine (as in *Many jobs in flight*, reelbot's "
        f"default poll timings: first check 10 s, gap ×{poll_growth():g} up to 30 s, ±20 % jitter) and the "
        "`wavespeed` SDK "
        "(`Client(base_url=…).run(model, input)`, its default `poll_interval` 1.0 s, one thread per job) against the "
        "WaveSpeed fake; reelbot's engine and `fal-client` (`subscribe_async(application, arguments)`, its default "
        "`interval` 0.1 s) against the fal fake. **Neither SDK is patched**: the WaveSpeed SDK takes the fake's URL "
        "through its documented `base_url` argument and its key from `WAVESPEED_API_KEY`; fal-client takes its queue "
        "host from `FAL_QUEUE_RUN_HOST` and its key from `FAL_KEY` — and since it always speaks https:// to that host, "
        "the fal fake serves TLS with a throwaway self-signed certificate, trusted through `SSL_CERT_FILE` (which "
        "reelbot's httpx honours too, so both talk TLS to it). Requests per job count the submit and every status and "
        "result read (fal: a status poll, then one result GET); the notice delay runs from the provider finishing to "
        "the first status answer that said so. Ratio = the SDK's figure ÷ reelbot's. The runs of this scenario run "
        "side by side (each is almost all waiting), which keeps a full run within ten minutes."
    ))  # fmt: skip
    ctx.say(f"  peers: {ctx.runs} run(s) side by side, {jobs} jobs per client, {gen_s:g} s generation")
    with ThreadPoolExecutor(ctx.runs) as pool:
        results = list(pool.map(lambda _: one_run(ctx, jobs=jobs, gen_s=gen_s, poll=poll), range(ctx.runs)))
    rows = [
        "| run | client | completed | requests/job | notice delay median s | mean s | max s | client CPU ms/job |",
        "|---|---|--:|--:|--:|--:|--:|--:|",
    ]
    for n, result in enumerate(results, start=1):
        for key, r in result.items():
            rows.append(f"| {n} | {key} | {r['completed']}/{jobs} | {r['requests_per_job']:.2f} | "
                        f"{r['delay_median_s']:.3f} | {r['delay_mean_s']:.3f} | {r['delay_max_s']:.3f} | "
                        f"{r['cpu_ms_per_job']:.1f} |")  # fmt: skip
    figures: list[Figure] = []
    labels = {"wavespeed": "WaveSpeed SDK", "fal": "fal-client"}
    for provider in ("wavespeed", "fal"):
        mine = [r[f"{provider}/reelbot"] for r in results]
        theirs = [r[f"{provider}/sdk"] for r in results]
        label = labels[provider]
        req = Figure(NAME, f"{provider}: reelbot requests per job", "", [m["requests_per_job"] for m in mine],
                     goal="≤ 8", limit="2", digits=2)  # fmt: skip
        req.met = req.median <= 8
        delay = Figure(NAME, f"{provider}: reelbot notice delay, median job, share of generation", "%",
                       [100 * m["delay_median_s"] / gen_s for m in mine], goal="< 15 %", limit="0")  # fmt: skip
        delay.met = delay.median < 15
        sdk_req = Figure(NAME, f"{provider}: {label} requests per job", "", [t["requests_per_job"] for t in theirs],
                         limit="2", digits=1)  # fmt: skip
        sdk_delay = Figure(NAME, f"{provider}: {label} notice delay, median job", "s",
                           [t["delay_median_s"] for t in theirs], limit="0", digits=3)  # fmt: skip
        req_ratio = Figure(NAME, f"{provider}: requests per job, {label} ÷ reelbot", "×",
                           [t["requests_per_job"] / m["requests_per_job"] for t, m in zip(theirs, mine, strict=True)],
                           digits=1)  # fmt: skip
        delay_ratio = Figure(NAME, f"{provider}: notice delay, {label} ÷ reelbot", "×",
                             [t["delay_median_s"] / m["delay_median_s"] for t, m in zip(theirs, mine, strict=True)],
                             digits=3)  # fmt: skip
        figures += [req, delay, sdk_req, sdk_delay, req_ratio, delay_ratio]
    section.figures = figures
    section.details = [*rows, ""]
    return section
