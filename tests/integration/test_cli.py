"""`reelbot` run as a person runs it: a subprocess, real files, a real database, exit codes."""

from __future__ import annotations

import json
import os
import subprocess
import sys
from pathlib import Path

import pytest

from bot.media.inspect import probe_video

FIXTURES = Path(__file__).parents[1] / "fixtures"


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("REELBOT_", "DISCORD_", "FAL_", "KLING_"))}
    environment.update(
        REELBOT_DB=str(tmp_path / "reelbot.db"),
        REELBOT_DATA_DIR=str(tmp_path / "data"),
        REELBOT_POLL_FIRST_S="0.05",
        REELBOT_POLL_MAX_S="0.2",
    )
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=120
    )


def test_generate_writes_a_clip_and_reports_it(tmp_path: Path) -> None:
    images = [str(FIXTURES / name) for name in ("astronaut.png", "coffee.png", "rocket.jpg")]
    args = ["generate", "--prompt", "Figure 1 sips from Figure 2 as Figure 3 lifts off", "--duration", "3"]
    for image in images:
        args += ["--image", image]
    result = run(tmp_path, *args, "--aspect-ratio", "9:16", "--out", "out/clip.mp4", "--json")
    assert result.returncode == 0, result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "done" and report["error"] is None
    assert report["cost_usd"] == "0.00" and report["provider"] == "local" and report["preview"] is True
    clip = Path(report["output"])
    assert clip == (tmp_path / "out" / "clip.mp4").resolve()
    info = probe_video(clip)
    assert abs(info.duration_s - 3) <= 0.1 and (info.width, info.height) == (720, 1280)
    assert result.stderr == ""  # quiet under --json

    shown = json.loads(run(tmp_path, "jobs", "show", report["job_id"], "--json").stdout)
    states = [e["to"] for e in shown["events"]]
    assert shown["state"] == "done"
    assert states[:3] == ["queued", "submitting", "submitted"] and states[-3:] == ["downloading", "delivering", "done"]
    assert len(shown["request"]["images"]) == 3

    listed = json.loads(run(tmp_path, "jobs", "list", "--json").stdout)
    assert [job["job_id"] for job in listed["jobs"]] == [report["job_id"]]


def test_human_output_says_it_is_a_preview(tmp_path: Path) -> None:
    result = run(tmp_path, "generate", "--sample", "--prompt", "Figure 1 and Figure 3", "--duration", "3")
    assert result.returncode == 0, result.stderr
    assert "not AI-generated" in result.stdout
    output = next(line.split(None, 1)[1] for line in result.stdout.splitlines() if line.startswith("output"))
    assert Path(output).is_file() and Path(output).name.startswith("reelbot-")


def test_invalid_input_exits_2_naming_every_field(tmp_path: Path) -> None:
    text_file = tmp_path / "notes.png"
    text_file.write_text("this is not a picture")
    result = run(tmp_path, "generate", "--prompt", "Figure 2 dances", "--image", str(text_file), "--duration", "16")
    assert result.returncode == 2
    assert "notes.png: not an image" in result.stderr
    assert "duration: 16 s is out of range — must be 3–15 s" in result.stderr
    assert "prompt: refers to 'Figure 2'" in result.stderr
    with_json = run(tmp_path, "generate", "--prompt", "x", "--duration", "2", "--json")
    assert with_json.returncode == 2
    assert json.loads(with_json.stdout)["error"]["problems"] == ["duration: 2 s is out of range — must be 3–15 s"]
    assert json.loads(run(tmp_path, "jobs", "list", "--json").stdout)["jobs"] == []  # nothing recorded


def test_generation_failure_exits_1_with_the_reason(tmp_path: Path) -> None:
    # A deadline already past before the job can be sent: it fails, is reported, and nothing is charged.
    result = run(
        tmp_path, "generate", "--prompt", "a rocket", "--duration", "3", "--json",
        env={"REELBOT_JOB_DEADLINE_S": "0.001"},
    )  # fmt: skip
    assert result.returncode == 1, result.stdout + result.stderr
    report = json.loads(result.stdout)
    assert report["state"] == "failed" and report["charged_usd"] == "0.00"
    assert report["error"]["code"] == "GENERATION_TIMEOUT" and "deadline" in report["error"]["message"]


def test_price(tmp_path: Path) -> None:
    result = run(tmp_path, "price", "--provider", "local", "--prompt", "x", "--json")
    assert result.returncode == 0 and json.loads(result.stdout)["cost_usd"] == "0.00"
    human = run(tmp_path, "price", "--prompt", "x", "--duration", "10")
    assert human.returncode == 0 and human.stdout.startswith("$0.00 — local, standard, 10 s")


def test_video_reference_with_sound_is_refused(tmp_path: Path) -> None:
    result = run(tmp_path, "price", "--prompt", "x", "--video", str(FIXTURES / "motion_ref.mp4"), "--sound")
    assert result.returncode == 2 and "sound: cannot be on with a reference video" in result.stderr


def test_bad_setting_stops_with_one_line(tmp_path: Path) -> None:
    result = run(tmp_path, "jobs", "list", env={"REELBOT_PROVIDER": "nope"})
    assert result.returncode == 2
    assert result.stderr.strip().count("\n") == 0 and "REELBOT_PROVIDER" in result.stderr


def test_missing_credentials_name_the_variable(tmp_path: Path) -> None:
    result = run(tmp_path, "jobs", "list", env={"REELBOT_PROVIDER": "wavespeed"})
    assert result.returncode == 2 and "WAVESPEED_API_KEY" in result.stderr


def test_migrate_is_idempotent(tmp_path: Path) -> None:
    first = run(tmp_path, "migrate")
    assert first.returncode == 0 and "applied 0001_jobs" in first.stdout
    second = run(tmp_path, "migrate")
    assert second.returncode == 0 and "applied" not in second.stdout and "at version" in second.stdout


@pytest.mark.parametrize("module", [["-m", "bot", "--help"]])
def test_help(module: list[str]) -> None:
    result = subprocess.run([sys.executable, *module], capture_output=True, text=True, timeout=60)
    assert result.returncode == 0 and "generate" in result.stdout
