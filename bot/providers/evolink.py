"""EvoLink (and AIHubMax, the same unified task API on another base URL): `kling-o3-reference-to-video`.

Documented API (PROVIDERS.md §3.7): Bearer auth; submit POST /v1/videos/generations with
`"model": "kling-o3-reference-to-video"` → `{id: "task-unified-…", status: "pending", progress, task_info, usage}`;
poll GET /v1/tasks/{id} → status pending | processing | completed | failed, `progress` 0–100, `results[]` URLs
(valid 24 h), `error{code, message}` with string codes. Local images go through the file API
(POST {files}/api/v1/files/upload/stream, multipart `file`, images only, kept 72 h). `callback_url` is
HTTPS-only and unsigned, so the URL carries a per-job token and a callback only prompts a re-poll. No
cancel endpoint and no idempotency key are documented.

The request follows the newer schema (AIHubMax's page): `@Image1` references, `image_urls`, inline
`elements`, `generate_audio`, 3–15 s. Where that page leaves a name open we follow EvoLink's own pages —
see the ❓ comments.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx

from bot.prompt_refs import RefStyle, rewrite
from bot.providers.base import (
    Capabilities,
    ErrorCode,
    ProviderError,
    TaskHandle,
    TaskState,
    TaskStatus,
    WebhookEvent,
    WebhookRejected,
)
from bot.providers.hosted import HostedProvider
from bot.providers.http import Classifier, default_classify, failure_code, provider_message
from bot.providers.media_upload import mime_of, read_bytes, upload_name
from bot.providers.webhooks import new_token, tokens_match
from bot.request import Element, GenerationRequest, MediaRef, Violation

log = logging.getLogger(__name__)

MODEL = "kling-o3-reference-to-video"
# ❓ The new schema names the resolution without its field name; EvoLink's own pages call it `quality`.
QUALITY = {"standard": "720p", "pro": "1080p", "4k": "4k"}
STATUS = {
    "pending": TaskStatus.QUEUED,
    "processing": TaskStatus.RUNNING,
    "completed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    # not among the four documented statuses; accepted in case a cancelled task reports itself so
    "cancelled": TaskStatus.CANCELED,
    "canceled": TaskStatus.CANCELED,
}
# The documented string error codes (task-management/error-codes).
ERROR_CODES = {
    "content_policy_violation": ErrorCode.CONTENT_POLICY,
    "invalid_parameters": ErrorCode.INVALID_INPUT,
    "image_dimension_mismatch": ErrorCode.INVALID_INPUT,
    "invalid_task_id": ErrorCode.INVALID_INPUT,
    "resource_not_found": ErrorCode.INVALID_INPUT,
    "image_processing_error": ErrorCode.INPUT_FETCH_FAILED,
    "request_cancelled": ErrorCode.CANCELED,
    "generation_failed_no_content": ErrorCode.PROVIDER_TRANSIENT,
    "service_error": ErrorCode.PROVIDER_TRANSIENT,
    "resource_exhausted": ErrorCode.PROVIDER_TRANSIENT,
    "service_unavailable": ErrorCode.PROVIDER_TRANSIENT,
    "unknown_error": ErrorCode.PROVIDER_TRANSIENT,
    "generation_timeout": ErrorCode.GENERATION_TIMEOUT,
    # EvoLink words it "rate limit or quota exceeded"; PROVIDERS.md §7 files it under insufficient funds
    # (credits are prepaid), so it is never retried blindly.
    "quota_exceeded": ErrorCode.INSUFFICIENT_FUNDS,
    "insufficient_quota": ErrorCode.INSUFFICIENT_FUNDS,
    "insufficient_quota_error": ErrorCode.INSUFFICIENT_FUNDS,
    "rate_limit_exceeded": ErrorCode.RATE_LIMITED,
    "rate_limit_error": ErrorCode.RATE_LIMITED,
}
# The old schema on EvoLink's own page caps a clip made with a reference video at 10 s.
MAX_DURATION_WITH_VIDEO = 10
CALLBACK_URL_MAX = 2048
# Uploaded files expire after 72 h: reuse one only while it will outlive any job started now.
UPLOAD_REUSE_S = 24 * 3600
_FUNDS_WORDS = ("insufficient balance", "insufficient credit", "insufficient quota", "top up", "recharge")


def error_fields(body: Any) -> tuple[str, str]:
    """(code, message) from `{"error": {"code", "message"}}`; the code may be a string or a number."""
    error = body.get("error") if isinstance(body, Mapping) else None
    if not isinstance(error, Mapping):
        return "", provider_message(body)
    code = error.get("code")
    if not isinstance(code, str) or not code:
        code = error.get("type") if isinstance(error.get("type"), str) else ""
    return str(code or ""), str(error.get("message") or provider_message(body))


def with_token(url: str, token: str) -> str:
    """The callback URL with our per-job token added to its query."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


