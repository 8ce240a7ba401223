"""Log lines: JSON or text, the job's ids attached, secrets never written, whatever the format."""

from __future__ import annotations

import asyncio
import base64
import json
import logging
from pathlib import Path

import pytest

from bot.observe.logs import job_context
from bot.settings import load_settings
from tests.log_capture import captured_logs

SECRET = "ws-live-7f3a9c2e5b8d1f4a"
CDN = ("https://cdn.discordapp.com/attachments/1100000000000000001/1200000000000000002/a.png"
       "?ex=6790a1b2&is=678f5032&hm=4f1c2a9be0d3c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3&")  # fmt: skip
BLOB = base64.b64encode(bytes(range(256)) * 3).decode()
NEVER = (SECRET, "Bearer xyz", "hm=4f1c2a9b", "ex=6790a1b2", BLOB[:64])

log = logging.getLogger("tests.logs")


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch):
    monkeypatch.chdir(tmp_path)
    return load_settings(REELBOT_PROVIDER="wavespeed", WAVESPEED_API_KEY=SECRET)


def write_everything_sensitive() -> None:
    log.warning("provider answered 401 for key %s", SECRET)
    log.info("sending headers %s", {"Authorization": "Bearer xyz", "Accept": "application/json"})
    log.info("Authorization: Bearer xyz")
    log.warning("could not fetch %s", CDN)
    log.debug("body %s", json.dumps({"image": f"data:image/png;base64,{BLOB}"}))
    try:
        raise RuntimeError(f"upload to {CDN} with {SECRET} failed")
    except RuntimeError:
        log.exception("upload crashed")


@pytest.mark.parametrize("fmt", ["json", "text"])
def test_secrets_never_reach_the_output(fmt: str, settings) -> None:
    with captured_logs(fmt, settings=settings) as out:  # type: ignore[arg-type]
        write_everything_sensitive()
    text = out.getvalue()
    assert text.count("upload crashed") == 1 and "Traceback" in text  # the lines were written…
    for secret in NEVER:
        assert secret not in text, f"{secret[:20]}… leaked in {fmt} output"  # …without what they carried
    assert "https://cdn.discordapp.com/attachments/1100000000000000001/1200000000000000002/a.png?<redacted>" in text


def test_json_lines_parse_and_carry_the_job() -> None:
    with captured_logs("json") as out:
        log.info("outside any job")
        with job_context("job0000001", guild_id="g1", provider="wavespeed"):
            log.warning("poll failed (%s), will retry", "RATE_LIMITED")
        log.info("named by the call", extra={"job_id": "job0000002"})
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line["message"] for line in lines] == [
        "outside any job", "poll failed (RATE_LIMITED), will retry", "named by the call",
    ]  # fmt: skip
    assert "job_id" not in lines[0]
    assert lines[1] | {"time": "t"} == {"time": "t", "level": "WARNING", "logger": "tests.logs",
                                         "message": "poll failed (RATE_LIMITED), will retry",
                                         "job_id": "job0000001", "guild_id": "g1", "provider": "wavespeed"}  # fmt: skip
    assert lines[1]["time"].endswith("Z") and lines[2]["job_id"] == "job0000002"


def test_text_lines_name_the_job() -> None:
    with captured_logs("text") as out:
        with job_context("job0000003", provider="local"):
            log.info("rendering")
    line = out.getvalue().strip()
    assert line.endswith("tests.logs: rendering job_id=job0000003 provider=local") and "[INFO   ]" in line


def test_the_job_context_follows_tasks_started_inside() -> None:
    async def main() -> None:
        async def child() -> None:
            log.info("from a child task")

        with job_context("job0000004"):
            task = asyncio.create_task(child())
        await task

    with captured_logs("json") as out:
        asyncio.run(main())
    lines = [json.loads(line) for line in out.getvalue().splitlines()]
    assert [line.get("job_id") for line in lines if line["logger"] == "tests.logs"] == ["job0000004"]


def test_levels_and_discord_loggers() -> None:
    with captured_logs("text", level="WARNING") as out:
        log.info("hidden")
        logging.getLogger("discord.gateway").info("hidden too: below the chosen level")
        logging.getLogger("discord.http").info("payloads are never logged")
        assert logging.getLogger("discord").level == logging.INFO
        assert logging.getLogger("discord.http").level == logging.WARNING
        log.warning("shown")
    assert out.getvalue().count("\n") == 1 and "shown" in out.getvalue()


def test_setting_up_again_replaces_the_handler() -> None:
    with captured_logs("text") as first:
        with captured_logs("json") as second:
            log.info("once")
        assert first.getvalue() == "" and json.loads(second.getvalue())["message"] == "once"
