"""The `reelbot` command: a headless face on the same core the Discord bot uses."""

from __future__ import annotations

import argparse
import asyncio
import json
import logging
import os
import shutil
import sys
import time
from importlib import resources
from pathlib import Path
from typing import Any

from bot.cli_audit import add_commands as add_audit_commands
from bot.cli_audit import cmd_audit
from bot.cli_ledger import add_commands as add_ledger_commands
from bot.cli_ledger import cmd_ledger, cmd_quota
from bot.engine.delivery import Clip
from bot.engine.states import JobState
from bot.intake import RawElement, RawRequest, build_request, parse_shot
from bot.ledger import InsufficientQuota
from bot.money import fmt_usd, usd_str
from bot.providers import available as available_providers
from bot.request import ASPECT_RATIOS, SHOT_TYPES, TIERS, GenerationRequest, InvalidRequest
from bot.services import App, open_app
from bot.settings import Settings, SettingsError, load_settings
from bot.store.jobs import Job

EXIT_OK, EXIT_FAILED, EXIT_INVALID = 0, 1, 2
PREVIEW_NOTE = "preview render from the local renderer — not AI-generated"
log = logging.getLogger("reelbot")


class UsageError(Exception):
    """Bad command-line input; exit 2 with the message."""


# --- argument parsing ----------------------------------------------------------------------------


def _request_flags(parser: argparse.ArgumentParser) -> None:
    parser.add_argument("--prompt", help="what happens; refer to images as 'Figure 1', '@Image1' or 'image 1'")
    parser.add_argument("--image", action="append", default=[], metavar="PATH|URL", help="reference image (0–7)")
    parser.add_argument("--sample", action="store_true", help="add reelbot's bundled sample images as references")
    parser.add_argument("--video", metavar="PATH|URL", help="reference video (MP4/MOV, 3–10 s)")
    parser.add_argument("--aspect-ratio", choices=ASPECT_RATIOS)
    parser.add_argument("--duration", type=int, metavar="N", help="seconds, 3–15 (default 5)")
    parser.add_argument("--sound", action=argparse.BooleanOptionalAction, help="generate audio")
    parser.add_argument(
        "--keep-original-sound", action=argparse.BooleanOptionalAction, help="keep the reference video's audio"
    )
    parser.add_argument("--tier", choices=TIERS)
    parser.add_argument("--shot-type", choices=SHOT_TYPES)
    parser.add_argument(
        "--multi-prompt", action="append", default=[], metavar="N:TEXT", help="a shot of N seconds (repeat, ≤ 6)"
    )
    parser.add_argument(
        "--element",
        action="append",
        default=[],
        metavar="FRONT[,REF...]|id:ID",
        help="a subject: a frontal image and 1–3 more views, or a provider element id",
    )
    parser.add_argument("--start-frame", metavar="PATH|URL")
    parser.add_argument("--end-frame", metavar="PATH|URL")
    parser.add_argument("--provider", choices=available_providers(), help="default: REELBOT_PROVIDER")
    parser.add_argument("--json", action="store_true", help="print one JSON object")


def make_parser() -> argparse.ArgumentParser:
    parser = argparse.ArgumentParser(
        prog="reelbot", description="Kling O3 reference-to-video, for Discord and headless."
    )
    commands = parser.add_subparsers(dest="command", required=True, metavar="COMMAND")

    generate = commands.add_parser("generate", help="generate a clip and wait for it")
    _request_flags(generate)
    generate.add_argument("--out", type=Path, help="where to write the clip (default ./reelbot-<job>.mp4)")
    generate.add_argument("--user", default="local", help="whose quota pays (default: local)")
    generate.add_argument("--guild", help="the guild the user belongs to")
    generate.add_argument("--detach", action="store_true", help="enqueue, print the job id and exit (run `worker`)")
    generate.add_argument(
        "--max-bytes", type=int, metavar="N", help="fit the clip under N bytes (re-encoded, or a link if it can't)"
    )

    commands.add_parser("run", help="run the Discord bot (needs DISCORD_TOKEN)")
    sync = commands.add_parser("sync", help="publish the slash commands to Discord")
    sync.add_argument("--guild", type=int, help="to one server (instant) instead of globally")

    worker = commands.add_parser("worker", help="run the job engine without Discord")
    worker.add_argument("--until-idle", action="store_true", help="exit when nothing is queued or in flight")

    cancel = commands.add_parser("cancel", help="cancel a job")
    cancel.add_argument("job_id")
    cancel.add_argument("--user", default="local", help="who is cancelling (the job's owner)")
    cancel.add_argument("--json", action="store_true")

    price = commands.add_parser("price", help="what a request would cost")
    _request_flags(price)

    commands.add_parser("migrate", help="apply pending database migrations")

    jobs = commands.add_parser("jobs", help="list or show jobs")
    jobs_commands = jobs.add_subparsers(dest="jobs_command", required=True, metavar="ACTION")
    listing = jobs_commands.add_parser("list", help="recent jobs")
    listing.add_argument("--user")
    listing.add_argument("--limit", type=int, default=20)
    listing.add_argument("--json", action="store_true")
    show = jobs_commands.add_parser("show", help="one job")
    show.add_argument("job_id")
    show.add_argument("--json", action="store_true")
    add_ledger_commands(commands)  # quota grant/show/allowance, ledger verify
    add_audit_commands(commands)  # audit export/list
    return parser


