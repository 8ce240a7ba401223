"""Time-based versions of the loopback provider fakes, and a way to run one in a process of its own.

The test fakes (tests/fakes/providers) move a task one scripted step per poll. A benchmark needs a provider that
behaves like the real one: a task finishes a fixed wall time after it was submitted, however often it is asked.
`TimedWaveSpeed` and `TimedFal` answer by elapsed time, remember when each task finished and when a client first
heard so (the first "completed" status served), count every read of each task, serve a clip of a chosen size, and
— when the submit registered one — POST a signed WaveSpeed webhook at completion.

`python -m bench.fakes '{"provider": "wavespeed", "gen_s": 9, "clip_bytes": 5000000}'` serves one on 127.0.0.1,
prints `{"base_url", "env", "cafile"}` as its first stdout line and runs until its stdin closes. `"tls": true`
serves HTTPS with a throwaway self-signed certificate (fal-client only speaks https:// to its queue host); `env`
then carries `SSL_CERT_FILE` so clients in other processes trust it. `GET /_bench/stats[?tag=T]` reports the
tasks (those whose prompt starts with `[T]`).
"""

from __future__ import annotations

import asyncio
import contextlib
import datetime as dt
import hashlib
import hmac
import ipaddress
import json
import ssl
import struct
import sys
import tempfile
import time
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import aiohttp
from aiohttp import web

from tests.fakes.providers.fal import FakeFal
from tests.fakes.providers.harness import FIXTURE_CLIP, FakeTask, Step
from tests.fakes.providers.wavespeed import FakeWaveSpeed

# Requests that are about one task and made by its client: the submit, status and result reads.
TASK_KINDS = ("submit", "poll", "result")


