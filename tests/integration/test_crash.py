"""Crash safety: the worker is killed with SIGKILL in each state a job can be in, then restarted.

Whatever the moment of the kill, after `reelbot worker --until-idle` the job is done, its clip exists exactly
once, its money was captured exactly once, `reelbot ledger verify` is clean and the provider saw exactly one
submit. Everything runs as an operator would run it: `reelbot` subprocesses on one SQLite file, talking to a
loopback WaveSpeed that lives in this test's event loop (so every subprocess is awaited, never waited on).
"""

from __future__ import annotations

import asyncio
import json
import os
import sqlite3
import sys
from collections.abc import AsyncIterator, Callable
from pathlib import Path
from typing import Any

import av
import numpy as np
import pytest

from bot.engine.states import JobState
from bot.media.inspect import probe_video
from bot.money import usd
from bot.store.db import connect
from bot.store.jobs import JobRepository
from tests.fakes.providers.harness import FakeAPI, Hang, Slow, Step
from tests.fakes.providers.wavespeed import FakeWaveSpeed

USER, GUILD = "crash-user", "crash-guild"
ACCOUNT = f"user:{GUILD}:{USER}"
GRANT_USD = "5.00"
# Variables from the developer's shell that would change what a subprocess does (settings, tokens, keys).
SCRUB = ("REELBOT_", "DISCORD_", "WAVESPEED_", "ATLASCLOUD_", "RUNCOMFY_", "EVOLINK_", "FAL_", "KLING_", "LOCAL_")
# Task lives that never end on their own: the worker stays in that state until the test lets the task finish.
NEVER_STARTS = [Step("queued", queue_position=1)] * 100_000
NEVER_ENDS = [Step("running", 0.5)] * 100_000
QUICK = [Step("running", 0.5), Step("succeeded")]
FIT_LIMIT = 2_000_000  # well under the large clip below, well above what 2 s of 720p can be squeezed into
KILL_STATES = ["queued", "submitted", "running", "downloading", "delivering"]
TIMEOUT_S = 60.0


