"""Atlas Cloud: the WaveSpeed model ids `kwaivgi/kling-video-o3-{std,pro}/reference-to-video` on Atlas's own API.

Documented API (PROVIDERS.md §3.2): Bearer auth; submit POST /api/v1/model/generateVideo with
`{"model": "<model id>", …the WaveSpeed fields}`; poll GET /api/v1/model/prediction/{id} → `data.status`
processing | completed | failed (public code also sees created/starting/queued, `succeeded`, timeout,
canceled) and `data.outputs[0]`; uploads POST /api/v1/model/uploadMedia (multipart `file`) → `{url}`,
temporary. A failed prediction answers HTTP 200 with the reason in the body, and every body carries
`has_nsfw_contents`. Webhooks, cancel, pricing and limits are not documented (❓).

The request mapping and the prediction parser are WaveSpeed's: this adapter only changes what Atlas changes.
"""

from __future__ import annotations

import re
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import quote

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
from bot.providers.http import Classifier, default_classify, provider_message
from bot.providers.media_upload import mime_of, read_bytes, upload_name
from bot.providers.wavespeed import WaveSpeedProvider, model_path, shared_fields
from bot.request import Element, GenerationRequest, MediaRef, Violation
from bot.settings import Settings

SUBMIT_PATH = "/api/v1/model/generateVideo"
UPLOAD_PATH = "/api/v1/model/uploadMedia"
MAX_ELEMENTS = 6  # Atlas's O3 schema: at most 6 elements (◐ public code checked against the model page)
# Atlas keeps uploads only "temporarily" (no TTL published, ❓); reuse a link for an hour at most, well inside
# any plausible lifetime, so a later job never gets a link that may already have been cleaned up.
UPLOAD_REUSE_S = 3600.0

# Atlas's words → WaveSpeed's, so WaveSpeed's parser reads Atlas's predictions unchanged.
STATUS_ALIASES = {"succeeded": "completed", "starting": "created", "queued": "created", "pending": "created"}
_TERMINAL_FAILURES = frozenset({"failed", "timeout", "canceled", "cancelled"})

# Atlas passes the upstream Kling service code through as `ret` (◐: `multi_prompt` over 512 chars → ret 1201).
# Kling's table: 1000–1004 auth, 1100–1102 account/arrears/resource pack (sent as HTTP 429), 12xx bad
# parameters, 1301 content policy, 1302/1303 rate limits, 5xxx upstream faults.
KLING_CODES: dict[int, ErrorCode] = {
    **dict.fromkeys((1000, 1001, 1002, 1003, 1004), ErrorCode.AUTH),
    **dict.fromkeys((1100, 1101, 1102), ErrorCode.INSUFFICIENT_FUNDS),
    **dict.fromkeys((1200, 1201, 1202, 1203), ErrorCode.INVALID_INPUT),
    1301: ErrorCode.CONTENT_POLICY,
    **dict.fromkeys((1302, 1303), ErrorCode.RATE_LIMITED),
    **dict.fromkeys((5000, 5001, 5002), ErrorCode.PROVIDER_TRANSIENT),
}
_ELEMENT_REF = re.compile(r"\bElement (\d+)\b")


def _service_code(body: Any) -> int | None:
    """The non-HTTP error code of an Atlas body (`ret`, or a `code` that is not a success), if any."""
    if not isinstance(body, Mapping):
        return None
    for key in ("ret", "code"):
        value = body.get(key)
        if isinstance(value, int) and not isinstance(value, bool) and value not in (0, 200):
            return value
    return None


def _refusal(code: int | None) -> ErrorCode | None:
    """What an error code inside a 2xx submit reply means; None when it does not prove a refusal."""
    if code is None:
        return None
    if code in KLING_CODES:
        return KLING_CODES[code]
    if code in (401, 403):
        return ErrorCode.AUTH
    if code == 402:
        return ErrorCode.INSUFFICIENT_FUNDS
    if code == 429:
        return ErrorCode.RATE_LIMITED
    if 400 <= code < 500:
        return ErrorCode.INVALID_INPUT
    return None  # a server-side code: the prediction may or may not exist


def _insufficient_funds(message: str) -> bool:
    lowered = message.lower()
    return "insufficient" in lowered and any(word in lowered for word in ("balance", "credit", "fund"))


