"""The one contract every provider adapter implements, and the normalised outcomes they report.

An adapter translates the canonical `GenerationRequest` into exactly one provider's API and the provider's
answers back into `TaskState`/`ProviderError`. The engine only ever sees these types.
"""

from __future__ import annotations

import asyncio
import json
from abc import ABC, abstractmethod
from collections.abc import Mapping
from dataclasses import dataclass, field
from enum import StrEnum
from pathlib import Path
from typing import Any, ClassVar, Literal

import httpx

from bot.pricing import Quote, quote
from bot.prompt_refs import RefStyle
from bot.request import GenerationRequest, Violation
from bot.settings import Settings


class TaskStatus(StrEnum):
    QUEUED = "QUEUED"
    RUNNING = "RUNNING"
    SUCCEEDED = "SUCCEEDED"
    FAILED = "FAILED"
    CANCELED = "CANCELED"
    UNKNOWN = "UNKNOWN"  # a deadline hit or an unreadable state: never to be read as a failure

    @property
    def terminal(self) -> bool:
        return self in (TaskStatus.SUCCEEDED, TaskStatus.FAILED, TaskStatus.CANCELED)


class ErrorCode(StrEnum):
    INVALID_INPUT = "INVALID_INPUT"
    INPUT_FETCH_FAILED = "INPUT_FETCH_FAILED"
    CONTENT_POLICY = "CONTENT_POLICY"
    AUTH = "AUTH"
    INSUFFICIENT_FUNDS = "INSUFFICIENT_FUNDS"
    RATE_LIMITED = "RATE_LIMITED"
    PROVIDER_TRANSIENT = "PROVIDER_TRANSIENT"
    SUBMIT_AMBIGUOUS = "SUBMIT_AMBIGUOUS"
    GENERATION_TIMEOUT = "GENERATION_TIMEOUT"
    OUTPUT_INVALID = "OUTPUT_INVALID"  # the finished clip could not be fetched, was too large or not an MP4
    CANCELED = "CANCELED"
    INTERNAL = "INTERNAL"  # a bug in reelbot; logged with a reference

    @property
    def retryable(self) -> bool:
        """May the same idempotent read be tried again later?"""
        return self in (ErrorCode.RATE_LIMITED, ErrorCode.PROVIDER_TRANSIENT)


# What people are told for each code, before the provider's own words.
PLAIN_WORDS: dict[ErrorCode, str] = {
    ErrorCode.INVALID_INPUT: "the provider refused the request",
    ErrorCode.INPUT_FETCH_FAILED: "the provider could not fetch an input file",
    ErrorCode.CONTENT_POLICY: "the provider's content policy rejected this request",
    ErrorCode.AUTH: "the provider refused reelbot's credentials (the operator has to fix the API key)",
    ErrorCode.INSUFFICIENT_FUNDS: "the provider account is out of credit (the operator has to top it up)",
    ErrorCode.RATE_LIMITED: "the provider is rate-limiting requests",
    ErrorCode.PROVIDER_TRANSIENT: "the provider had a temporary problem",
    ErrorCode.SUBMIT_AMBIGUOUS: "the provider did not confirm whether it accepted the job",
    ErrorCode.GENERATION_TIMEOUT: "the generation took too long",
    ErrorCode.OUTPUT_INVALID: "the finished clip could not be retrieved",
    ErrorCode.CANCELED: "the job was cancelled",
    ErrorCode.INTERNAL: "reelbot hit an internal error",
}


class ProviderError(Exception):
    """A normalised failure, keeping the provider's own message for the user."""

    def __init__(
        self,
        code: ErrorCode,
        message: str,
        *,
        provider: str = "",
        http_status: int | None = None,
        retry_after: float | None = None,
    ) -> None:
        self.code = code
        self.message = message
        self.provider = provider
        self.http_status = http_status
        self.retry_after = retry_after
        super().__init__(f"{code}: {message}")

    @property
    def plain(self) -> str:
        """One sentence for people: what happened, in plain words, and the provider's reason."""
        who = f" ({self.provider})" if self.provider else ""
        return f"{PLAIN_WORDS[self.code]}{who}: {self.message}"


@dataclass(frozen=True)
class TaskHandle:
    """Everything needed to find a submitted task again, after a restart too. Persisted as JSON."""

    provider: str
    task_id: str
    poll_url: str | None = None
    result_url: str | None = None
    cancel_url: str | None = None
    extra: Mapping[str, Any] = field(default_factory=dict)

    def to_json(self) -> str:
        return json.dumps(
            {
                "provider": self.provider,
                "task_id": self.task_id,
                "poll_url": self.poll_url,
                "result_url": self.result_url,
                "cancel_url": self.cancel_url,
                "extra": dict(self.extra),
            }
        )

    @classmethod
    def from_json(cls, text: str) -> TaskHandle:
        data = json.loads(text)
        return cls(**data)


@dataclass(frozen=True)
class TaskState:
    status: TaskStatus
    progress: float | None = None  # 0..1 where the provider reports it
    queue_position: int | None = None
    output_url: str | None = None
    nsfw: bool = False
    error: ProviderError | None = None
    raw: Mapping[str, Any] | None = field(default=None, compare=False, repr=False)


