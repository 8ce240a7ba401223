"""RunComfy Model API: `kling/kling-video-o3/{standard,pro}/reference-to-video`.

Documented API (PROVIDERS.md §3.3, docs.runcomfy.com/model-apis): Bearer auth; submit
POST /v1/models/<model id> → `{request_id, status_url, result_url, cancel_url}`; status
GET /v1/requests/{id}/status → `in_queue` (+ `queue_position`) → `in_progress` → `completed` | `cancelled`;
outputs from GET /v1/requests/{id}/result; POST /v1/requests/{id}/cancel works while the request is queued.
Errors are JSON with the HTTP status, a numeric `error_code` and a message. Inputs must be public HTTPS URLs
that RunComfy fetches itself: there is no upload API and base64 is documented for Serverless only.

Not confirmed (❓), and what this adapter follows instead:
- the pro path: the standard path with `pro` (the id pattern of the standard model and of fal's tiers);
- the JSON names of the image and video fields and the multi_prompt item shape: WaveSpeed's (`images`,
  `video`, `[{index, prompt, duration}]`), the nearest sibling, whose field list RunComfy repeats exactly;
- the result's shape: `{"status": "succeeded", "output": {"video": url}}` as public RunComfy clients read it,
  also taking a bare `{"video": url}`; a failed generation as `completed` whose result carries `error`;
- webhooks: documented for the Serverless API only (unsigned), not for the Model API, so none are offered.
"""

from __future__ import annotations

from collections.abc import Mapping
from pathlib import Path
from typing import Any
from urllib.parse import quote, urlsplit

import httpx

from bot.prompt_refs import RefStyle
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
from bot.providers.wavespeed import shared_fields
from bot.request import GenerationRequest, MediaRef, Violation

TIER_PATH = {"standard": "standard", "pro": "pro"}  # pro ❓: follows the documented standard path

# RunComfy's numeric codes decide over the HTTP status: an empty balance and a bad token both arrive as 400.
ERROR_CODES: dict[int, ErrorCode] = {
    400001: ErrorCode.INVALID_INPUT,  # InvalidResourceIdentifier (e.g. a wrong model id)
    400002: ErrorCode.INSUFFICIENT_FUNDS,  # InsufficientResources: no balance left
    400004: ErrorCode.AUTH,  # UserAccountError: missing/expired token, revoked key, inactive account
    403001: ErrorCode.AUTH,  # PermissionDenied
    404001: ErrorCode.INVALID_INPUT,  # NotFound: a nonexistent, deleted or expired request id
    # the same company's Serverless API codes, in case its gateway answers for the Model API too
    401001: ErrorCode.AUTH,
    422001: ErrorCode.INVALID_INPUT,
    500001: ErrorCode.PROVIDER_TRANSIENT,
}
QUEUE_STATUS = {
    "in_queue": TaskStatus.QUEUED,
    "in_progress": TaskStatus.RUNNING,
    "cancelled": TaskStatus.CANCELED,
    "canceled": TaskStatus.CANCELED,
    # not documented for the status endpoint; public clients still check for them
    "failed": TaskStatus.FAILED,
    "error": TaskStatus.FAILED,
}
_FAILED_RESULTS = frozenset({"failed", "error", "cancelled", "canceled"})
_CANCEL_CONFIRMED = frozenset({"cancelled", "canceled", "cancellation_requested"})


def _error_code(body: Any) -> int | None:
    if not isinstance(body, Mapping):
        return None
    for key in ("error_code", "code"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool):
            return value
        if isinstance(value, str) and value.isdigit():
            return int(value)
    return None


def _url_in(value: Any) -> str | None:
    """A URL given as a string, as `{url: …}` or as the first of a list."""
    if isinstance(value, list) and value:
        value = value[0]
    if isinstance(value, Mapping):
        value = value.get("url")
    if isinstance(value, str) and value.startswith(("https://", "http://")):
        return value
    return None