# --- turning flags into a request ----------------------------------------------------------------


def sample_images() -> list[Path]:
    folder = resources.files("bot") / "samples"
    return sorted(Path(str(entry)) for entry in folder.iterdir() if entry.name.endswith((".jpg", ".png")))


def raw_request(args: argparse.Namespace) -> RawRequest:
    images: list[Any] = list(args.image)
    if args.sample:
        images += sample_images()
    shots = None
    if args.multi_prompt:
        try:
            shots = [parse_shot(text) for text in args.multi_prompt]
        except ValueError as exc:
            raise UsageError(f"--multi-prompt: {exc}") from None
    elements = []
    for text in args.element:
        if text.startswith("id:"):
            elements.append(RawElement(element_id=text[3:]))
        else:
            front, *refs = [part for part in text.split(",") if part]
            elements.append(RawElement(frontal=front, references=refs))
    return RawRequest(
        prompt=args.prompt,
        images=images,
        video=args.video,
        aspect_ratio=args.aspect_ratio,
        duration=args.duration,
        sound=args.sound,
        keep_original_sound=args.keep_original_sound,
        tier=args.tier,
        shot_type=args.shot_type,
        multi_prompt=shots,
        elements=elements,
        start_frame=args.start_frame,
        end_frame=args.end_frame,
    )


async def checked_request(app: App, args: argparse.Namespace, provider_name: str) -> GenerationRequest:
    request = await build_request(raw_request(args), app.media, app.http)
    refused = app.provider(provider_name).check(request)
    if refused:
        raise InvalidRequest(refused)
    return request


# --- output --------------------------------------------------------------------------------------


def job_summary(job: Job) -> dict[str, Any]:
    error = {"code": job.error_code, "message": job.error_message} if job.error_code else None
    return {
        "job_id": job.id,
        "state": job.state.value,
        "provider": job.provider,
        "cost_usd": usd_str(job.cost_micros),
        "charged_usd": usd_str(job.charged_micros),
        "price_is_estimate": job.price_is_estimate,
        "output": job.delivery.get("path") if job.state is JobState.DONE else None,
        "error": error,
        "user_id": job.user_id,
        "guild_id": job.guild_id,
        "created_at": job.created_at,
        "updated_at": job.updated_at,
        "preview": job.provider == "local",
    }


def emit(data: dict[str, Any]) -> None:
    print(json.dumps(data, indent=None, sort_keys=False))


class FileDelivery:
    """The CLI's delivery: the clip goes to the path recorded with the job; progress shows on a terminal."""

    def __init__(self, job: Job, *, show_progress: bool = False) -> None:
        target = job.delivery
        self.out = Path(target["path"]) if target.get("path") else Path(f"reelbot-{job.id}.mp4").resolve()
        self.size_limit: int | None = target.get("max_bytes")
        self.show_progress = show_progress
        self.started = time.monotonic()
        self._last_line = ""

    async def progress(self, job: Job) -> None:
        if not self.show_progress:
            return
        parts = [f"{job.state.value:<12}", f"{time.monotonic() - self.started:6.1f} s"]
        if job.progress is not None:
            parts.append(f"{job.progress:4.0%}")
        if job.queue_position is not None:
            parts.append(f"queue #{job.queue_position}")
        line = "  ".join(parts)
        if line != self._last_line:
            sys.stderr.write(f"\r{line:<60}")
            sys.stderr.flush()
            self._last_line = line

    async def deliver(self, job: Job, clip: Clip) -> str:
        if clip.path is None:  # nothing fits the limit: leave a note with the link and a poster frame
            note = self.out.with_suffix(".link.txt")
            expiry = f" (until {clip.link_expires_at})" if clip.link_expires_at else ""
            note.write_text(f"The clip was too large for the size limit. Full clip: {clip.link}{expiry}\n")
            if clip.poster:
                shutil.copyfile(clip.poster, self.out.with_suffix(".poster.jpg"))
            return str(note)
        self.out.parent.mkdir(parents=True, exist_ok=True)
        partial = self.out.with_name(self.out.name + ".part")
        await asyncio.to_thread(shutil.copyfile, clip.path, partial)
        os.replace(partial, self.out)  # atomic: a crash never leaves half a clip, and a redo is harmless
        return str(self.out)

    async def failure(self, job: Job) -> None:
        if self.show_progress:
            sys.stderr.write(f"\njob {job.id} {job.state.value}: {job.error_message}\n")

    def finish(self) -> None:
        if self.show_progress and self._last_line:
            sys.stderr.write("\n")


