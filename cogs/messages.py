"""What reelbot says on Discord: status embeds, result and failure posts. Pure functions of job records."""

from __future__ import annotations

from datetime import UTC, datetime

import discord

from bot.engine.runner import parse_iso
from bot.engine.states import JobState
from bot.money import fmt_usd
from bot.providers.base import ErrorCode
from bot.request import GenerationRequest
from bot.store.jobs import Job

PREVIEW_NOTE = "Preview render from the local renderer — not AI-generated."
NOTHING_CHARGED = "Nothing was charged."

STATE_WORDS = {
    JobState.QUEUED: "Waiting in line",
    JobState.AWAITING_APPROVAL: "Waiting for a moderator's approval",
    JobState.SUBMITTING: "Sending to the provider",
    JobState.SUBMITTED: "Accepted by the provider, waiting to start",
    JobState.RUNNING: "Generating",
    JobState.DOWNLOADING: "Fetching the finished clip",
    JobState.DELIVERING: "Posting the clip",
    JobState.DONE: "Done",
    JobState.FAILED: "Failed",
    JobState.CANCELLED: "Cancelled",
    JobState.UNKNOWN: "Outcome unknown",
}
STATE_COLOURS = {
    JobState.DONE: discord.Colour.green(),
    JobState.FAILED: discord.Colour.red(),
    JobState.CANCELLED: discord.Colour.dark_grey(),
    JobState.UNKNOWN: discord.Colour.orange(),
}
# Rough generation speed, seconds of waiting per second of clip, for the ETA (fal: std 5 s ≈ 94 s, pro ≈ 318 s).
SECONDS_PER_CLIP_SECOND = {"local": 0.6, "standard": 19.0, "pro": 64.0, "4k": 90.0}


def elapsed_s(job: Job, now: datetime | None = None) -> float:
    end = now or datetime.now(UTC)
    if job.state.finished:
        end = parse_iso(job.updated_at)
    return max(0.0, (end - parse_iso(job.created_at)).total_seconds())


def clock(seconds: float) -> str:
    seconds = int(seconds)
    return f"{seconds // 60}:{seconds % 60:02d}" if seconds >= 60 else f"{seconds} s"


def eta_s(job: Job, now: datetime | None = None) -> float | None:
    if job.state not in (JobState.SUBMITTED, JobState.RUNNING, JobState.SUBMITTING):
        return None
    request = job.request
    rate = SECONDS_PER_CLIP_SECOND["local" if job.provider == "local" else request.tier]
    expected = rate * request.duration
    if job.progress and job.progress > 0.05:
        return max(0.0, elapsed_s(job, now) * (1 - job.progress) / job.progress)
    return max(0.0, expected - elapsed_s(job, now))


def describe_request(request: GenerationRequest) -> str:
    parts = [f"{request.duration} s", request.aspect_ratio, request.tier]
    if request.images:
        parts.append(f"{len(request.images)} image{'s' if len(request.images) != 1 else ''}")
    if request.video:
        parts.append("reference video" + (" (its sound kept)" if request.keep_original_sound else ""))
    if request.sound:
        parts.append("sound")
    if request.multi_prompt:
        parts.append(f"{len(request.multi_prompt)} shots")
    return " · ".join(parts)


def clip_text(text: str, limit: int) -> str:
    return text if len(text) <= limit else text[: limit - 1] + "…"


def status_embed(job: Job, *, provider_name: str, preview: bool, now: datetime | None = None) -> discord.Embed:
    request = job.request
    embed = discord.Embed(
        title=STATE_WORDS[job.state] + (" (preview)" if preview else ""),
        description=clip_text(request.caption, 1000),
        colour=STATE_COLOURS.get(job.state, discord.Colour.blurple()),
    )
    embed.add_field(name="Job", value=f"`{job.id}`")
    embed.add_field(name="Provider", value=provider_name)
    cost = fmt_usd(job.charged_micros if job.state is JobState.DONE else job.cost_micros)
    label = "Charged" if job.state is JobState.DONE else ("Refunded" if job.state.finished else "Reserved")
    if job.state.finished and job.state is not JobState.DONE:
        cost = fmt_usd(job.cost_micros) + " — returned"
    embed.add_field(name=label, value=cost + (" (estimate)" if job.price_is_estimate else ""))
    if job.queue_position is not None and job.state is JobState.QUEUED:
        embed.add_field(name="Place in line", value=f"#{job.queue_position}")
    if job.progress is not None and not job.state.finished:
        embed.add_field(name="Progress", value=f"{job.progress:.0%}")
    embed.add_field(name="Elapsed", value=clock(elapsed_s(job, now)))
    eta = eta_s(job, now)
    if eta is not None:
        embed.add_field(name="ETA", value=f"about {clock(eta)}")
    if job.error_message and job.state.finished:
        embed.add_field(name="Why", value=clip_text(job.error_message, 1000), inline=False)
    footer = describe_request(request)
    embed.set_footer(text=f"{footer} · {PREVIEW_NOTE}" if preview else footer)
    return embed


def result_text(job: Job, *, provider_name: str, preview: bool, transcoded: bool) -> str:
    request = job.request
    lines = [
        f"**Clip for <@{job.user_id}>** — job `{job.id}`",
        f"> {clip_text(request.caption, 600)}",
        f"{describe_request(request)} · {provider_name} · took {clock(elapsed_s(job))} · "
        f"{fmt_usd(job.cost_micros)}{' (estimate)' if job.price_is_estimate else ''}",
    ]
    if transcoded:
        lines.append("Re-encoded to fit this server's upload limit.")
    if preview:
        lines.append(f"*{PREVIEW_NOTE}*")
    return "\n".join(lines)


def failure_text(job: Job) -> str:
    reason = job.error_message or "no reason was given"
    if job.state is JobState.CANCELLED:
        head = f"Job `{job.id}` was cancelled: {reason}"
        charged = job.charged_micros > 0
    elif job.error_code == ErrorCode.CONTENT_POLICY.value:
        head = f"Job `{job.id}` was refused by the provider's content policy: {reason}"
        charged = False
    elif job.state is JobState.UNKNOWN:
        head = f"Job `{job.id}` ended without a result we can confirm: {reason}"
        charged = False
    else:
        head = f"Job `{job.id}` failed: {reason}"
        charged = False
    money = f"{fmt_usd(job.charged_micros)} was charged." if charged else NOTHING_CHARGED
    return f"<@{job.user_id}> {head}\n{money}"
