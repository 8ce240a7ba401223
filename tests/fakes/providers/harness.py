"""The common machinery of the loopback provider APIs used in tests.

Each fake (one module per provider) is written from that provider's *documented* API — paths, headers,
field names and types, status words, error shapes — never from reelbot's adapter. It subclasses `FakeAPI`,
registers its routes with a `kind` tag, checks every request it receives against the documented contract
(recording problems in `self.problems`, and answering 400/422 as the real API would), and renders the
abstract task script below in its own wire format.

The harness provides, for every fake alike:
- fault injection per route kind (`submit`, `poll`, `result`, `output`, `upload`, `cancel`):
  `fail_next("poll", Status(429, headers={"Retry-After": "1"}), Status(500))`, `Reset()`, `Slow(seconds)`,
  `Malformed()`, `Hang()` (process the request, then never answer in time: for "the reply never arrives");
- a scripted task life: `script = [Step("queued"), Step("running", 0.5), Step("succeeded")]` — each poll
  advances one step, the last step repeats;
- output files served at `/files/<name>` (real MP4 bytes), with `output_mode` "ok" | "404";
- a record of every request (`requests`, `count(kind)`), for "one submit only" assertions.
"""

from __future__ import annotations

import asyncio
import email.parser
import email.policy
import json
from collections import defaultdict, deque
from collections.abc import Awaitable, Callable
from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

from aiohttp import web

FIXTURE_CLIP = Path(__file__).parents[2] / "fixtures" / "motion_ref.mp4"

StepKind = Literal["queued", "running", "succeeded", "failed", "content_policy", "cancelled"]


@dataclass(frozen=True)
class Step:
    kind: StepKind
    progress: float | None = None  # running: 0..1
    message: str | None = None  # failed / content_policy: the provider's own words
    queue_position: int | None = None


# --- faults --------------------------------------------------------------------------------------


@dataclass(frozen=True)
class Status:
    status: int
    body: Any = None
    headers: dict[str, str] = field(default_factory=dict)


@dataclass(frozen=True)
class Reset:
    """Close the connection without answering."""


@dataclass(frozen=True)
class Slow:
    """Answer normally, but only after `seconds` (longer than the client's read timeout)."""

    seconds: float


@dataclass(frozen=True)
class Malformed:
    """200 with a body that is not JSON."""


@dataclass(frozen=True)
class Hang:
    """Handle the request (e.g. create the task), then hold the reply for `seconds`."""

    seconds: float = 30.0


Fault = Status | Reset | Slow | Malformed | Hang


@dataclass
class Recorded:
    kind: str
    method: str
    path: str
    query: dict[str, str]
    headers: dict[str, str]
    body: bytes

    def json(self) -> Any:
        return json.loads(self.body)


@dataclass
class FakeTask:
    id: str
    input: dict[str, Any]
    script: list[Step]
    polls: int = 0
    cancelled: bool = False
    extra: dict[str, Any] = field(default_factory=dict)

    def advance(self) -> Step:
        """The step this poll sees; each poll moves one step on, the last one repeats."""
        if self.cancelled:
            return Step("cancelled")
        step = self.script[min(self.polls, len(self.script) - 1)]
        self.polls += 1
        return step

    def peek(self) -> Step:
        if self.cancelled:
            return Step("cancelled")
        return self.script[min(max(self.polls - 1, 0), len(self.script) - 1)]


Handler = Callable[[web.Request], Awaitable[web.StreamResponse]]

DEFAULT_SCRIPT = [Step("queued", queue_position=2), Step("running", 0.3), Step("running", 0.7), Step("succeeded")]


def field_problems(body: dict[str, Any], fields: dict[str, Any]) -> list[str]:
    """A JSON body against a provider's documented fields: unknown names, and values of the wrong JSON type
    (a boolean never passes for a number or a string, though Python's bool is an int)."""
    problems = []
    for key, value in body.items():
        wanted = fields.get(key)
        if wanted is None:
            problems.append(f"undocumented field {key!r}")
        elif not isinstance(value, wanted) or (wanted is not bool and isinstance(value, bool)):
            problems.append(f"{key} has type {type(value).__name__}")
    return problems


