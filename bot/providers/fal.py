"""fal: `fal-ai/kling-video/o3/{standard,pro,4k}/reference-to-video` on fal's queue.

Documented API (PROVIDERS.md §3.4): `Authorization: Key $FAL_KEY`; submit POST {queue}/<endpoint>
(`?fal_webhook=<url>`) → `{request_id, response_url, status_url, cancel_url}`. Status and result URLs drop the
endpoint's sub-path (`/fal-ai/kling-video/requests/{id}/…`), so the returned URLs are stored and reused.
Status `IN_QUEUE` (queue_position) → `IN_PROGRESS` → `COMPLETED` (which may carry `error`/`error_type`);
the result `{"video": {"url", …}}` is a separate GET. Cancel is `PUT …/cancel`, only before processing.
Errors are `{"detail": [{loc, msg, type}]}` (branch on `type`) or `{detail: str, error_type}` for request
errors, with an `X-Fal-Retryable` header. Webhooks are signed with Ed25519 keys published as JWKS.

Local images are uploaded to fal's CDN the way fal-client does it (fal_client/client.py, `AsyncClient.upload`):
POST {FAL_STORAGE_URL}/storage/auth/token?storage_type=fal-cdn-v3 with the key → `{token, token_type,
base_url, expires_at}`, then POST {base_url}/files/upload with the raw bytes, `Authorization: <type> <token>`,
`Content-Type` and `X-Fal-File-Name` → `{access_url}`. This is chosen over data URIs because fal documents
data URIs only for "some models" and not for this one; URLs work for all.
"""

from __future__ import annotations

import json
import logging
import time
from collections.abc import Mapping
from datetime import datetime
from typing import Any
from urllib.parse import quote, urlsplit

import httpx
from cryptography.hazmat.primitives.asymmetric.ed25519 import Ed25519PublicKey

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
from bot.providers.http import Classifier, default_classify, failure_code, parse_retry_after, provider_message
from bot.providers.media_upload import mime_of, read_bytes, upload_name
from bot.providers.webhooks import ReplayGuard, ed25519_keys_from_jwks, verify_fal
from bot.request import Element, GenerationRequest, MediaRef

log = logging.getLogger(__name__)

APP = "fal-ai/kling-video"
TIER_PATH = {"standard": "standard", "pro": "pro", "4k": "4k"}
JWKS_MAX_AGE_S = 24 * 3600  # fal: cache the published keys for at most 24 h
TOKEN_MARGIN_S = 60  # renew a CDN token this long before it expires
# ❓ fal's default CDN retention is not documented: reuse an uploaded file for an hour only.
UPLOAD_REUSE_S = 3600

# detail[].type (model errors) and error_type (request errors) → our codes; anything else by HTTP status.
ERROR_TYPES = {
    "content_policy_violation": ErrorCode.CONTENT_POLICY,
    "file_download_error": ErrorCode.INPUT_FETCH_FAILED,
    "image_load_error": ErrorCode.INPUT_FETCH_FAILED,
    "request_timeout": ErrorCode.GENERATION_TIMEOUT,
    "startup_timeout": ErrorCode.PROVIDER_TRANSIENT,
    "generation_timeout": ErrorCode.GENERATION_TIMEOUT,
    "runner_scheduling_failure": ErrorCode.PROVIDER_TRANSIENT,
    "runner_connection_timeout": ErrorCode.PROVIDER_TRANSIENT,
    "runner_disconnected": ErrorCode.PROVIDER_TRANSIENT,
    "runner_connection_refused": ErrorCode.PROVIDER_TRANSIENT,
    "runner_connection_error": ErrorCode.PROVIDER_TRANSIENT,
    "runner_incomplete_response": ErrorCode.PROVIDER_TRANSIENT,
    "runner_server_error": ErrorCode.PROVIDER_TRANSIENT,
    "internal_server_error": ErrorCode.PROVIDER_TRANSIENT,
    "internal_error": ErrorCode.PROVIDER_TRANSIENT,
    "downstream_service_error": ErrorCode.PROVIDER_TRANSIENT,
    "downstream_service_unavailable": ErrorCode.PROVIDER_TRANSIENT,
}
# Not a documented type: how a cancelled request reports itself is ❓; treated like the nearest request error.
CANCELLED_TYPES = ("client_cancelled", "request_cancelled", "cancelled")
# ❓ fal documents no "out of credit" type; its gateway words it in the message ("Exhausted balance").
_FUNDS_WORDS = ("exhausted balance", "insufficient balance", "insufficient funds", "top up your balance")