def atlas_prompt(text: str) -> str:
    """Images stay "Figure N" (WaveSpeed's natural syntax); elements become `<<<element_N>>>`, the syntax
    Atlas's O3 schema binds `elements` by (◐ public code). `text` is already rewritten to the FIGURE style,
    in which every element reference reads exactly "Element N"."""
    return _ELEMENT_REF.sub(r"<<<element_\1>>>", text)


class TerminalReply(ProviderError):
    """A non-2xx poll reply that carries a finished prediction (public Atlas code reports some failed
    predictions as HTTP 5xx with the terminal payload): an answer, not an outage."""

    def __init__(self, error: ProviderError, body: Mapping[str, Any]) -> None:
        super().__init__(ErrorCode.INVALID_INPUT, error.message, provider=error.provider, http_status=error.http_status)
        self.body = body


class AtlasCloudProvider(WaveSpeedProvider):
    name = "atlascloud"
    display_name = "Atlas Cloud"
    capabilities = Capabilities(
        # Atlas lists the -std and -pro reference-to-video ids; a -4k id is not documented there (❓).
        tiers=frozenset({"standard", "pro"}),
        video_reference=True,
        # ◐ Atlas's O3 schema takes inline `elements` (frontal image + reference views) on both tiers.
        elements="inline",
        start_end_frame=False,  # not offered for reference-to-video (❓, as WaveSpeed)
        multi_prompt="indexed",
        prompt_refs=RefStyle.FIGURE,
        upload=True,
        webhook="none",  # not documented for Atlas (❓): reelbot polls
        cancel="none",
        reconcile=False,  # no idempotency key: a lost submit reply cannot be matched to a prediction
    )

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(settings, http)
        self._atlas_uploads: dict[str, tuple[str, float]] = {}

    def auth_headers(self) -> Mapping[str, str]:
        key = self.settings.secret("ATLASCLOUD_API_KEY")
        return {"Authorization": f"Bearer {key.get_secret_value() if key else ''}"}

    def classifier(self) -> Classifier:
        """HTTP status first, then what the body says: a Kling `ret` code or an out-of-credit message decides
        over the status (Kling reports an exhausted account as HTTP 429, like a rate limit)."""
        by_status = default_classify(self.name)

        def classify(response: httpx.Response, body: Any) -> ProviderError:
            error = by_status(response, body)
            data = body.get("data") if isinstance(body, Mapping) else None
            if isinstance(data, Mapping) and str(data.get("status", "")).lower() in _TERMINAL_FAILURES:
                return TerminalReply(error, body)
            code = KLING_CODES.get(_service_code(body) or 0)
            if code is None and _insufficient_funds(error.message):
                code = ErrorCode.INSUFFICIENT_FUNDS
            if code is not None and code is not error.code:
                error = ProviderError(code, error.message, provider=self.name, http_status=error.http_status,
                                      retry_after=error.retry_after)  # fmt: skip
            return error

        return classify

    def check(self, request: GenerationRequest) -> list[Violation]:
        # The generic checks only: WaveSpeed's "element ids on pro only" rule does not apply to Atlas's
        # inline elements, which both tiers take.
        out = HostedProvider.check(self, request)
        if len(request.elements) > MAX_ELEMENTS:
            out.append(Violation("elements", f"{self.display_name} accepts at most {MAX_ELEMENTS} elements"))
        return out

    # --- inputs ------------------------------------------------------------------------------------
    async def upload(self, ref: MediaRef) -> str:
        """Local files go through Atlas's media upload, which answers with a temporary URL."""
        cached = self._atlas_uploads.get(ref.sha256)
        if cached and time.monotonic() - cached[1] < UPLOAD_REUSE_S:
            return cached[0]
        files = {"file": (upload_name(ref), await read_bytes(ref), mime_of(ref))}
        body = await self.api.send("POST", UPLOAD_PATH, files=files)
        url = _upload_url(body)
        if not url:
            raise ProviderError(ErrorCode.INPUT_FETCH_FAILED, "the media upload returned no URL", provider=self.name)
        self._atlas_uploads[ref.sha256] = (url, time.monotonic())
        return url

    async def build_body(self, request: GenerationRequest) -> dict[str, Any]:
        body: dict[str, Any] = {"model": model_path(request.tier), **await shared_fields(request, self.upload)}
        body["prompt"] = atlas_prompt(body["prompt"])
        if "multi_prompt" in body:
            for shot in body["multi_prompt"]:
                shot["prompt"] = atlas_prompt(shot["prompt"])
            body["multi_shot"] = True  # ◐ Atlas's schema switches multi-shot on with this flag
        if request.elements:
            body["elements"] = [await self._element(i, element) for i, element in enumerate(request.elements, 1)]
        return body

    async def _element(self, number: int, element: Element) -> dict[str, Any]:
        """◐ Atlas's element shape: a frontal image plus the other views of the same subject."""
        assert element.frontal is not None  # check() refuses element ids: Atlas takes element images only
        return {
            "element_name": f"element_{number}",
            "reference_type": "image_refer",
            "frontal_image": await self.upload(element.frontal),
            "refer_images": [await self.upload(view) for view in element.references],
        }

    # --- the task ----------------------------------------------------------------------------------
    async def submit(self, request: GenerationRequest, *, job_id: str, webhook_url: str | None = None) -> TaskHandle:
        body = await self.build_body(request)
        reply = await self.api.submit(SUBMIT_PATH, json_body=body)
        task_id = _prediction_id(reply)
        if not task_id:
            code = _service_code(reply)
            refused = _refusal(code)
            if refused is not None:  # an explicit refusal inside a 2xx: nothing was accepted
                raise ProviderError(refused, provider_message(reply, f"refused with code {code}"), provider=self.name)
            raise ProviderError(
                ErrorCode.SUBMIT_AMBIGUOUS,
                f"the submit reply carried no prediction id: {provider_message(reply, 'empty reply')}",
                provider=self.name,
            )
        return TaskHandle(provider=self.name, task_id=task_id, poll_url=_poll_path(task_id))

    async def poll(self, handle: TaskHandle) -> TaskState:
        try:
            reply = await self.api.get(handle.poll_url or _poll_path(handle.task_id))
        except TerminalReply as answer:
            reply = answer.body
        return self.parse_state(reply)

    def parse_state(self, reply: Any) -> TaskState:
        data = reply.get("data", reply) if isinstance(reply, Mapping) else None
        if not isinstance(data, Mapping) or "status" not in data:
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, "unreadable prediction", provider=self.name)
        status = str(data["status"]).lower()
        normal = {**data, "status": STATUS_ALIASES.get(status, status)}
        if not normal.get("outputs") and normal.get("output"):  # some replies carry `output`, a URL or a list
            output = normal["output"]
            normal["outputs"] = output if isinstance(output, list) else [output]
        if normal["status"] in _TERMINAL_FAILURES and not normal.get("error") and isinstance(reply, Mapping):
            # a failed prediction's reason is sometimes only in the envelope's message
            envelope = provider_message({k: v for k, v in reply.items() if k != "data"})
            if envelope and envelope.lower() != "success":
                normal["error"] = envelope
        state = super().parse_state({"data": normal})
        nsfw = any(flag is True for flag in (data.get("has_nsfw_contents") or []))
        if state.status is TaskStatus.FAILED and nsfw and state.error is not None:
            # the prediction failed and its output was flagged: that is the content filter speaking
            error = ProviderError(ErrorCode.CONTENT_POLICY, state.error.message, provider=self.name)
            return TaskState(TaskStatus.FAILED, nsfw=True, error=error, raw=state.raw)
        return state

    # --- webhooks ----------------------------------------------------------------------------------
    async def prepare_webhooks(self) -> None:
        """Atlas documents no webhooks; nothing to prepare (WaveSpeed's secret endpoint is not Atlas's)."""

    def parse_webhook(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        token: str | None = None,
        handle: TaskHandle | None = None,
    ) -> WebhookEvent:
        raise WebhookRejected(f"{self.display_name} does not take webhooks")


def _poll_path(task_id: str) -> str:
    return f"/api/v1/model/prediction/{quote(task_id, safe='')}"


def _prediction_id(reply: Any) -> str | None:
    """`data.id` (current docs); older docs answer a top-level `predictionId`."""
    if not isinstance(reply, Mapping):
        return None
    data = reply.get("data")
    for value in (data.get("id") if isinstance(data, Mapping) else None, reply.get("predictionId"), reply.get("id")):
        if isinstance(value, str | int) and not isinstance(value, bool) and str(value):
            return str(value)
    return None


def _upload_url(body: Any) -> str | None:
    """The documented `{url}`; Atlas's own tools read `data.download_url` (WaveSpeed's shape), so take either."""
    if not isinstance(body, Mapping):
        return None
    data = body.get("data") if isinstance(body.get("data"), Mapping) else {}
    for value in (body.get("url"), data.get("download_url"), data.get("url")):
        if isinstance(value, str) and value.startswith(("https://", "http://")):
            return value
    return None