def video_url(result: Any) -> str | None:
    """The clip in a result body: `output.video` (as public clients read RunComfy results), else a bare
    `video`, else whatever single URL the output is."""
    if not isinstance(result, Mapping):
        return None
    output = result.get("output")
    candidates = [result.get("video"), result.get("video_url"), result.get("outputs")]
    if isinstance(output, Mapping):
        candidates = [output.get("video"), output.get("videos"), output.get("video_url"), output.get("url"),
                      *candidates]  # fmt: skip
    else:
        candidates.append(output)
    for candidate in candidates:
        url = _url_in(candidate)
        if url:
            return url
    return None


class RunComfyProvider(HostedProvider):
    name = "runcomfy"
    display_name = "RunComfy"
    capabilities = Capabilities(
        tiers=frozenset(TIER_PATH),
        video_reference=True,
        elements="none",  # not documented for this model on RunComfy (❓)
        start_end_frame=False,  # not offered (❓)
        multi_prompt="indexed",
        prompt_refs=RefStyle.FIGURE,  # RunComfy's own example prompt says "Figure 1", "Figure 2"
        upload=False,  # no upload API: inputs must be public HTTPS URLs
        inline_base64=False,  # data URIs are documented for the Serverless API only
        webhook="none",
        cancel="queued",
        reconcile=False,  # no idempotency key and no way to list requests
    )

    def auth_headers(self) -> Mapping[str, str]:
        key = self.settings.secret("RUNCOMFY_API_KEY")
        return {"Authorization": f"Bearer {key.get_secret_value() if key else ''}"}

    def classifier(self) -> Classifier:
        by_status = default_classify(self.name)

        def classify(response: httpx.Response, body: Any) -> ProviderError:
            error = by_status(response, body)
            code = ERROR_CODES.get(_error_code(body) or 0)
            if code is not None and code is not error.code:
                error = ProviderError(code, error.message, provider=self.name, http_status=error.http_status,
                                      retry_after=error.retry_after)  # fmt: skip
            return error

        return classify

    # --- inputs ------------------------------------------------------------------------------------
    def media_url(self, ref: MediaRef) -> str | None:
        """A public HTTPS URL RunComfy can fetch: reelbot's published copy (it does not expire, unlike a
        Discord attachment link), else the https:// link the file came from; None when there is neither."""
        published = self.settings.public_media_url
        if published and published.startswith("https://"):
            return f"{published.rstrip('/')}/{quote(Path(ref.path).name)}"
        if ref.source_url and ref.source_url.startswith("https://"):
            return ref.source_url
        return None

    def check(self, request: GenerationRequest) -> list[Violation]:
        out = super().check(request)
        local = [str(i) for i, ref in enumerate(request.images, 1) if self.media_url(ref) is None]
        if local:
            which = f"image {local[0]} has" if len(local) == 1 else f"images {', '.join(local)} have"
            out.append(Violation("images", self._no_url(which)))
        if request.video is not None and self.media_url(request.video) is None:
            out.append(Violation("video", self._no_url("the reference video has")))
        return out

    def _no_url(self, which: str) -> str:
        fix = (
            "REELBOT_PUBLIC_MEDIA_URL must be an https:// address"
            if self.settings.public_media_url
            else "set REELBOT_PUBLIC_MEDIA_URL to where reelbot's media folder is published, or give the files as"
            " https:// links"
        )
        return (
            f"{self.display_name} needs publicly reachable https:// input URLs and has no upload API, but {which}"
            f" none: {fix}"
        )

    async def _input_url(self, ref: MediaRef) -> str:
        url = self.media_url(ref)
        if url is None:  # check() refuses this before anything is sent
            raise ProviderError(ErrorCode.INVALID_INPUT, "an input has no public URL", provider=self.name)
        return url

    # --- the task ----------------------------------------------------------------------------------
    async def submit(self, request: GenerationRequest, *, job_id: str, webhook_url: str | None = None) -> TaskHandle:
        body = await shared_fields(request, self._input_url)
        path = f"/v1/models/kling/kling-video-o3/{TIER_PATH[request.tier]}/reference-to-video"
        reply = await self.api.submit(path, json_body=body)
        request_id = reply.get("request_id") if isinstance(reply, Mapping) else None
        if not isinstance(request_id, str) or not request_id:
            raise ProviderError(
                ErrorCode.SUBMIT_AMBIGUOUS,
                f"the submit reply carried no request_id: {provider_message(reply, 'empty reply')}",
                provider=self.name,
            )
        return TaskHandle(
            provider=self.name,
            task_id=request_id,
            poll_url=self._own(reply.get("status_url")) or _request_path(request_id, "status"),
            result_url=self._own(reply.get("result_url")) or _request_path(request_id, "result"),
            cancel_url=self._own(reply.get("cancel_url")) or _request_path(request_id, "cancel"),
        )

    def _own(self, url: Any) -> str | None:
        """A URL the API handed back, kept only when it is on the API's own host: the Bearer key goes with
        every request to it."""
        if not isinstance(url, str):
            return None
        ours, theirs = urlsplit(self.api.base_url), urlsplit(url)
        return url if (theirs.scheme, theirs.netloc) == (ours.scheme, ours.netloc) else None

    async def poll(self, handle: TaskHandle) -> TaskState:
        reply = await self.api.get(handle.poll_url or _request_path(handle.task_id, "status"))
        if not isinstance(reply, Mapping) or not isinstance(reply.get("status"), str):
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, "unreadable request status", provider=self.name)
        word = reply["status"].lower()
        if word == "completed":
            if reply.get("error"):
                return self._failed(reply)
            return await self._result(handle)
        status = QUEUE_STATUS.get(word)
        if status is None:
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, f"unknown status {reply['status']!r}", provider=self.name)
        if status is TaskStatus.FAILED:
            return self._failed(reply)
        position = reply.get("queue_position")
        queued = isinstance(position, int) and not isinstance(position, bool) and status is TaskStatus.QUEUED
        return TaskState(status, queue_position=position if queued else None, raw=reply)

    async def _result(self, handle: TaskHandle) -> TaskState:
        """The request finished: its result says whether it produced a clip."""
        try:
            result = await self.api.get(handle.result_url or _request_path(handle.task_id, "result"))
        except ProviderError as exc:
            if exc.code.retryable or exc.code in (ErrorCode.AUTH, ErrorCode.INSUFFICIENT_FUNDS):
                raise  # not an answer about the task: poll again later
            # a finished request whose result is an error body: the generation failed, for that reason
            error = ProviderError(failure_code(exc.message), exc.message, provider=self.name)
            return TaskState(TaskStatus.FAILED, error=error)
        if not isinstance(result, Mapping):
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, "unreadable request result", provider=self.name)
        url = video_url(result)
        if str(result.get("status", "")).lower() in _FAILED_RESULTS or (result.get("error") and not url):
            return self._failed(result)
        if not url:
            error = ProviderError(ErrorCode.OUTPUT_INVALID, "completed without a video", provider=self.name)
            return TaskState(TaskStatus.FAILED, error=error, raw=result)
        return TaskState(TaskStatus.SUCCEEDED, progress=1.0, output_url=url, raw=result)

    def _failed(self, body: Mapping[str, Any]) -> TaskState:
        """A failed generation keeps RunComfy's own words; moderation is told apart by them."""
        message = provider_message(body, f"the request ended as {body.get('status')}")
        error = ProviderError(failure_code(message), message, provider=self.name)
        return TaskState(TaskStatus.FAILED, error=error, raw=body)

    async def cancel(self, handle: TaskHandle) -> bool:
        """Only a queued request can be cancelled; a refusal (it already started) is an answer, not an error."""
        try:
            reply = await self.api.send("POST", handle.cancel_url or _request_path(handle.task_id, "cancel"))
        except ProviderError:
            return False
        if isinstance(reply, Mapping):
            if reply.get("success") is False:
                return False
            status = reply.get("status")
            if isinstance(status, str) and status.lower() not in _CANCEL_CONFIRMED:
                return False
        return True

    # --- webhooks ----------------------------------------------------------------------------------
    def parse_webhook(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        token: str | None = None,
        handle: TaskHandle | None = None,
    ) -> WebhookEvent:
        # RunComfy documents webhooks for its Serverless API only (`?webhook=`, unsigned); whether the Model
        # API honours them is not documented, so reelbot registers none and follows RunComfy by polling.
        raise WebhookRejected(f"{self.display_name} does not take webhooks")


def _request_path(request_id: str, what: str) -> str:
    return f"/v1/requests/{quote(request_id, safe='')}/{what}"
