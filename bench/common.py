"""What every scenario shares: statistics, process memory and CPU, child processes, the machine's description."""

from __future__ import annotations

import asyncio
import contextlib
import json
import os
import platform
import resource
import socket
import statistics
import subprocess
import sys
import tempfile
import threading
import time
import uuid
from collections.abc import Iterator, Sequence
from dataclasses import dataclass, field
from importlib import metadata
from pathlib import Path
from typing import Any

ROOT = Path(__file__).resolve().parents[1]
# Settings a developer's shell may hold that must not leak into a scenario's processes.
FOREIGN_ENV = ("REELBOT_", "DISCORD_", "WAVESPEED_", "FAL_", "ATLASCLOUD_", "RUNCOMFY_", "EVOLINK_", "KLING_",
               "LOCAL_", "SSL_CERT_")  # fmt: skip


# --- statistics -------------------------------------------------------------------------------------


def percentile(values: Sequence[float], q: float) -> float:
    """Linear interpolation between closest ranks (numpy's default); q in 0..100."""
    if not values:
        return float("nan")
    ordered = sorted(values)
    rank = (len(ordered) - 1) * q / 100
    low = int(rank)
    high = min(low + 1, len(ordered) - 1)
    return ordered[low] + (ordered[high] - ordered[low]) * (rank - low)


@dataclass
class Figure:
    """One measured quantity over several runs: its per-run values, its goal and its physical limit."""

    scenario: str
    name: str
    unit: str
    runs: list[float] = field(default_factory=list)
    goal: str = ""
    limit: str = ""
    met: bool | None = None  # None: no goal to meet
    digits: int = 1
    note: str = ""

    @property
    def median(self) -> float:
        return statistics.median(self.runs) if self.runs else float("nan")

    def fmt(self, value: float) -> str:
        if value != value:  # NaN
            return "—"
        return f"{value:,.{self.digits}f}"

    @property
    def spread(self) -> str:
        if len(self.runs) < 2:
            return "(1 run)"
        low, high = min(self.runs), max(self.runs)
        text = f"{self.fmt(low)}–{self.fmt(high)}"
        if len(self.runs) >= 4:
            text += f" (IQR {self.fmt(percentile(self.runs, 25))}–{self.fmt(percentile(self.runs, 75))})"
        return text

    def to_json(self) -> dict[str, Any]:
        return {"scenario": self.scenario, "name": self.name, "unit": self.unit, "runs": self.runs,
                "goal": self.goal, "limit": self.limit, "met": self.met, "note": self.note}  # fmt: skip


# --- memory and CPU of this process ------------------------------------------------------------------


def rss_bytes() -> int:
    """This process's resident set size now."""
    try:
        import psutil

        return int(psutil.Process().memory_info().rss)
    except ImportError:
        pass
    with contextlib.suppress(OSError):
        pages = int(Path("/proc/self/statm").read_text().split()[1])
        return pages * os.sysconf("SC_PAGE_SIZE")
    return peak_rss_bytes()


def peak_rss_bytes() -> int:
    """The most this process has ever had resident (ru_maxrss: KiB on Linux, bytes on macOS)."""
    peak = resource.getrusage(resource.RUSAGE_SELF).ru_maxrss
    return peak if sys.platform == "darwin" else peak * 1024


def cpu_seconds() -> float:
    """User + system CPU time of this process, every thread included."""
    usage = resource.getrusage(resource.RUSAGE_SELF)
    return usage.ru_utime + usage.ru_stime