class Site:
    """One reelbot installation in a temporary folder, driven only through the `reelbot` command."""

    def __init__(self, root: Path, fake: FakeWaveSpeed, **env: str) -> None:
        self.root = root
        self.db_path = root / "reelbot.db"
        self.outputs = root / "data" / "outputs"
        self.env = {k: v for k, v in os.environ.items() if not k.startswith(SCRUB)}
        self.env.update(
            REELBOT_DB=str(self.db_path),
            REELBOT_DATA_DIR=str(root / "data"),
            REELBOT_LOG_LEVEL="INFO",  # the worker logs go to files beside the database, for a failing run
            REELBOT_POLL_FIRST_S="0.05",
            REELBOT_POLL_MAX_S="0.1",
            REELBOT_HTTP_TIMEOUT_S="10",
            REELBOT_HTTP_BACKOFF_S="0.05",
            **fake.settings_env(),
            **env,
        )
        self.procs: list[asyncio.subprocess.Process] = []

    async def run(self, *args: str) -> tuple[int, str, str]:
        proc = await asyncio.create_subprocess_exec(
            sys.executable, "-m", "bot", *args, cwd=self.root, env=self.env,
            stdout=asyncio.subprocess.PIPE, stderr=asyncio.subprocess.PIPE,
        )  # fmt: skip
        self.procs.append(proc)
        async with asyncio.timeout(TIMEOUT_S):
            out, err = await proc.communicate()
        assert proc.returncode is not None
        return proc.returncode, out.decode(), err.decode()

    async def ok(self, *args: str) -> str:
        code, out, err = await self.run(*args)
        assert code == 0, f"reelbot {' '.join(args)} exited {code}: {out}{err}{self.logs()}"
        return out

    async def start_worker(self) -> asyncio.subprocess.Process:
        log = self.root / f"worker-{len(self.procs)}.log"
        with log.open("wb") as sink:  # a file, not a pipe: a chatty worker can never block on a full pipe
            proc = await asyncio.create_subprocess_exec(
                sys.executable, "-m", "bot", "worker", cwd=self.root, env=self.env, stdout=sink, stderr=sink
            )
        self.procs.append(proc)
        return proc

    def logs(self) -> str:
        return "".join(f"\n--- {log.name}\n{log.read_text()}" for log in sorted(self.root.glob("worker-*.log")))

    async def grant(self, dollars: str) -> None:
        await self.ok("quota", "grant", "--user", USER, "--guild", GUILD, dollars, "--json")

    async def generate(self, out: Path, *extra: str) -> str:
        """Record a job (its cost is reserved in the same transaction) without running it; returns its id."""
        printed = await self.ok(
            "generate", "--provider", "wavespeed", "--detach", "--user", USER, "--guild", GUILD,
            "--out", str(out), "--prompt", "a paper boat crosses a puddle", "--duration", "3", "--json", *extra,
        )  # fmt: skip
        job = json.loads(printed)
        assert job["state"] == "queued", job
        return str(job["job_id"])

    # --- looking at the database from outside: a separate, read-only connection per look -----------
    def query(self, sql: str, *params: Any) -> list[tuple[Any, ...]]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        try:
            return conn.execute(sql, params).fetchall()
        finally:
            conn.close()

    def job(self, job_id: str) -> dict[str, Any]:
        conn = sqlite3.connect(f"file:{self.db_path}?mode=ro", uri=True, timeout=10)
        conn.row_factory = sqlite3.Row
        try:
            return dict(conn.execute("SELECT * FROM jobs WHERE id = ?", (job_id,)).fetchone())
        finally:
            conn.close()

    def state(self, job_id: str) -> str:
        return str(self.job(job_id)["state"])

    def entries(self, job_id: str) -> list[str]:
        return sorted(kind for (kind,) in self.query("SELECT kind FROM ledger_entries WHERE job_id = ?", job_id))

    def account(self) -> tuple[int, int]:
        [(balance, reserved)] = self.query("SELECT balance_micros, reserved_micros FROM accounts WHERE id = ?", ACCOUNT)
        return balance, reserved

    async def kill_when(self, worker: asyncio.subprocess.Process, what: str, ready: Callable[[], bool]) -> None:
        """SIGKILL the worker the moment `ready()` holds: no handler, finally block or atexit runs."""
        async with asyncio.timeout(TIMEOUT_S):
            while not ready():
                if worker.returncode is not None:
                    pytest.fail(f"the worker exited ({worker.returncode}) before {what}{self.logs()}")
                await asyncio.sleep(0.01)
        worker.kill()
        # Reaped before going on: a zombie still answers kill(pid, 0), and the restarted engine takes a lease
        # over at once only when its owner's process is gone.
        await worker.wait()

    async def verify_ledger(self) -> None:
        code, out, err = await self.run("ledger", "verify", "--json")
        assert code == 0 and json.loads(out)["ok"] is True, out + err

    async def aclose(self) -> None:
        for proc in self.procs:
            if proc.returncode is None:
                proc.kill()
                await proc.wait()


@pytest.fixture
async def fake() -> AsyncIterator[FakeWaveSpeed]:
    api = FakeWaveSpeed()
    await api.start()
    yield api
    await api.stop()


@pytest.fixture
async def site_for(tmp_path: Path, fake: FakeWaveSpeed) -> AsyncIterator[Callable[..., Site]]:
    made: list[Site] = []

    def make(**env: str) -> Site:
        made.append(Site(tmp_path, fake, **env))
        return made[-1]

    yield make
    for site in made:
        await site.aclose()


@pytest.fixture(scope="module")
def large_clip(tmp_path_factory: pytest.TempPathFactory) -> bytes:
    """Two seconds of 1280×720 noise at high quality (~30 MB): a real MP4 that takes a while to re-encode."""
    path = tmp_path_factory.mktemp("clip") / "noise.mp4"
    rng = np.random.default_rng(7)
    with av.open(str(path), "w", format="mp4") as out:
        stream = out.add_stream("libx264", rate=30)
        stream.width, stream.height, stream.pix_fmt = 1280, 720, "yuv420p"
        stream.codec_context.options = {"preset": "ultrafast", "crf": "20"}
        for index in range(60):
            frame = av.VideoFrame.from_ndarray(rng.integers(0, 256, (720, 1280, 3), dtype=np.uint8), format="rgb24")
            frame.pts = index
            out.mux(stream.encode(frame))
        out.mux(stream.encode(None))
    return path.read_bytes()


