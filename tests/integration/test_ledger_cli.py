"""`reelbot quota` and `reelbot ledger` run as a person runs them: subprocesses, a real database, exit codes."""

from __future__ import annotations

import json
import os
import sqlite3
import subprocess
import sys
from datetime import datetime
from pathlib import Path


def run(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> subprocess.CompletedProcess[str]:
    environment = {k: v for k, v in os.environ.items() if not k.startswith(("REELBOT_", "DISCORD_", "FAL_", "KLING_"))}
    environment.update(REELBOT_DB=str(tmp_path / "reelbot.db"), REELBOT_DATA_DIR=str(tmp_path / "data"))
    environment.update(env or {})
    return subprocess.run(
        [sys.executable, "-m", "bot", *args], cwd=tmp_path, env=environment, capture_output=True, text=True, timeout=60
    )


def run_json(tmp_path: Path, *args: str, env: dict[str, str] | None = None) -> dict:
    result = run(tmp_path, *args, "--json", env=env)
    assert result.returncode == 0, result.stderr
    return json.loads(result.stdout)


def test_local_account_is_unlimited_until_a_grant(tmp_path: Path) -> None:
    shown = run_json(tmp_path, "quota", "show")
    assert shown["account_id"] == "user::local" and shown["unlimited"] is True and shown["available_usd"] is None

    granted = run(tmp_path, "quota", "grant", "5", "--reason", "test budget")
    assert granted.returncode == 0, granted.stderr
    assert "granted $5.00 to user::local" in granted.stdout and "was unlimited" in granted.stdout

    shown = run_json(tmp_path, "quota", "show", "--user", "local")
    assert shown == {
        "account_id": "user::local", "guild_id": "", "user_id": "local", "unlimited": False,
        "balance_usd": "5.00", "reserved_usd": "0.00", "available_usd": "5.00",
        "allowance_usd": "0.00", "allowance_left_usd": "0.00", "extra_usd": "5.00",
        "period": "daily", "period_start": shown["period_start"], "next_refill": shown["next_refill"],
    }  # fmt: skip
    with sqlite3.connect(tmp_path / "reelbot.db") as db:
        reason, actor = db.execute("SELECT reason, actor FROM ledger_entries WHERE kind = 'grant'").fetchone()
    assert reason == "test budget" and actor.startswith("cli")


def test_member_allowance_and_grant_show_up_in_show(tmp_path: Path) -> None:
    env = {"REELBOT_DEFAULT_ALLOWANCE_USD": "0.25", "REELBOT_ALLOWANCE_PERIOD": "daily"}
    assert run_json(tmp_path, "quota", "show", "--guild", "42", "--user", "7", env=env)["allowance_usd"] == "0.25"

    policy = run_json(tmp_path, "quota", "allowance", "--guild", "42", "1.50", "--period", "weekly", env=env)
    assert policy == {"guild_id": "42", "allowance_usd": "1.50", "period": "weekly"}
    granted = run_json(tmp_path, "quota", "grant", "--guild", "42", "--user", "7", "0.5", env=env)
    assert granted["granted_usd"] == "0.50"

    shown = run_json(tmp_path, "quota", "show", "--guild", "42", "--user", "7", env=env)
    assert (shown["account_id"], shown["unlimited"], shown["period"]) == ("user:42:7", False, "weekly")
    assert (shown["allowance_usd"], shown["allowance_left_usd"], shown["extra_usd"]) == ("1.50", "1.50", "0.50")
    assert (shown["balance_usd"], shown["reserved_usd"], shown["available_usd"]) == ("2.00", "0.00", "2.00")
    refill = datetime.fromisoformat(shown["next_refill"])
    assert refill.weekday() == 0 and (refill.hour, refill.minute) == (0, 0)  # Monday, UTC midnight

    human = run(tmp_path, "quota", "show", "--guild", "42", "--user", "7", env=env).stdout
    assert "available    $2.00" in human and "allowance    $1.50 weekly, $1.50 left" in human


def test_bad_amounts_are_refused_naming_the_problem(tmp_path: Path) -> None:
    result = run(tmp_path, "quota", "grant", "1.2345678")
    assert result.returncode == 2 and "more than 6 decimal places" in result.stderr


def test_ledger_verify_exits_0_when_clean_and_1_on_tampering(tmp_path: Path) -> None:
    assert run(tmp_path, "quota", "grant", "--guild", "42", "--user", "7", "3").returncode == 0
    clean = run(tmp_path, "ledger", "verify")
    assert clean.returncode == 0, clean.stdout + clean.stderr
    assert clean.stdout.startswith("ok: 1 accounts, 1 entries")

    with sqlite3.connect(tmp_path / "reelbot.db") as db:
        db.execute("UPDATE accounts SET balance_micros = 9000000 WHERE id = 'user:42:7'")
    tampered = run(tmp_path, "ledger", "verify")
    assert tampered.returncode == 1
    assert "MISMATCH user:42:7: recorded balance $9.00 but its entries sum to $3.00" in tampered.stdout

    report = run(tmp_path, "ledger", "verify", "--json")
    assert report.returncode == 1
    data = json.loads(report.stdout)
    assert data["ok"] is False and [m["what"] for m in data["mismatches"]] == ["balance_micros"]