# --- commands ------------------------------------------------------------------------------------


async def cmd_generate(args: argparse.Namespace, settings: Settings) -> int:
    provider_name = args.provider or settings.provider
    async with open_app(settings) as app:
        request = await checked_request(app, args, provider_name)
        provider = app.provider(provider_name)
        out = (args.out or Path.cwd() / "reelbot-{job}.mp4").resolve()
        target = {"kind": "file", "path": str(out), "max_bytes": args.max_bytes}
        engine = app.engine(lambda job: FileDelivery(job))
        job = await engine.accept(request, provider=provider_name, user_id=str(args.user), guild_id=args.guild,
                                  delivery=target)  # fmt: skip
        if "{job}" in str(out):  # the default name carries the job id, known only now
            target["path"] = str(out).replace("{job}", job.id)
            await app.jobs.update(job.id, delivery_json=json.dumps(target))
            job = await app.jobs.require(job.id)
        if args.detach:
            if args.json:
                emit(job_summary(job))
            else:
                print(job.id)
            return EXIT_OK
        if not args.json:
            note = " (estimate)" if job.price_is_estimate else ""
            print(f"job {job.id} accepted — {provider.display_name}, {fmt_usd(job.cost_micros)}{note}", file=sys.stderr)
        delivery = FileDelivery(job, show_progress=not args.json and sys.stderr.isatty())
        try:
            final = await engine.run_one(job.id, delivery)
        finally:
            delivery.finish()
        summary = job_summary(final)
        if args.json:
            emit(summary)
        else:
            _print_outcome(final, summary, provider.is_preview)
        return EXIT_OK if final.state is JobState.DONE else EXIT_FAILED


async def cmd_worker(args: argparse.Namespace, settings: Settings) -> int:
    from bot.observe.health import database_check, engine_check
    from bot.observe.server import serving

    async with open_app(settings) as app:
        engine = app.engine(lambda job: FileDelivery(job), tick_s=1.0)
        checks = [database_check(app.db), engine_check(engine)]  # no gateway: the worker has no Discord
        async with serving(settings, app.metrics, app.jobs, checks):  # REELBOT_HTTP_PORT, when set
            if args.until_idle:
                await engine.run_until_idle()
            else:
                await engine.start()
                print(f"reelbot worker running ({engine.owner}); Ctrl-C stops it, jobs resume on the next start",
                      file=sys.stderr)  # fmt: skip
                await asyncio.Event().wait()
    return EXIT_OK


async def cmd_cancel(args: argparse.Namespace, settings: Settings) -> int:
    from bot.engine.engine import CannotCancel, NotAllowed

    async with open_app(settings) as app:
        engine = app.engine(lambda job: FileDelivery(job))
        try:
            job = await engine.cancel(args.job_id, actor=str(args.user))
        except (CannotCancel, NotAllowed) as exc:
            raise UsageError(str(exc)) from None
    if args.json:
        emit(job_summary(job))
    else:
        print(f"job {job.id} {job.state.value}: {job.error_message or 'cancel requested'}")
    return EXIT_OK


def _print_outcome(job: Job, summary: dict[str, Any], preview: bool) -> None:
    print(f"job     {job.id}")
    print(f"state   {job.state.value}")
    print(f"cost    {fmt_usd(job.cost_micros)}{' (estimate)' if job.price_is_estimate else ''}")
    if job.state is JobState.DONE:
        print(f"output  {summary['output']}")
        if preview:
            print(f"note    {PREVIEW_NOTE}")
    else:
        print(f"error   {job.error_code}: {job.error_message}", file=sys.stderr)


async def cmd_price(args: argparse.Namespace, settings: Settings) -> int:
    provider_name = args.provider or settings.provider
    async with open_app(settings) as app:
        request = await checked_request(app, args, provider_name)
        quote = app.provider(provider_name).quote(request)
    if args.json:
        emit(
            {
                "provider": provider_name,
                "cost_usd": usd_str(quote.micros),
                "per_second_usd": usd_str(quote.per_second),
                "basis": quote.basis,
                "estimate": quote.estimate,
            }
        )
    else:
        note = " (estimate: this provider does not publish this price)" if quote.estimate else ""
        print(f"{fmt_usd(quote.micros)} — {provider_name}, {quote.basis}, {fmt_usd(quote.per_second)}/s{note}")
    return EXIT_OK