class RssSampler:
    """The highest RSS seen between start() and stop(), sampled every `every_s` on a thread of its own
    (ru_maxrss alone cannot tell a peak during the measurement from one during start-up)."""

    def __init__(self, every_s: float = 0.002) -> None:
        self.every_s = every_s
        self.peak = 0
        self._stop = threading.Event()
        self._thread = threading.Thread(target=self._run, name="rss-sampler", daemon=True)

    def _run(self) -> None:
        while not self._stop.is_set():
            self.peak = max(self.peak, rss_bytes())
            self._stop.wait(self.every_s)

    def start(self) -> RssSampler:
        self.peak = rss_bytes()
        self._thread.start()
        return self

    def stop(self) -> int:
        self._stop.set()
        self._thread.join()
        self.peak = max(self.peak, rss_bytes())
        return self.peak


MB = 1_000_000
MiB = 1024 * 1024


# --- child processes ------------------------------------------------------------------------------


def clean_env(**more: str) -> dict[str, str]:
    """The environment for a child: ours without any reelbot/provider/Discord settings, the checkout importable."""
    env = {k: v for k, v in os.environ.items() if not k.startswith(FOREIGN_ENV)}
    env["PYTHONPATH"] = os.pathsep.join(filter(None, [str(ROOT), env.get("PYTHONPATH")]))
    env["PYTHONUNBUFFERED"] = "1"
    env.update(more)
    return env


def child_command(module: str, payload: dict[str, Any]) -> list[str]:
    return [sys.executable, "-m", module, json.dumps(payload)]


def run_child(module: str, payload: dict[str, Any], *, logs: Path, timeout: float = 300.0,
              env: dict[str, str] | None = None) -> dict[str, Any]:  # fmt: skip
    """Run `python -m module '<json payload>'` in a fresh process (cwd: a scratch folder, so no `.env` is read);
    its last stdout line is its JSON answer. Its stderr goes to a log file, shown when it fails."""
    logs.mkdir(parents=True, exist_ok=True)
    log = logs / f"{module.rsplit('.', 1)[-1]}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}.log"
    with tempfile.TemporaryDirectory(prefix="reelbot-bench-") as scratch, log.open("wb") as err:
        payload = {**payload, "scratch": scratch}
        done = subprocess.run(child_command(module, payload), cwd=scratch, env=env or clean_env(),
                              stdout=subprocess.PIPE, stderr=err, timeout=timeout, check=False)  # fmt: skip
    lines = done.stdout.decode().strip().splitlines()
    if done.returncode != 0 or not lines:
        tail = log.read_text(errors="replace")[-4000:]
        raise RuntimeError(f"{module} failed (exit {done.returncode}); its log {log}:\n{tail}")
    return json.loads(lines[-1])


def child_main(handler: Any) -> None:
    """The entry point of a scenario's child: JSON payload in argv[1], JSON answer as the last stdout line."""
    payload = json.loads(sys.argv[1])
    result = handler(payload)
    if asyncio.iscoroutine(result):
        result = asyncio.run(result)
    print(json.dumps(result), flush=True)


class Server:
    """A loopback fake running in a process of its own (`python -m bench.fakes`), for as long as a `with`."""

    def __init__(self, payload: dict[str, Any], *, logs: Path) -> None:
        self.payload = payload
        self.logs = logs
        self.info: dict[str, Any] = {}
        self._process: subprocess.Popen[bytes] | None = None
        self._log: Any = None

    def __enter__(self) -> Server:
        self.logs.mkdir(parents=True, exist_ok=True)
        name = f"fake-{self.payload.get('provider')}-{time.strftime('%H%M%S')}-{uuid.uuid4().hex[:6]}.log"
        self._log = (self.logs / name).open("wb")
        self._process = subprocess.Popen(child_command("bench.fakes", self.payload), cwd=ROOT, env=clean_env(),
                                         stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=self._log)  # fmt: skip
        assert self._process.stdout is not None
        line = self._process.stdout.readline()
        if not line:
            self._process.wait(5)
            raise RuntimeError(f"the fake {self.payload} did not start; see {self._log.name}")
        self.info = json.loads(line)
        return self

    @property
    def base_url(self) -> str:
        return str(self.info["base_url"])

    @property
    def env(self) -> dict[str, str]:
        return dict(self.info["env"])

    def stats(self, tag: str | None = None) -> dict[str, Any]:
        """The fake's record of every task (optionally those whose prompt starts with `[tag]`)."""
        import ssl
        import urllib.request

        query = f"?tag={tag}" if tag else ""
        context = ssl.create_default_context(cafile=self.info["cafile"]) if self.info.get("cafile") else None
        with urllib.request.urlopen(f"{self.base_url}/_bench/stats{query}", timeout=30, context=context) as reply:
            return dict(json.loads(reply.read()))

    def __exit__(self, *exc: object) -> None:
        if self._process is not None:
            with contextlib.suppress(Exception):
                assert self._process.stdin is not None
                self._process.stdin.close()  # the fake stops when its stdin closes
            try:
                self._process.wait(10)
            except subprocess.TimeoutExpired:
                self._process.kill()
                self._process.wait()
        if self._log is not None:
            self._log.close()