def let_tasks_finish(fake: FakeAPI) -> None:
    """The provider finishes every task it has (after one more `running` poll), and later ones quickly."""
    for task in fake.tasks.values():
        task.script = [*task.script[: task.polls], *QUICK]
    fake.script = list(QUICK)


def fit_partials(site: Site, job_id: str) -> list[Path]:
    # bot.media.fit encodes into a mkstemp file beside the destination, renamed into place when complete
    return [p for p in site.outputs.glob(f".{job_id}.fit-*.part.mp4") if p.stat().st_size > 0]


def assert_delivered_once(site: Site, fake: FakeWaveSpeed, job_id: str, out: Path, clip: bytes | None) -> None:
    job = site.job(job_id)
    assert job["state"] == "done", (job["state"], job["error_code"], job["error_message"], site.logs())
    assert job["charged_micros"] == job["cost_micros"] > 0
    # exactly one file where the clip was asked for: no second copy, no leftover .part of an interrupted copy
    assert sorted(p.name for p in out.parent.iterdir()) == [out.name]
    info = probe_video(out)
    assert info.codec == "h264" and info.duration_s > 0
    if clip is not None:  # delivered as the provider made it
        assert out.read_bytes() == clip
    # money: reserved once, captured once, never released
    assert site.entries(job_id) == ["capture", "reserve"]
    # the provider was sent this job once: the task it knows is the one the job recorded
    assert job["provider_task_id"] in fake.tasks
    [(submits,)] = site.query("SELECT COUNT(*) FROM job_events WHERE job_id = ? AND to_state = 'submitting'", job_id)
    assert submits == 1


@pytest.mark.parametrize("kill_state", KILL_STATES)
async def test_killed_in_any_state_resumes_to_one_clip_and_one_charge(
    kill_state: str, tmp_path: Path, fake: FakeWaveSpeed, site_for: Callable[..., Site], request: pytest.FixtureRequest
) -> None:
    # queued: one job per member at a time, so the member's second job waits in the queue behind the first
    site = site_for(**({"REELBOT_USER_MAX_JOBS": "1"} if kill_state == "queued" else {}))
    await site.grant(GRANT_USD)
    start_balance, _ = site.account()
    assert start_balance == usd(GRANT_USD)
    out = tmp_path / "out" / "target" / "clip.mp4"
    clip: bytes | None = fake.output_bytes
    extra: list[str] = []
    blocker: str | None = None

    if kill_state == "queued":
        fake.script = list(NEVER_ENDS)
        blocker = await site.generate(tmp_path / "out" / "blocker" / "clip.mp4")
    elif kill_state == "submitted":
        fake.script = list(NEVER_STARTS)
    elif kill_state == "running":
        fake.script = list(NEVER_ENDS)
    elif kill_state == "downloading":
        fake.script = list(QUICK)
        fake.fail_next("output", Slow(3.0))  # the first download hangs in the server; the one after is prompt
    elif kill_state == "delivering":
        fake.script = list(QUICK)
        clip = fake.output_bytes = request.getfixturevalue("large_clip")
        extra = ["--max-bytes", str(FIT_LIMIT)]  # too big: delivering re-encodes it, which takes a while
    job_id = await site.generate(out, *extra)

    def ready() -> bool:
        state = site.state(job_id)
        if kill_state == "queued":
            assert blocker is not None
            # the worker has looked at the waiting job and placed it in line behind the running one
            return site.state(blocker) == "running" and state == "queued" and site.job(job_id)["queue_position"] == 1
        if kill_state == "submitted":
            return state == "submitted" and fake.count("poll") >= 1  # following a task the provider holds
        if kill_state == "downloading":
            return state == "downloading" and fake.count("output") >= 1  # the GET is in flight
        if kill_state == "delivering":
            return state == "delivering" and bool(fit_partials(site, job_id))  # the re-encode is under way
        return state == kill_state

    worker = await site.start_worker()
    await site.kill_when(worker, f"reaching {kill_state}", ready)
    # the process is dead: the state it left is the state it was killed in
    killed_in = site.state(job_id)
    print(f"\nkilled worker pid {worker.pid} with job {job_id} in state {killed_in!r}")
    assert killed_in == kill_state
    if blocker is not None:
        assert site.state(blocker) == "running"
    assert site.account() == (start_balance, sum(site.job(j)["cost_micros"] for j in (job_id, blocker) if j))

    let_tasks_finish(fake)
    await site.ok("worker", "--until-idle")

    jobs = {job_id: out}
    if blocker is not None:
        jobs[blocker] = tmp_path / "out" / "blocker" / "clip.mp4"
    for each, path in jobs.items():
        assert_delivered_once(site, fake, each, path, None if extra else clip)
    if extra:  # fitted under the limit from the large clip, with nothing left of the interrupted encode
        assert out.stat().st_size <= FIT_LIMIT < len(fake.output_bytes)
        assert fit_partials(site, job_id) == []
    assert sorted(p.name for p in site.outputs.iterdir() if ".part" in p.name) == []
    if kill_state == "downloading":
        assert fake.count("output") == 2  # the interrupted GET, then one clean download after the restart
    assert fake.count("submit") == len(fake.tasks) == len(jobs)
    assert len({site.job(each)["provider_task_id"] for each in jobs}) == len(jobs)
    costs = sum(site.job(each)["cost_micros"] for each in jobs)
    assert site.account() == (start_balance - costs, 0)
    assert fake.problems == []

    shown = json.loads(await site.ok("jobs", "show", job_id, "--json"))
    assert (shown["state"], shown["charged_usd"], shown["error"]) == ("done", shown["cost_usd"], None)
    assert shown["output"] == str(out)
    await site.verify_ledger()


