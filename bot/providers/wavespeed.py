"""WaveSpeed: `kwaivgi/kling-video-o3-{std,pro,4k}/reference-to-video`.

Documented API (see PROVIDERS.md §3.1): Bearer auth; submit POST /api/v3/<model>; poll
GET /api/v3/predictions/{id}/result; statuses created | processing | completed | failed (the SDK also
treats cancelled, timeout, deleted as terminal); outputs in data.outputs, NSFW flags in
data.has_nsfw_contents; uploads via POST /api/v3/media/upload/binary (kept 7 days); webhooks signed with
HMAC (`webhook-signature: v3,…`).
"""

from __future__ import annotations

import json
import time
from collections.abc import Awaitable, Callable, Mapping
from typing import Any
from urllib.parse import quote

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
from bot.providers.http import failure_code, provider_message
from bot.providers.media_upload import mime_of, read_bytes, upload_name
from bot.providers.webhooks import ReplayGuard, verify_wavespeed
from bot.request import GenerationRequest, MediaRef, Violation

TIER_MODEL = {"standard": "std", "pro": "pro", "4k": "4k"}
STATUS = {
    "created": TaskStatus.QUEUED,
    "pending": TaskStatus.QUEUED,
    "processing": TaskStatus.RUNNING,
    "completed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
    "timeout": TaskStatus.FAILED,
    "deleted": TaskStatus.FAILED,
    "cancelled": TaskStatus.CANCELED,
    "canceled": TaskStatus.CANCELED,
}


def model_path(tier: str) -> str:
    return f"kwaivgi/kling-video-o3-{TIER_MODEL[tier]}/reference-to-video"


async def shared_fields(request: GenerationRequest, media_url: Callable[[MediaRef], Awaitable[str]]) -> dict[str, Any]:
    """The body fields WaveSpeed documents for this model, minus elements. Atlas Cloud sells the same model
    with the same fields, and RunComfy lists the same ones, so their adapters build on this too.
    `media_url` turns a stored input into a URL the provider can fetch (an upload, or a public link)."""
    body: dict[str, Any] = {
        "aspect_ratio": request.aspect_ratio,
        "duration": request.duration,  # an integer here (fal and Kling want strings)
        "shot_type": request.shot_type,
    }
    if request.multi_prompt:
        body["multi_prompt"] = [
            {"index": i, "prompt": rewrite(shot.prompt, RefStyle.FIGURE), "duration": shot.duration}
            for i, shot in enumerate(request.multi_prompt, start=1)
        ]
        # multi_prompt item shape is not confirmed for WaveSpeed; this follows Atlas Cloud's documented
        # `[{index, prompt, duration}]` (same model, same README text). WaveSpeed requires a prompt field.
        body["prompt"] = " ".join(shot["prompt"] for shot in body["multi_prompt"])
    else:
        body["prompt"] = rewrite(request.prompt or "", RefStyle.FIGURE)
    if request.images:
        body["images"] = [await media_url(ref) for ref in request.images]
    if request.video is not None:
        body["video"] = await media_url(request.video)
        body["keep_original_sound"] = request.keep_original_sound
    else:
        body["sound"] = request.sound
    return body