class FakeAPI:
    """Base class for a provider's loopback API."""

    name = "fake"

    def __init__(self, *, api_key: str = "test-key") -> None:
        self.api_key = api_key
        self.app = web.Application(middlewares=[self._middleware], client_max_size=300 * 1024 * 1024)
        self.requests: list[Recorded] = []
        self.problems: list[str] = []
        self.tasks: dict[str, FakeTask] = {}
        self.script: list[Step] = list(DEFAULT_SCRIPT)
        self.output_mode: Literal["ok", "404"] = "ok"
        self.output_bytes: bytes = FIXTURE_CLIP.read_bytes()
        self._faults: dict[str, deque[Fault]] = defaultdict(deque)
        self._kinds: dict[tuple[str, str], str] = {}
        self._runner: web.AppRunner | None = None
        self.base_url = ""
        self.route("GET", "/files/{name}", self._serve_output, kind="output")
        self.setup_routes()

    # --- for subclasses --------------------------------------------------------------------------
    def setup_routes(self) -> None:
        raise NotImplementedError

    def route(self, method: str, path: str, handler: Handler, *, kind: str) -> None:
        """Register a documented endpoint; `kind` names it for fault injection and request records."""
        self.app.router.add_route(method, path, handler)
        self._kinds[(method, path)] = kind

    def expect(self, condition: bool, problem: str) -> bool:
        """Record a contract violation; returns the condition so handlers can answer 400 on failure."""
        if not condition:
            self.problems.append(problem)
        return condition

    def bearer_ok(self, request: web.Request) -> bool:
        """The documented `Authorization: Bearer <key>` check most of the providers use."""
        return self.expect(
            request.headers.get("Authorization") == f"Bearer {self.api_key}", "missing or wrong Bearer token"
        )

    def new_task(self, task_id: str, body: dict[str, Any]) -> FakeTask:
        task = FakeTask(task_id, body, list(self.script))
        self.tasks[task_id] = task
        return task

    def output_url(self, task: FakeTask) -> str:
        return f"{self.base_url}/files/{task.id}.mp4"

    # --- for tests -------------------------------------------------------------------------------
    def fail_next(self, kind: str, *faults: Fault) -> None:
        self._faults[kind].extend(faults)

    def count(self, kind: str) -> int:
        return sum(1 for r in self.requests if r.kind == kind)

    def last(self, kind: str) -> Recorded:
        return [r for r in self.requests if r.kind == kind][-1]

    async def start(self) -> str:
        self._runner = web.AppRunner(self.app, access_log=None)
        await self._runner.setup()
        site = web.TCPSite(self._runner, "127.0.0.1", 0)
        await site.start()
        port = site._server.sockets[0].getsockname()[1]  # type: ignore[union-attr]
        self.base_url = f"http://127.0.0.1:{port}"
        return self.base_url

    async def stop(self) -> None:
        if self._runner is not None:
            await self._runner.cleanup()

    # --- machinery -------------------------------------------------------------------------------
    @web.middleware
    async def _middleware(self, request: web.Request, handler: Handler) -> web.StreamResponse:
        route = request.match_info.route
        kind = self._kinds.get((route.method, route.resource.canonical if route.resource else ""), "other")
        body = await request.read()
        self.requests.append(
            Recorded(kind, request.method, request.path, dict(request.query), dict(request.headers), body)
        )
        fault = self._faults[kind].popleft() if self._faults[kind] else None
        if isinstance(fault, Status):
            payload = fault.body if fault.body is not None else {"message": f"injected HTTP {fault.status}"}
            text = payload if isinstance(payload, str) else json.dumps(payload)
            return web.Response(status=fault.status, text=text, headers=fault.headers, content_type="application/json")
        if isinstance(fault, Reset):
            assert request.transport is not None
            request.transport.abort()
            await asyncio.sleep(0.05)
            raise ConnectionResetError("injected reset")
        if isinstance(fault, Malformed):
            return web.Response(status=200, text='{"data": {"status": ', content_type="application/json")
        if isinstance(fault, Slow):
            await asyncio.sleep(fault.seconds)
        response = await handler(request)
        if isinstance(fault, Hang):
            await asyncio.sleep(fault.seconds)
        return response

    async def _serve_output(self, request: web.Request) -> web.StreamResponse:
        if self.output_mode == "404":
            return web.json_response({"message": "file not found or expired"}, status=404)
        return web.Response(body=self.output_bytes, content_type="video/mp4")

    @staticmethod
    async def form_files(request: web.Request) -> dict[str, tuple[str, bytes]]:
        """Multipart form files as {field: (filename, bytes)} (the body was already read for the record)."""
        raw = await request.read()
        header = f"Content-Type: {request.headers.get('Content-Type', '')}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
        files = {}
        for part in message.iter_parts() if message.is_multipart() else []:
            name = part.get_param("name", header="content-disposition")
            if name:
                files[str(name)] = (part.get_filename() or "", part.get_payload(decode=True) or b"")
        return files

    @staticmethod
    async def json_body(request: web.Request) -> Any:
        try:
            return json.loads(await request.read() or b"null")
        except ValueError:
            return None
