"""`reelbot worker` as an operator runs it: the operations endpoint and JSON logs from the entry point."""

from __future__ import annotations

import json
import os
import signal
import socket
import subprocess
import sys
import time
from pathlib import Path

import httpx
from prometheus_client.parser import text_string_to_metric_families

SECRET = "ws-live-0f9e8d7c6b5a4321"


def free_port() -> int:
    with socket.socket() as sock:
        sock.bind(("127.0.0.1", 0))
        return int(sock.getsockname()[1])


def environment(tmp_path: Path, **extra: str) -> dict[str, str]:
    env = {k: v for k, v in os.environ.items() if not k.startswith(("REELBOT_", "DISCORD_", "FAL_", "KLING_"))}
    env.update(REELBOT_DB=str(tmp_path / "reelbot.db"), REELBOT_DATA_DIR=str(tmp_path / "data"),
               REELBOT_POLL_FIRST_S="0.05", REELBOT_POLL_MAX_S="0.2", **extra)  # fmt: skip
    return env


def wait_until(predicate, timeout: float = 60.0) -> None:  # type: ignore[no-untyped-def]
    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            if predicate():
                return
        except httpx.HTTPError:
            pass
        time.sleep(0.1)
    raise AssertionError("timed out")


def done_jobs(base: str) -> float:
    text = httpx.get(f"{base}/metrics", timeout=5).text
    for family in text_string_to_metric_families(text):
        if family.name == "reelbot_jobs":
            return sum(s.value for s in family.samples if s.labels == {"state": "done", "provider": "local"})
    return 0.0


def test_worker_serves_health_and_metrics_and_logs_json(tmp_path: Path) -> None:
    env = environment(tmp_path, WAVESPEED_API_KEY=SECRET)
    queued = subprocess.run([sys.executable, "-m", "bot", "generate", "--sample", "--prompt", "Figure 1 flies",
                             "--duration", "3", "--detach"], cwd=tmp_path, env=env, capture_output=True, text=True,
                            timeout=120)  # fmt: skip
    assert queued.returncode == 0, queued.stderr
    job_id = queued.stdout.strip()

    port = free_port()
    worker_env = {**env, "REELBOT_HTTP_PORT": str(port), "REELBOT_HTTP_HOST": "127.0.0.1",
                  "REELBOT_LOG_FORMAT": "json"}  # fmt: skip
    worker = subprocess.Popen([sys.executable, "-m", "bot", "worker"], cwd=tmp_path, env=worker_env,
                              stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)  # fmt: skip
    base = f"http://127.0.0.1:{port}"
    try:
        wait_until(lambda: httpx.get(f"{base}/healthz", timeout=5).status_code == 200)
        health = httpx.get(f"{base}/healthz", timeout=5).json()
        assert health["status"] == "ok" and set(health["checks"]) == {"database", "engine"}  # no gateway here
        wait_until(lambda: done_jobs(base) == 1)
    finally:
        worker.send_signal(signal.SIGINT)
        _, stderr = worker.communicate(timeout=30)
    assert worker.returncode == 130, stderr

    lines = stderr.splitlines()
    logged = [json.loads(line) for line in lines if line.startswith("{")]
    printed = [line for line in lines if not line.startswith("{")]
    assert len(printed) == 2 and printed[0].startswith("reelbot worker running")  # and "interrupted — …"
    assert any(line["message"].startswith("serving /healthz and /metrics") for line in logged)
    moves = [line for line in logged if line["logger"] == "bot.store.jobs"]
    assert moves and all((line["job_id"], line["provider"]) == (job_id, "local") for line in moves)
    assert {"time", "level", "logger", "message"} <= set(logged[0])
    assert SECRET not in stderr