class EvoLinkProvider(HostedProvider):
    name = "evolink"
    display_name = "EvoLink"
    capabilities = Capabilities(
        tiers=frozenset({"standard", "pro", "4k"}),
        # Documented as `video_url` + `keep_original_sound` on EvoLink's own page for this model (the older
        # schema); AIHubMax's newer page moves videos into `elements`. Its file API takes images only, so a
        # reference video must already have a public URL (refused in check() otherwise).
        video_reference=True,
        elements="inline",
        start_end_frame=True,
        multi_prompt="list",
        # The model's shot mode is fixed to `customize` ("do not pass unless necessary"): a single prompt
        # is sent without it, so reelbot's default `intelligent` means "the provider decides".
        prompt_refs=RefStyle.AT,
        upload=True,
        webhook="token",
        cancel="none",
        reconcile=False,
        output_ttl_s=24 * 3600,  # result links are valid 24 h
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._uploads: dict[str, tuple[str, float]] = {}  # sha256 -> (url, uploaded at)

    def auth_headers(self) -> Mapping[str, str]:
        key = self.settings.secret("EVOLINK_API_KEY")
        return {"Authorization": f"Bearer {key.get_secret_value() if key else ''}"}

    def classifier(self) -> Classifier:
        by_status = default_classify(self.name)

        def classify(response: httpx.Response, body: Any) -> ProviderError:
            """The body's string code decides where there is one (a 429 may mean "out of credits")."""
            error = by_status(response, body)
            code, message = error_fields(body)
            mapped = ERROR_CODES.get(code.lower())
            if mapped is None or mapped is ErrorCode.CANCELED:
                funds = response.status_code in (402, 403, 429) and any(w in message.lower() for w in _FUNDS_WORDS)
                mapped = ErrorCode.INSUFFICIENT_FUNDS if funds else error.code
            return ProviderError(mapped, message or error.message, provider=self.name,
                                 http_status=error.http_status, retry_after=error.retry_after)  # fmt: skip

        return classify

    def check(self, request: GenerationRequest) -> list[Violation]:
        out = super().check(request)
        if request.video is not None:
            if self.video_url(request.video) is None:
                why = (
                    f"{self.display_name} needs a public https:// URL for the reference video (its file API takes "
                    "images only): set REELBOT_PUBLIC_MEDIA_URL to where reelbot's media folder is published, or "
                    "give the video as an https:// link"
                )
                out.append(Violation("video", why))
            if request.duration > MAX_DURATION_WITH_VIDEO:
                out.append(Violation("duration", f"{self.display_name} makes at most {MAX_DURATION_WITH_VIDEO} s "
                                     f"with a reference video ({request.duration} s asked)"))  # fmt: skip
        return out

    # --- inputs ------------------------------------------------------------------------------------
    def video_url(self, ref: MediaRef) -> str | None:
        """Where EvoLink can fetch the reference video: reelbot's published copy (it outlives a Discord link),
        else the https:// link it came from (the same rule as RunComfy's inputs)."""
        published = self.settings.public_media_url
        if published and published.startswith("https://"):
            return f"{published.rstrip('/')}/{quote(Path(ref.path).name)}"
        if ref.source_url and ref.source_url.startswith("https://"):
            return ref.source_url
        return None

    async def upload(self, ref: MediaRef) -> str:
        """Images go through EvoLink's stream upload (kept 72 h, longer than any job's deadline)."""
        cached = self._uploads.get(ref.sha256)
        if cached and time.time() - cached[1] < UPLOAD_REUSE_S:
            return cached[0]
        files = {"file": (upload_name(ref), await read_bytes(ref), mime_of(ref))}
        files_url = str(self.settings.evolink_files_url).rstrip("/")
        body = await self.api.send("POST", f"{files_url}/api/v1/files/upload/stream", files=files)
        data = body.get("data") if isinstance(body, Mapping) else None
        url = data.get("file_url") if isinstance(data, Mapping) else None
        if not url:
            message = provider_message(body, "the file upload returned no URL")
            raise ProviderError(ErrorCode.INPUT_FETCH_FAILED, message, provider=self.name)
        self._uploads[ref.sha256] = (str(url), time.time())
        return str(url)

    async def element(self, element: Element) -> dict[str, Any]:
        """An inline element: its frontal image and 1–3 more views (check() refused element ids)."""
        assert element.frontal is not None
        return {
            "frontal_image_url": await self.upload(element.frontal),
            "reference_image_urls": [await self.upload(ref) for ref in element.references],
        }

    async def build_body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model": MODEL,
            "duration": request.duration,  # an integer here
            "aspect_ratio": request.aspect_ratio,
            "quality": QUALITY[request.tier],
        }
        if request.multi_prompt:
            # ❓ Item shape not spelled out; `{prompt, duration}` with integer seconds follows fal's documented
            # shape and EvoLink's integer durations. The prompt is left out (mutually exclusive).
            body["multi_prompt"] = [
                {"prompt": rewrite(shot.prompt, RefStyle.AT), "duration": shot.duration}
                for shot in request.multi_prompt
            ]
        else:
            body["prompt"] = rewrite(request.prompt or "", RefStyle.AT)
        if request.images:
            body["image_urls"] = [await self.upload(ref) for ref in request.images]
        if request.elements:
            body["elements"] = [await self.element(element) for element in request.elements]
        # ❓ First/last frame names are not given on the new page; EvoLink's kling-o3-image-to-video (same
        # API, same doc tree) documents `image_start` / `image_end`.
        if request.start_frame is not None:
            body["image_start"] = await self.upload(request.start_frame)
        if request.end_frame is not None:
            body["image_end"] = await self.upload(request.end_frame)
        if request.video is not None:
            body["video_url"] = self.video_url(request.video)
            body["keep_original_sound"] = request.keep_original_sound
        else:
            body["generate_audio"] = request.sound
        return body

    # --- the task ----------------------------------------------------------------------------------
    async def submit(self, request: GenerationRequest, *, job_id: str, webhook_url: str | None = None) -> TaskHandle:
        body = await self.build_body(request)
        extra: dict[str, Any] = {}
        if webhook_url:
            token = new_token()
            callback = with_token(webhook_url, token)
            if callback.startswith("https://") and len(callback) <= CALLBACK_URL_MAX:
                body["callback_url"] = callback
                extra["webhook_token"] = token
            else:  # EvoLink refuses plain-HTTP callbacks; polling alone still finds the result
                log.warning("evolink: the webhook URL is not HTTPS (or too long); relying on polling")
        reply = await self.api.submit("/v1/videos/generations", json_body=body)
        task_id = reply.get("id") if isinstance(reply, Mapping) else None
        if not task_id:
            raise ProviderError(
                ErrorCode.SUBMIT_AMBIGUOUS,
                f"the submit reply carried no task id: {provider_message(reply, 'empty reply')}",
                provider=self.name,
            )
        return TaskHandle(provider=self.name, task_id=str(task_id), poll_url=f"/v1/tasks/{quote(str(task_id))}",
                          extra=extra)  # fmt: skip

    async def poll(self, handle: TaskHandle) -> TaskState:
        reply = await self.api.get(handle.poll_url or f"/v1/tasks/{quote(handle.task_id)}")
        return self.parse_state(reply)

    def parse_state(self, reply: Any) -> TaskState:
        if not isinstance(reply, Mapping) or "status" not in reply:
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, "unreadable task state", provider=self.name)
        word = str(reply["status"]).lower()
        status = STATUS.get(word)
        if status is None:
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, f"unknown status {reply['status']!r}", provider=self.name)
        progress = _fraction(reply.get("progress"))
        if status is TaskStatus.SUCCEEDED:
            results = reply.get("results") or []
            if not results:
                error = ProviderError(ErrorCode.OUTPUT_INVALID, "completed without a result URL", provider=self.name)
                return TaskState(TaskStatus.FAILED, error=error, raw=reply)
            return TaskState(status, progress=1.0, output_url=str(results[0]), raw=reply)
        if status is TaskStatus.FAILED:
            return self._failed(reply)
        return TaskState(status, progress=progress, raw=reply)

    def _failed(self, reply: Mapping[str, Any]) -> TaskState:
        code, message = error_fields(reply)
        message = message or f"the task failed ({code or 'no reason given'})"
        mapped = ERROR_CODES.get(code.lower()) or failure_code(message)
        if mapped is ErrorCode.CANCELED:
            error = ProviderError(ErrorCode.CANCELED, message, provider=self.name)
            return TaskState(TaskStatus.CANCELED, error=error, raw=reply)
        return TaskState(TaskStatus.FAILED, error=ProviderError(mapped, message, provider=self.name), raw=reply)

    # --- webhooks ----------------------------------------------------------------------------------
    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, *, token: str | None = None, handle: TaskHandle | None = None
    ) -> WebhookEvent:
        """EvoLink signs nothing: the callback is believed only as far as "look again". The token from the
        callback URL must match the one stored in the job's handle at submit."""
        if handle is None:
            raise WebhookRejected("no task handle to check the callback token against")
        if not tokens_match(handle.extra.get("webhook_token"), token):
            raise WebhookRejected("wrong or missing callback token")
        try:
            payload = json.loads(body)
        except ValueError:
            payload = None
        claimed = payload.get("id") if isinstance(payload, Mapping) else None
        if claimed is not None and str(claimed) != handle.task_id:
            raise WebhookRejected("the callback names another task")
        return WebhookEvent(task_id=handle.task_id, state=None)


def _fraction(value: Any) -> float | None:
    """EvoLink reports progress as a percentage 0–100."""
    if isinstance(value, bool) or not isinstance(value, int | float):
        return None
    return max(0.0, min(1.0, float(value) / 100))