class WaveSpeedProvider(HostedProvider):
    name = "wavespeed"
    display_name = "WaveSpeed"
    capabilities = Capabilities(
        tiers=frozenset({"standard", "pro", "4k"}),
        video_reference=True,
        # Only the Pro model documents `element_list` (Kling Elements ids); inline element images are not offered.
        elements="id",
        start_end_frame=False,
        multi_prompt="indexed",
        prompt_refs=RefStyle.FIGURE,
        upload=True,
        webhook="hmac",
        cancel="none",
        default_concurrency=2,  # the Bronze account tier allows 2 concurrent video tasks
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        self._uploads: dict[str, str] = {}
        self._webhook_secret: str | None = None
        self._replays = ReplayGuard()

    def auth_headers(self) -> Mapping[str, str]:
        key = self.settings.secret("WAVESPEED_API_KEY")
        return {"Authorization": f"Bearer {key.get_secret_value() if key else ''}"}

    def check(self, request: GenerationRequest) -> list[Violation]:
        out = super().check(request)
        if request.elements and request.tier != "pro":
            out.append(Violation("elements", f"{self.display_name} takes elements only on the pro tier"))
        return out

    # --- inputs ------------------------------------------------------------------------------------
    async def upload(self, ref: MediaRef) -> str:
        """Local files go through WaveSpeed's media upload; its links last 7 days, longer than any job."""
        if ref.sha256 in self._uploads:
            return self._uploads[ref.sha256]
        files = {"file": (upload_name(ref), await read_bytes(ref), mime_of(ref))}
        body = await self.api.send("POST", "/api/v3/media/upload/binary", files=files)
        url = (body or {}).get("data", {}).get("download_url") if isinstance(body, dict) else None
        if not url:
            raise ProviderError(ErrorCode.INPUT_FETCH_FAILED, "the media upload returned no URL", provider=self.name)
        self._uploads[ref.sha256] = url
        return str(url)

    async def build_body(self, request: GenerationRequest) -> dict[str, Any]:
        body = await shared_fields(request, self.upload)
        if request.elements:
            body["element_list"] = [element.element_id for element in request.elements]
        return body

    # --- the task ----------------------------------------------------------------------------------
    async def submit(self, request: GenerationRequest, *, job_id: str, webhook_url: str | None = None) -> TaskHandle:
        body = await self.build_body(request)
        params = {"webhook": webhook_url} if webhook_url else None
        reply = await self.api.submit(f"/api/v3/{model_path(request.tier)}", json_body=body, params=params)
        data = reply.get("data") if isinstance(reply, dict) else None
        task_id = data.get("id") if isinstance(data, dict) else None
        if not task_id:
            raise ProviderError(
                ErrorCode.SUBMIT_AMBIGUOUS,
                f"the submit reply carried no task id: {provider_message(reply, 'empty reply')}",
                provider=self.name,
            )
        poll_url = (data.get("urls") or {}).get("get") or f"/api/v3/predictions/{quote(task_id)}/result"
        return TaskHandle(provider=self.name, task_id=task_id, poll_url=poll_url)

    async def poll(self, handle: TaskHandle) -> TaskState:
        reply = await self.api.get(handle.poll_url or f"/api/v3/predictions/{quote(handle.task_id)}/result")
        return self.parse_state(reply)

    def parse_state(self, reply: Any) -> TaskState:
        data = reply.get("data", reply) if isinstance(reply, dict) else None
        if not isinstance(data, dict) or "status" not in data:
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, "unreadable task state", provider=self.name)
        status = STATUS.get(str(data["status"]).lower(), TaskStatus.UNKNOWN)
        if status is TaskStatus.UNKNOWN:
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, f"unknown status {data['status']!r}", provider=self.name)
        outputs = data.get("outputs") or []
        nsfw = any(bool(flag) for flag in (data.get("has_nsfw_contents") or []))
        if status is TaskStatus.SUCCEEDED:
            if not outputs:
                error = ProviderError(ErrorCode.OUTPUT_INVALID, "completed without an output", provider=self.name)
                return TaskState(TaskStatus.FAILED, error=error, raw=data)
            return TaskState(status, progress=1.0, output_url=str(outputs[0]), nsfw=nsfw, raw=data)
        if status is TaskStatus.FAILED:
            message = str(data.get("error") or f"the task ended as {data['status']}")
            code = ErrorCode.GENERATION_TIMEOUT if data["status"] == "timeout" else failure_code(message)
            return TaskState(status, error=ProviderError(code, message, provider=self.name), raw=data)
        return TaskState(status, raw=data)

    # --- webhooks ----------------------------------------------------------------------------------
    async def webhook_secret(self) -> str:
        configured = self.settings.secret("WAVESPEED_WEBHOOK_SECRET")
        if configured:
            return configured.get_secret_value()
        if self._webhook_secret is None:
            reply = await self.api.get("/api/v3/webhook/secret")
            data = reply.get("data", reply) if isinstance(reply, dict) else {}
            secret = data.get("secret") if isinstance(data, dict) else None
            if not secret:
                raise ProviderError(ErrorCode.AUTH, "could not read the webhook secret", provider=self.name)
            self._webhook_secret = str(secret)
        return self._webhook_secret

    async def prepare_webhooks(self) -> None:
        await self.webhook_secret()

    def parse_webhook(
        self,
        headers: Mapping[str, str],
        body: bytes,
        *,
        token: str | None = None,
        handle: TaskHandle | None = None,
    ) -> WebhookEvent:
        configured = self.settings.secret("WAVESPEED_WEBHOOK_SECRET")
        secret = configured.get_secret_value() if configured else self._webhook_secret
        if not secret:
            raise WebhookRejected("the webhook secret is not known yet")
        delivery = verify_wavespeed(headers, body, secret, now=time.time())
        self._replays.check(delivery)
        payload = json.loads(body)
        state = self.parse_state(payload)
        task_id = (payload.get("data", payload) or {}).get("id")
        if not task_id:
            raise WebhookRejected("no task id in the payload")
        return WebhookEvent(task_id=str(task_id), state=state)