@dataclass(frozen=True)
class Capabilities:
    tiers: frozenset[str]
    video_reference: bool = True
    elements: Literal["none", "inline", "id"] = "none"
    start_end_frame: bool = False
    multi_prompt: Literal["none", "list", "indexed", "json_string"] = "list"
    max_shots: int = 6
    shot_prompt_max: int = 512
    shot_types: frozenset[str] = frozenset({"intelligent", "customize"})
    sound: bool = True
    keep_original_sound: bool = True
    prompt_refs: RefStyle = RefStyle.FIGURE
    upload: bool = False  # has an upload API for local files
    inline_base64: bool = False  # accepts images as base64 in the body
    webhook: Literal["none", "hmac", "ed25519", "token"] = "none"
    cancel: Literal["none", "queued", "any"] = "none"
    reconcile: bool = False  # can find a task by our idempotency key after a lost submit reply
    output_ttl_s: int | None = None  # how long the provider keeps the finished clip at its URL
    default_concurrency: int | None = None


@dataclass(frozen=True)
class WebhookEvent:
    """What a verified callback says; the engine still confirms unsigned ones by polling."""

    task_id: str
    state: TaskState | None  # None when the payload cannot be trusted and must be confirmed by a poll


class WebhookRejected(Exception):
    pass


class Provider(ABC):
    """One hosted (or local) implementation of Kling O3 reference-to-video."""

    name: ClassVar[str]
    display_name: ClassVar[str]
    capabilities: ClassVar[Capabilities]
    is_preview: ClassVar[bool] = False

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        self.settings = settings
        self._http = http
        self._owns_http = http is None

    @property
    def http(self) -> httpx.AsyncClient:
        if self._http is None:
            self._http = httpx.AsyncClient(timeout=httpx.Timeout(30.0, connect=10.0))
        return self._http

    async def aclose(self) -> None:
        if self._owns_http and self._http is not None:
            await self._http.aclose()
            self._http = None

    # --- before anything is sent -------------------------------------------------------------
    def check(self, request: GenerationRequest) -> list[Violation]:
        """Parameters this provider cannot take, each named with the provider, refused before sending."""
        caps, out = self.capabilities, []

        def refuse(param: str, why: str) -> None:
            out.append(Violation(param, f"{self.display_name} {why}"))

        if request.tier not in caps.tiers:
            refuse("tier", f"does not offer the {request.tier} tier (choose {', '.join(sorted(caps.tiers))})")
        if request.video is not None and not caps.video_reference:
            refuse("video", "does not accept a reference video")
        if request.elements:
            if caps.elements == "none":
                refuse("elements", "does not accept elements")
            elif caps.elements == "id" and any(e.element_id is None for e in request.elements):
                refuse("elements", "only accepts elements by their provider element id")
            elif caps.elements == "inline" and any(e.element_id is not None for e in request.elements):
                refuse("elements", "does not accept element ids, only element images")
        if (request.start_frame or request.end_frame) and not caps.start_end_frame:
            refuse("start_frame", "does not accept start or end frames")
        if request.multi_prompt:
            if caps.multi_prompt == "none":
                refuse("multi_prompt", "does not accept multi-shot prompts")
            elif len(request.multi_prompt) > caps.max_shots:
                refuse("multi_prompt", f"accepts at most {caps.max_shots} shots")
        if request.shot_type not in caps.shot_types:
            refuse("shot_type", f"does not accept shot_type {request.shot_type!r}")
        if request.sound and not caps.sound:
            refuse("sound", "cannot generate sound")
        return out

    def quote(self, request: GenerationRequest) -> Quote:
        return quote(request, self.name)

    # --- the task's life ---------------------------------------------------------------------
    @abstractmethod
    async def submit(self, request: GenerationRequest, *, job_id: str, webhook_url: str | None = None) -> TaskHandle:
        """Send the job once. Raises ProviderError; SUBMIT_AMBIGUOUS when it may have arrived anyway.
        `job_id` is the idempotency key where the provider has one."""

    @abstractmethod
    async def poll(self, handle: TaskHandle) -> TaskState:
        """Read the task's state. Transport failures raise ProviderError with a retryable code."""

    async def cancel(self, handle: TaskHandle) -> bool:
        """Best effort; True when the provider confirmed the cancel."""
        return False

    async def reconcile(self, job_id: str) -> TaskHandle | None:
        """Find a task sent under `job_id` whose submit reply was lost; None when the provider cannot tell."""
        return None

    async def wait_for_change(self, handle: TaskHandle, timeout: float) -> None:
        """Sleep until the next poll is due. Providers that learn of changes sooner (a local task,
        a webhook) return early."""
        await asyncio.sleep(timeout)

    async def download(self, state: TaskState, dest: Path, *, max_bytes: int) -> Path:
        """Fetch the finished clip to `dest` (streamed, capped, checked to be an MP4)."""
        from bot.media.fetch import fetch_output

        if not state.output_url:
            raise ProviderError(ErrorCode.OUTPUT_INVALID, "the task succeeded but named no output", provider=self.name)
        await fetch_output(self.http, state.output_url, dest, max_bytes=max_bytes, provider=self.name)
        return dest

    async def prepare_webhooks(self) -> None:
        """Fetch what verifying callbacks needs (a signing secret, public keys) before they arrive."""
        return None

    def parse_webhook(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        token: str | None = None,
        handle: TaskHandle | None = None,
    ) -> WebhookEvent:
        """Verify a callback and say what it reports. Signed providers check the signature; unsigned ones
        compare `token` with the per-job token kept in `handle.extra` and return no trusted state."""
        raise WebhookRejected(f"{self.display_name} does not take webhooks")