async def assert_unknown_and_released(site: Site, job_id: str, start_balance: int) -> None:
    shown = json.loads(await site.ok("jobs", "show", job_id, "--json"))
    assert shown["state"] == "unknown" and shown["charged_usd"] == "0.00", (shown, site.logs())
    assert shown["error"]["code"] == "SUBMIT_AMBIGUOUS"
    assert site.entries(job_id) == ["release", "reserve"]
    assert site.account() == (start_balance, 0)
    # the owner is told once, and the record of that survives restarts
    assert site.query("SELECT what, ref FROM deliveries WHERE job_id = ?", job_id) == [("failure", "unknown")]
    await site.verify_ledger()


async def test_found_in_submitting_is_unknown_released_and_never_sent(
    tmp_path: Path, fake: FakeWaveSpeed, site_for: Callable[..., Site]
) -> None:
    """A process killed just after committing `submitting` (before, or while, the request left) leaves the job
    like this. The kill cannot be timed into that gap from outside, so the test writes the same commit."""
    site = site_for()
    await site.grant(GRANT_USD)
    start_balance, _ = site.account()
    out = tmp_path / "out" / "clip.mp4"
    job_id = await site.generate(out)
    db = await connect(site.db_path)
    try:
        moved = await JobRepository(db).transition(job_id, JobState.SUBMITTING, expect=JobState.QUEUED)
        assert moved is not None and moved.lease_owner is None
    finally:
        await db.close()

    await site.ok("worker", "--until-idle")
    # WaveSpeed cannot say whether a task arrived: never guess by sending again, give the money back
    assert fake.count("submit") == 0 and fake.tasks == {}
    assert not out.parent.exists()
    await assert_unknown_and_released(site, job_id, start_balance)


async def test_killed_while_its_submit_is_in_flight_is_never_sent_again(
    tmp_path: Path, fake: FakeWaveSpeed, site_for: Callable[..., Site]
) -> None:
    """The provider took the task but its reply had not arrived when the worker died."""
    site = site_for()
    await site.grant(GRANT_USD)
    start_balance, _ = site.account()
    out = tmp_path / "out" / "clip.mp4"
    fake.script = list(QUICK)
    fake.fail_next("submit", Hang(3.0))  # the fake creates the task, then holds its reply
    job_id = await site.generate(out)

    worker = await site.start_worker()
    await site.kill_when(worker, "sending its submit", lambda: len(fake.tasks) == 1)
    killed_in = site.state(job_id)
    print(f"\nkilled worker pid {worker.pid} with job {job_id} in state {killed_in!r}")
    assert killed_in == "submitting"

    await site.ok("worker", "--until-idle")
    assert fake.count("submit") == 1  # the one that was in flight; never resent
    assert not out.parent.exists()
    await assert_unknown_and_released(site, job_id, start_balance)