async def cmd_migrate(args: argparse.Namespace, settings: Settings) -> int:
    from bot.store.db import connect
    from bot.store.migrate import current_version, migrate

    db = await connect(settings.db_path)
    try:
        applied = await migrate(db)
        version = await current_version(db)
    finally:
        await db.close()
    for migration in applied:
        print(f"applied {migration.version:04d}_{migration.name}")
    print(f"database {settings.db_path} is at version {version}")
    return EXIT_OK


async def cmd_jobs(args: argparse.Namespace, settings: Settings) -> int:
    async with open_app(settings) as app:
        if args.jobs_command == "show":
            job = await app.jobs.get(args.job_id)
            if job is None:
                raise UsageError(f"no job with id {args.job_id!r}")
            summary = job_summary(job)
            summary["request"] = json.loads(job.request_json)
            summary["events"] = [
                {"at": at, "from": source, "to": target, "detail": detail}
                for at, source, target, detail in await app.jobs.events(job.id)
            ]
            if args.json:
                emit(summary)
            else:
                for key in ("job_id", "state", "provider", "cost_usd", "output", "error", "created_at"):
                    print(f"{key:<11} {summary[key]}")
                for event in summary["events"]:
                    print(f"  {event['at']}  {event['from'] or '-'} -> {event['to']}  {event['detail'] or ''}")
            return EXIT_OK
        listed = await app.jobs.list_recent(user_id=args.user, limit=args.limit)
        if args.json:
            emit({"jobs": [job_summary(job) for job in listed]})
        else:
            for job in listed:
                cost = fmt_usd(job.cost_micros)
                print(f"{job.id}  {job.state.value:<12} {cost:>8}  {job.provider:<10} {job.created_at}")
        return EXIT_OK


async def cmd_run(args: argparse.Namespace, settings: Settings) -> int:
    from bot.app import run

    if settings.provider == "local":
        print("no hosted provider configured: running on the local preview renderer (clips are previews)",
              file=sys.stderr)  # fmt: skip
    await run(settings)
    return EXIT_OK


async def cmd_sync(args: argparse.Namespace, settings: Settings) -> int:
    from bot.app import sync

    names = await sync(settings, args.guild)
    where = f"server {args.guild}" if args.guild else "all servers (global commands can take up to an hour)"
    print(f"synced {len(names)} commands to {where}: {', '.join(sorted(names))}")
    return EXIT_OK


COMMANDS = {
    "run": cmd_run,
    "sync": cmd_sync,
    "generate": cmd_generate,
    "price": cmd_price,
    "migrate": cmd_migrate,
    "jobs": cmd_jobs,
    "worker": cmd_worker,
    "cancel": cmd_cancel,
}
COMMANDS.update(quota=cmd_quota, ledger=cmd_ledger)
COMMANDS.update(audit=cmd_audit)


def main(argv: list[str] | None = None) -> int:
    args = make_parser().parse_args(argv)
    wants_json = getattr(args, "json", False)
    try:
        settings = load_settings()
        _setup_logging(settings, args.command)
        return asyncio.run(COMMANDS[args.command](args, settings))
    except InvalidRequest as exc:
        if wants_json:
            emit(_rejection("INVALID_INPUT", str(exc), [str(v) for v in exc.violations]))
        else:
            print("invalid request:", file=sys.stderr)
            for violation in exc.violations:
                print(f"  - {violation}", file=sys.stderr)
        return EXIT_INVALID
    except InsufficientQuota as exc:
        if wants_json:
            emit(_rejection("INSUFFICIENT_QUOTA", str(exc), [str(exc)]))
        else:
            print(f"reelbot: not enough quota — {exc}", file=sys.stderr)
        return EXIT_INVALID
    except (SettingsError, UsageError) as exc:
        if wants_json:
            emit(_rejection("INVALID_INPUT", str(exc), [str(exc)]))
        else:
            print(f"reelbot: {exc}", file=sys.stderr)
        return EXIT_INVALID
    except KeyboardInterrupt:
        print("interrupted — unfinished jobs resume with `reelbot worker`", file=sys.stderr)
        return 130


def _setup_logging(settings: Settings, command: str) -> None:
    """Once per process, after the settings are read, so that their secrets are masked from the first line."""
    from bot.observe.logs import setup_logging

    # The services log what they do; one-shot commands stay quiet unless asked (REELBOT_LOG_LEVEL).
    default = "INFO" if command in ("run", "worker") else "WARNING"
    level = settings.log_level if "log_level" in settings.model_fields_set else default
    try:
        setup_logging(level, settings.log_format, settings=settings)
    except ValueError as exc:
        raise SettingsError(str(exc)) from None


def _rejection(code: str, message: str, problems: list[str]) -> dict[str, Any]:
    return {
        "job_id": None,
        "state": "rejected",
        "provider": None,
        "cost_usd": "0.00",
        "output": None,
        "error": {"code": code, "message": message, "problems": problems},
    }