def make_clip(size: int) -> bytes:
    """A real MP4 (the test fixture) padded to `size` bytes with a trailing `free` box of random bytes, which
    every MP4 reader skips: the download and the MP4 check see a genuine clip of exactly that size."""
    clip = FIXTURE_CLIP.read_bytes()
    pad = size - len(clip) - 8
    if pad < 0:
        return clip
    # Random, not zeros: nothing on the way (no compression anywhere, but still) can shortcut the bytes.
    filler = (hashlib.sha256(b"reelbot-bench").digest() * (pad // 32 + 1))[:pad]
    return clip + struct.pack(">I", pad + 8) + b"free" + filler


@dataclass
class TimedTask(FakeTask):
    gen_s: float = 0.0
    submitted: float = 0.0  # time.time() of the submit
    finish: float = 0.0  # when the provider is done: submitted + gen_s
    noticed: float | None = None  # when a client was first told it is done
    reads: int = 0  # status and result reads of this task
    downloads: int = 0
    callbacks: int = 0

    def _step(self) -> Step:
        now = time.time()
        if now >= self.finish:
            return Step("succeeded")
        if now - self.submitted < 0.05 * self.gen_s:
            return Step("queued", queue_position=1)
        return Step("running", round((now - self.submitted) / self.gen_s, 3))

    def advance(self) -> Step:  # a status read
        self.reads += 1
        step = self._step()
        if step.kind == "succeeded" and self.noticed is None:
            self.noticed = time.time()
        return step

    def peek(self) -> Step:  # a result read (fal)
        self.reads += 1
        return self._step()


class Timed:
    """Mixed into a provider fake: tasks finish by the clock; a clip of `clip_bytes`; stats for the bench."""

    gen_s: float = 9.0
    tasks: dict[str, FakeTask]
    requests: list[Any]
    output_bytes: bytes
    base_url: str

    def setup_bench(self, gen_s: float, clip_bytes: int) -> None:
        self.gen_s = gen_s
        self.output_bytes = make_clip(clip_bytes)
        self.small_bytes = FIXTURE_CLIP.read_bytes()
        self.webhook_failures = 0
        self._session: aiohttp.ClientSession | None = None
        self._callbacks: set[asyncio.Task[None]] = set()
        self.route("GET", "/_bench/stats", self.bench_stats, kind="bench")  # type: ignore[attr-defined]

    def new_task(self, task_id: str, body: dict[str, Any]) -> FakeTask:
        now = time.time()
        task = TimedTask(task_id, body, [], gen_s=self.gen_s, submitted=now, finish=now + self.gen_s)
        self.tasks[task_id] = task
        asyncio.get_running_loop().call_later(self.gen_s, self._finished, task)
        return task

    def _finished(self, task: TimedTask) -> None:
        if task.extra.get("webhook"):
            job = asyncio.ensure_future(self._call_back(task))
            self._callbacks.add(job)
            job.add_done_callback(self._callbacks.discard)

    def webhook(self, task: TimedTask) -> tuple[dict[str, str], bytes]:
        raise NotImplementedError

    async def _call_back(self, task: TimedTask) -> None:
        if self._session is None:
            self._session = aiohttp.ClientSession(timeout=aiohttp.ClientTimeout(total=30))
        headers, body = self.webhook(task)
        task.callbacks += 1
        try:
            async with self._session.post(task.extra["webhook"], data=body, headers=headers) as answer:
                if answer.status != 200:
                    self.webhook_failures += 1
        except aiohttp.ClientError:
            self.webhook_failures += 1

    async def _serve_output(self, request: web.Request) -> web.StreamResponse:
        name = request.match_info["name"]
        if name.startswith("small"):
            return web.Response(body=self.small_bytes, content_type="video/mp4")
        task = self.tasks.get(name.removesuffix(".mp4"))
        if isinstance(task, TimedTask):
            task.downloads += 1
        return web.Response(body=self.output_bytes, content_type="video/mp4")

    async def bench_stats(self, request: web.Request) -> web.Response:
        tag = request.query.get("tag")
        prefix = f"[{tag}]" if tag else ""
        tasks = [t for t in self.tasks.values() if isinstance(t, TimedTask)
                 and str(t.input.get("prompt", "")).startswith(prefix)]  # fmt: skip
        other: dict[str, int] = {}
        for record in self.requests:
            if record.kind not in (*TASK_KINDS, "output", "bench"):
                other[record.kind] = other.get(record.kind, 0) + 1
        rows = [{"id": t.id, "submitted": t.submitted, "finish": t.finish, "noticed": t.noticed, "reads": t.reads,
                 "downloads": t.downloads, "callbacks": t.callbacks} for t in tasks]  # fmt: skip
        return web.json_response({"gen_s": self.gen_s, "tasks": rows, "other_requests": other,
                                  "webhook_failures": self.webhook_failures})  # fmt: skip

    async def close_bench(self) -> None:
        for job in list(self._callbacks):
            job.cancel()
        if self._session is not None:
            await self._session.close()


class TimedWaveSpeed(Timed, FakeWaveSpeed):
    def webhook(self, task: TimedTask) -> tuple[dict[str, str], bytes]:
        """WaveSpeed's callback: the prediction, signed with HMAC-SHA256 over `id.timestamp.body`."""
        body = json.dumps(self._prediction(task, "completed", outputs=[self.output_url(task)])).encode()
        webhook_id, stamp = f"{task.id}-done", str(int(time.time()))
        key = self.webhook_secret.removeprefix("whsec_").encode()
        digest = hmac.new(key, f"{webhook_id}.{stamp}.".encode() + body, hashlib.sha256).hexdigest()
        headers = {"webhook-id": webhook_id, "webhook-timestamp": stamp, "webhook-signature": f"v3,{digest}",
                   "Content-Type": "application/json"}  # fmt: skip
        return headers, body


class TimedFal(Timed, FakeFal):
    ssl_context: ssl.SSLContext | None = None

    async def start(self) -> str:
        if self.ssl_context is None:
            return await super().start()
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0, ssl_context=self.ssl_context)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"https://127.0.0.1:{port}"
        return self.base_url


def self_signed(folder: Path) -> tuple[Path, Path]:
    """A throwaway certificate for 127.0.0.1 (its own CA), written as PEM files."""
    from cryptography import x509
    from cryptography.hazmat.primitives import hashes, serialization
    from cryptography.hazmat.primitives.asymmetric import ec
    from cryptography.x509.oid import NameOID

    key = ec.generate_private_key(ec.SECP256R1())
    name = x509.Name([x509.NameAttribute(NameOID.COMMON_NAME, "127.0.0.1")])
    now = dt.datetime.now(dt.UTC)
    san = x509.SubjectAlternativeName([x509.IPAddress(ipaddress.ip_address("127.0.0.1"))])
    cert = (
        x509.CertificateBuilder()
        .subject_name(name)
        .issuer_name(name)
        .public_key(key.public_key())
        .serial_number(x509.random_serial_number())
        .not_valid_before(now - dt.timedelta(minutes=5))
        .not_valid_after(now + dt.timedelta(days=1))
        .add_extension(san, critical=False)
        .add_extension(x509.BasicConstraints(ca=True, path_length=None), critical=True)
        .add_extension(x509.SubjectKeyIdentifier.from_public_key(key.public_key()), critical=False)
        .sign(key, hashes.SHA256())
    )
    cert_path, key_path = folder / "cert.pem", folder / "key.pem"
    cert_path.write_bytes(cert.public_bytes(serialization.Encoding.PEM))
    key_path.write_bytes(key.private_bytes(serialization.Encoding.PEM, serialization.PrivateFormat.PKCS8,
                                           serialization.NoEncryption()))  # fmt: skip
    return cert_path, key_path


def build(provider: str, *, gen_s: float, clip_bytes: int, tls_dir: Path | None = None) -> TimedWaveSpeed | TimedFal:
    fake: TimedWaveSpeed | TimedFal
    if provider == "wavespeed":
        fake = TimedWaveSpeed()
    elif provider == "fal":
        fake = TimedFal()
        if tls_dir is not None:
            cert, key = self_signed(tls_dir)
            context = ssl.create_default_context(ssl.Purpose.CLIENT_AUTH)
            context.load_cert_chain(cert, key)
            fake.ssl_context = context
    else:
        raise ValueError(f"no timed fake for {provider!r}")
    fake.setup_bench(gen_s, clip_bytes)
    return fake


async def serve(payload: dict[str, Any]) -> None:
    with tempfile.TemporaryDirectory(prefix="reelbot-bench-tls-") as folder:
        tls_dir = Path(folder) if payload.get("tls") else None
        fake = build(payload["provider"], gen_s=float(payload.get("gen_s", 9.0)),
                     clip_bytes=int(payload.get("clip_bytes", 0)), tls_dir=tls_dir)  # fmt: skip
        await fake.start()
        env = fake.settings_env()
        cafile = None
        if tls_dir is not None:
            cafile = str(tls_dir / "cert.pem")
            env["SSL_CERT_FILE"] = cafile
        if payload["provider"] == "fal":
            env["FAL_QUEUE_RUN_HOST"] = fake.base_url.split("://", 1)[1]  # fal-client's queue host
        print(json.dumps({"base_url": fake.base_url, "env": env, "cafile": cafile}), flush=True)
        loop = asyncio.get_running_loop()
        with contextlib.suppress(Exception):
            await loop.run_in_executor(None, sys.stdin.read)  # until the parent closes our stdin
        await fake.close_bench()
        await fake.stop()


if __name__ == "__main__":
    asyncio.run(serve(json.loads(sys.argv[1])))