def error_details(body: Any) -> tuple[list[str], str]:
    """(types, message) from either documented error shape."""
    if not isinstance(body, Mapping):
        return [], provider_message(body)
    detail = body.get("detail")
    types: list[str] = []
    if isinstance(detail, list):
        items = [item for item in detail if isinstance(item, Mapping)]
        types = [str(item.get("type")) for item in items if item.get("type")]
        message = "; ".join(str(item.get("msg")) for item in items if item.get("msg"))
    else:
        message = provider_message(body)
    if isinstance(body.get("error_type"), str):
        types.append(body["error_type"])
    if not message and isinstance(body.get("error"), str):
        message = body["error"]
    return types, message


def code_for(types: list[str], fallback: ErrorCode) -> ErrorCode:
    """The first documented type we know decides; otherwise the fallback (HTTP status or message)."""
    for kind in types:
        if kind in ERROR_TYPES:
            return ERROR_TYPES[kind]
    return fallback


class FalProvider(HostedProvider):
    name = "fal"
    display_name = "fal"
    capabilities = Capabilities(
        tiers=frozenset({"standard", "pro", "4k"}),
        # The R2V endpoint takes a video only as an element made from a video (`elements[].video_url`), which is
        # a subject, not a motion/style reference; fal's separate video-to-video/reference endpoint is not used.
        video_reference=False,
        elements="inline",
        start_end_frame=True,
        multi_prompt="list",
        # fal documents only shot_type `customize` (the multi-shot mode); a single prompt is sent without it.
        prompt_refs=RefStyle.AT,
        upload=True,
        webhook="ed25519",
        cancel="queued",
        reconcile=False,  # no idempotency key: a lost submit reply cannot be matched to a request
        keep_original_sound=False,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._uploads: dict[str, tuple[str, float]] = {}  # sha256 -> (url, uploaded at)
        self._cdn_token: tuple[str, str, float] | None = None  # (authorization, base_url, expires_at)
        self._jwks: list[Ed25519PublicKey] = []
        self._jwks_fetched_at = 0.0
        self._replays = ReplayGuard()

    def auth_headers(self) -> Mapping[str, str]:
        key = self.settings.secret("FAL_KEY")
        return {"Authorization": f"Key {key.get_secret_value() if key else ''}"}

    def classifier(self) -> Classifier:
        by_status = default_classify(self.name)

        def classify(response: httpx.Response, body: Any) -> ProviderError:
            """Branch on the documented `type`, not `msg`; X-Fal-Retryable marks transient refusals."""
            error = by_status(response, body)
            types, message = error_details(body)
            header_type = response.headers.get("x-fal-error-type")
            if header_type:
                types.append(header_type)
            code = code_for(types, error.code)
            if code in (ErrorCode.AUTH, ErrorCode.RATE_LIMITED) and any(w in message.lower() for w in _FUNDS_WORDS):
                code = ErrorCode.INSUFFICIENT_FUNDS
            elif code is ErrorCode.INVALID_INPUT and response.headers.get("x-fal-retryable", "").lower() == "true":
                code = ErrorCode.PROVIDER_TRANSIENT
            return ProviderError(code, message or error.message, provider=self.name, http_status=error.http_status,
                                 retry_after=parse_retry_after(response.headers.get("retry-after")))  # fmt: skip

        return classify

    # --- inputs ------------------------------------------------------------------------------------
    async def cdn_token(self) -> tuple[str, str]:
        """A CDN upload token, reused until shortly before it expires."""
        if self._cdn_token is None or self._cdn_token[2] - TOKEN_MARGIN_S <= time.time():
            storage = str(self.settings.fal_storage_url).rstrip("/")
            reply = await self.api.send("POST", f"{storage}/storage/auth/token", json_body={},
                                        params={"storage_type": "fal-cdn-v3"})  # fmt: skip
            if not isinstance(reply, Mapping) or not reply.get("token") or not reply.get("base_url"):
                raise ProviderError(ErrorCode.INPUT_FETCH_FAILED, "fal's storage gave no upload token",
                                    provider=self.name)  # fmt: skip
            authorization = f"{reply.get('token_type') or 'Bearer'} {reply['token']}"
            self._cdn_token = (authorization, str(reply["base_url"]).rstrip("/"), _expiry(reply.get("expires_at")))
        return self._cdn_token[0], self._cdn_token[1]

    async def upload(self, ref: MediaRef) -> str:
        cached = self._uploads.get(ref.sha256)
        if cached and time.time() - cached[1] < UPLOAD_REUSE_S:
            return cached[0]
        authorization, cdn = await self.cdn_token()
        headers = {"Authorization": authorization, "Content-Type": mime_of(ref), "X-Fal-File-Name": upload_name(ref)}
        try:
            reply = await self.api.send("POST", f"{cdn}/files/upload", content=await read_bytes(ref), headers=headers)
        except ProviderError as exc:
            if exc.code is ErrorCode.AUTH:
                self._cdn_token = None  # revoked or expired early: the next upload asks for a new one
            raise
        url = reply.get("access_url") if isinstance(reply, Mapping) else None
        if not url:
            raise ProviderError(ErrorCode.INPUT_FETCH_FAILED, "the fal CDN upload returned no URL", provider=self.name)
        self._uploads[ref.sha256] = (str(url), time.time())
        return str(url)

    async def element(self, element: Element) -> dict[str, Any]:
        assert element.frontal is not None  # check() refused element ids
        return {
            "frontal_image_url": await self.upload(element.frontal),
            "reference_image_urls": [await self.upload(ref) for ref in element.references],
        }

    async def build_body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {
            "duration": str(request.duration),  # a string enum "3".."15" on fal
            "aspect_ratio": request.aspect_ratio,
            "generate_audio": request.sound,
        }
        if request.multi_prompt:
            # ❓ KlingV3MultiPromptElement's duration type is not spelled out; a string matches the top-level
            # DurationEnum and is also what a lenient integer field would accept.
            body["multi_prompt"] = [
                {"prompt": rewrite(shot.prompt, RefStyle.AT), "duration": str(shot.duration)}
                for shot in request.multi_prompt
            ]
            body["shot_type"] = "customize"
        else:
            body["prompt"] = rewrite(request.prompt or "", RefStyle.AT)
        if request.images:
            body["image_urls"] = [await self.upload(ref) for ref in request.images]
        if request.elements:
            body["elements"] = [await self.element(element) for element in request.elements]
        if request.start_frame is not None:
            body["start_image_url"] = await self.upload(request.start_frame)
        if request.end_frame is not None:
            body["end_image_url"] = await self.upload(request.end_frame)
        return body

    # --- the task ----------------------------------------------------------------------------------
    def _ours(self, url: Any) -> str | None:
        """A URL from fal's reply, if it points at the configured queue host (it will carry our key)."""
        if not isinstance(url, str):
            return None
        base, given = urlsplit(self.api.base_url), urlsplit(url)
        return url if (given.scheme, given.netloc) == (base.scheme, base.netloc) else None

    def _request_url(self, request_id: str, suffix: str = "") -> str:
        return f"/{APP}/requests/{quote(request_id)}{suffix}"

    async def submit(self, request: GenerationRequest, *, job_id: str, webhook_url: str | None = None) -> TaskHandle:
        body = await self.build_body(request)
        params = {"fal_webhook": webhook_url} if webhook_url else None
        path = f"/{APP}/o3/{TIER_PATH[request.tier]}/reference-to-video"
        reply = await self.api.submit(path, json_body=body, params=params)
        request_id = reply.get("request_id") if isinstance(reply, Mapping) else None
        if not request_id:
            raise ProviderError(
                ErrorCode.SUBMIT_AMBIGUOUS,
                f"the submit reply carried no request id: {provider_message(reply, 'empty reply')}",
                provider=self.name,
            )
        request_id = str(request_id)
        return TaskHandle(
            provider=self.name,
            task_id=request_id,
            poll_url=self._ours(reply.get("status_url")) or self._request_url(request_id, "/status"),
            result_url=self._ours(reply.get("response_url")) or self._request_url(request_id),
            cancel_url=self._ours(reply.get("cancel_url")) or self._request_url(request_id, "/cancel"),
        )

    async def poll(self, handle: TaskHandle) -> TaskState:
        status = await self.api.get(handle.poll_url or self._request_url(handle.task_id, "/status"))
        if not isinstance(status, Mapping) or "status" not in status:
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, "unreadable request status", provider=self.name)
        word = str(status["status"]).upper()
        if word == "IN_QUEUE":
            position = status.get("queue_position")
            return TaskState(TaskStatus.QUEUED, queue_position=position if isinstance(position, int) else None,
                             raw=status)  # fmt: skip
        if word == "IN_PROGRESS":
            return TaskState(TaskStatus.RUNNING, raw=status)
        if word in ("CANCELLED", "CANCELED"):
            return TaskState(TaskStatus.CANCELED, raw=status)
        if word != "COMPLETED":
            raise ProviderError(
                ErrorCode.PROVIDER_TRANSIENT, f"unknown status {status['status']!r}", provider=self.name
            )
        result_url = handle.result_url or self._request_url(handle.task_id)
        if status.get("error"):
            return await self._failed(status, result_url)
        try:
            result = await self.api.get(result_url)
        except ProviderError as exc:
            if exc.code.retryable:
                raise  # the result could not be read this time: poll again later
            return self._failed_state(exc)  # a 4xx result: the request itself failed
        return self.result_state(result)

    async def _failed(self, status: Mapping[str, Any], result_url: str) -> TaskState:
        """COMPLETED with an error. The result body usually names the typed reason (e.g. a content policy
        refusal): read it once, without retries, and fall back to the status's own words."""
        message = str(status.get("error"))
        error_type = str(status.get("error_type") or "")
        fallback = ProviderError(code_for([error_type], failure_code(message)), message, provider=self.name)
        try:
            result = await self.api.send("GET", result_url)
        except ProviderError as exc:
            typed = exc if exc.code not in (ErrorCode.PROVIDER_TRANSIENT, ErrorCode.RATE_LIMITED) else None
            return self._failed_state(typed or fallback, cancelled=error_type in CANCELLED_TYPES)
        if isinstance(result, Mapping) and isinstance(result.get("video"), Mapping):
            log.warning("fal request %s reported an error but has a video; treating it as failed", result_url)
        return self._failed_state(fallback, cancelled=error_type in CANCELLED_TYPES)

    def _failed_state(self, error: ProviderError, *, cancelled: bool = False) -> TaskState:
        if cancelled:
            return TaskState(TaskStatus.CANCELED, error=ProviderError(ErrorCode.CANCELED, error.message,
                                                                      provider=self.name))  # fmt: skip
        return TaskState(TaskStatus.FAILED, error=error)

    def result_state(self, result: Any) -> TaskState:
        video = result.get("video") if isinstance(result, Mapping) else None
        url = video.get("url") if isinstance(video, Mapping) else None
        if not url:
            error = ProviderError(ErrorCode.OUTPUT_INVALID, "the result named no video", provider=self.name)
            return TaskState(TaskStatus.FAILED, error=error, raw=result)
        return TaskState(TaskStatus.SUCCEEDED, progress=1.0, output_url=str(url), raw=result)

    async def cancel(self, handle: TaskHandle) -> bool:
        """Only a queued request can be cancelled; fal answers 202 CANCELLATION_REQUESTED, or 400 when the
        request is already running or done."""
        try:
            reply = await self.api.send("PUT", handle.cancel_url or self._request_url(handle.task_id, "/cancel"))
        except ProviderError as exc:
            log.info("fal cancel of %s refused: %s", handle.task_id, exc.message)
            return False
        return not (isinstance(reply, Mapping) and reply.get("status") == "ALREADY_COMPLETED")

    # --- webhooks ----------------------------------------------------------------------------------
    async def prepare_webhooks(self) -> None:
        """Fetch fal's published keys (public: no key is sent), at most once a day."""
        if self._jwks and time.time() - self._jwks_fetched_at < JWKS_MAX_AGE_S:
            return
        url = str(self.settings.fal_jwks_url)
        try:
            response = await self.http.get(url, timeout=self.settings.http_timeout_s)
            response.raise_for_status()
            keys = ed25519_keys_from_jwks(response.json())
        except (httpx.HTTPError, ValueError) as exc:
            why = f"could not read fal's webhook keys ({type(exc).__name__})"
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, why, provider=self.name) from None
        if not keys:
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, "fal's JWKS held no Ed25519 key", provider=self.name)
        self._jwks, self._jwks_fetched_at = keys, time.time()

    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, *, token: str | None = None, handle: TaskHandle | None = None
    ) -> WebhookEvent:
        if not self._jwks or time.time() - self._jwks_fetched_at >= JWKS_MAX_AGE_S:
            raise WebhookRejected("fal's webhook keys are not loaded (or older than a day): call prepare_webhooks")
        request_id = verify_fal(headers, body, self._jwks, now=time.time())
        signature = {k.lower(): v for k, v in headers.items()}["x-fal-webhook-signature"]
        self._replays.check(signature)  # Ed25519 signatures are deterministic: the same delivery, the same bytes
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookRejected("the signed body is not JSON") from None
        if not isinstance(payload, Mapping) or str(payload.get("request_id")) != request_id:
            raise WebhookRejected("the body names another request than the signed header")
        return WebhookEvent(task_id=request_id, state=self.webhook_state(payload))

    def webhook_state(self, payload: Mapping[str, Any]) -> TaskState | None:
        """`status: OK` with the result as `payload`, or `ERROR` with `error` and the error body as `payload`.
        None (confirm by polling) when fal could not include the payload (`payload_error`)."""
        inner = payload.get("payload")
        if payload.get("status") == "OK":
            if payload.get("payload_error") or not isinstance(inner, Mapping):
                return None
            return self.result_state(inner)
        types, message = error_details(inner)
        message = message or str(payload.get("error") or "the request failed")
        code = code_for(types, failure_code(message))
        return TaskState(TaskStatus.FAILED, error=ProviderError(code, message, provider=self.name), raw=payload)


def _expiry(value: Any) -> float:
    """A token's expiry as a timestamp; unknown → treat it as short-lived (10 minutes)."""
    if isinstance(value, str):
        try:
            return datetime.fromisoformat(value.replace("Z", "+00:00")).timestamp()
        except ValueError:
            pass
    return time.time() + 600