def free_port() -> int:
    with socket.socket() as probe:
        probe.bind(("127.0.0.1", 0))
        return int(probe.getsockname()[1])


# --- the machine and the versions ----------------------------------------------------------------------


def _cpu_model() -> str:
    with contextlib.suppress(OSError):
        for line in Path("/proc/cpuinfo").read_text().splitlines():
            if line.lower().startswith("model name"):
                return line.split(":", 1)[1].strip()
    return platform.processor() or platform.machine()


def _ram() -> str:
    with contextlib.suppress(OSError, ValueError, IndexError):
        for line in Path("/proc/meminfo").read_text().splitlines():
            if line.startswith("MemTotal:"):
                return f"{int(line.split()[1]) / 1024 / 1024:.1f} GiB"
    with contextlib.suppress(ImportError):
        import psutil

        return f"{psutil.virtual_memory().total / 2**30:.1f} GiB"
    return "unknown"


def _os() -> str:
    pretty = ""
    with contextlib.suppress(OSError):
        for line in Path("/etc/os-release").read_text().splitlines():
            if line.startswith("PRETTY_NAME="):
                pretty = line.split("=", 1)[1].strip('"') + ", "
    return f"{pretty}{platform.system()} {platform.release()} {platform.machine()}"


def _version(package: str) -> str:
    try:
        return metadata.version(package)
    except metadata.PackageNotFoundError:
        return "not installed"


def git_commit() -> str:
    def git(*args: str) -> str:
        return subprocess.run(["git", *args], cwd=ROOT, capture_output=True, text=True, check=True).stdout.strip()

    try:
        commit = git("rev-parse", "--short=12", "HEAD")
        dirty = git("status", "--porcelain", "--untracked-files=no", "--", "bot", "cogs", "migrations")
    except (OSError, subprocess.CalledProcessError):
        return "unknown (not a git checkout)"
    return f"{commit} (+ uncommitted changes in bot/ cogs/ migrations/)" if dirty else commit


def machine() -> dict[str, str]:
    return {
        "CPU": _cpu_model(),
        "cores": str(os.cpu_count()),
        "RAM": _ram(),
        "OS": _os(),
    }


def versions() -> dict[str, str]:
    return {
        "Python": platform.python_version(),
        "discord.py": _version("discord.py"),
        "httpx": _version("httpx"),
        "aiosqlite": _version("aiosqlite"),
        "aiohttp": _version("aiohttp"),
        "SQLite": __import__("sqlite3").sqlite_version,
        "wavespeed (SDK)": _version("wavespeed"),
        "fal-client": _version("fal-client"),
        "reelbot commit": git_commit(),
    }


@contextlib.contextmanager
def timer() -> Iterator[list[float]]:
    """`with timer() as t: ...` then t[0] is the elapsed wall time in seconds."""
    box: list[float] = []
    start = time.perf_counter()
    try:
        yield box
    finally:
        box.append(time.perf_counter() - start)
