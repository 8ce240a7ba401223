"""Kling's own API (Omni-Video): `POST /v1/videos/omni-video` with `model_name: "kling-v3-omni"`.

Documented API (see PROVIDERS.md §3.5): every request carries a fresh HS256 JWT
(`{iss: access key, exp: now+1800, nbf: now-5}` signed with the secret key) as `Authorization: Bearer`;
submit answers `{code: 0, message, request_id, data: {task_id, task_status: "submitted", task_info:
{external_task_id}}}`; the task is read with GET /v1/videos/omni-video/{task_id}; statuses are
submitted | processing | succeed | failed, the reason in `task_status_msg`, the clip in
`data.task_result.videos[].url` (kept 30 days). Errors carry an HTTP status *and* a service `code`, and
the code decides: an exhausted resource pack arrives as HTTP 429 like a rate limit. Images go inline as
base64; videos only by URL. `external_task_id` (unique per account) is our idempotency key. Callbacks are
unsigned. Billing is in prepaid units (`final_unit_deduction`), so reelbot's dollar price is an estimate.
"""

from __future__ import annotations

import asyncio
import json
import time
from collections.abc import Mapping
from typing import Any
from urllib.parse import parse_qsl, quote, urlencode, urlsplit, urlunsplit

import httpx
import jwt

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
from bot.providers.media_upload import as_base64
from bot.providers.webhooks import new_token, tokens_match
from bot.request import GenerationRequest, MediaRef, Violation

MODEL = "kling-v3-omni"
TASKS_PATH = "/v1/videos/omni-video"
JWT_LIFETIME_S = 1800  # Kling's documented example: valid for 30 minutes …
JWT_EARLY_S = 5  # … and from 5 s ago, so a slightly fast server clock still accepts it
MODE = {"standard": "std", "pro": "pro"}  # std = 720p, pro = 1080p; no 4K on Kling's own API
IMAGE_FORMATS = frozenset({"jpeg", "png"})  # Kling documents .jpg/.jpeg/.png only
MAX_REFS, MAX_REFS_WITH_VIDEO = 7, 4  # image_list entries (frames included) + element_list entries
INT64_MAX = 2**63 - 1
RECONCILE_ATTEMPTS = 3

STATUS = {
    "submitted": TaskStatus.QUEUED,
    "processing": TaskStatus.RUNNING,
    "succeed": TaskStatus.SUCCEEDED,
    "failed": TaskStatus.FAILED,
}

# Kling's service codes (its "General Information" error table): the code, not the HTTP status, says what
# went wrong. 1100–1102 (account problem, arrears, resource pack used up or expired) arrive as HTTP 429.
SERVICE_CODES: dict[int, ErrorCode] = {
    **dict.fromkeys((1000, 1001, 1002, 1003, 1004), ErrorCode.AUTH),
    **dict.fromkeys((1100, 1101, 1102), ErrorCode.INSUFFICIENT_FUNDS),
    1103: ErrorCode.AUTH,  # no permission for this endpoint or model: the operator has to fix the account
    **dict.fromkeys((1200, 1201, 1202, 1203), ErrorCode.INVALID_INPUT),
    1300: ErrorCode.INVALID_INPUT,  # "platform policy triggered": a refusal, but not said to be about content
    1301: ErrorCode.CONTENT_POLICY,
    1302: ErrorCode.RATE_LIMITED,  # requests too fast
    1303: ErrorCode.RATE_LIMITED,  # concurrent tasks over the resource pack's limit
    1304: ErrorCode.AUTH,  # IP allow-list: only the operator can fix it
    **dict.fromkeys((5000, 5001, 5002), ErrorCode.PROVIDER_TRANSIENT),
}
# Kling asks clients to back off at least 1 s (exponentially) after 1302/1303; it sends no Retry-After.
RATE_LIMIT_FLOOR_S = 1.0

# Moderation wording in `task_status_msg`, beyond the generic English words (Kling may answer in Chinese).
_POLICY_WORDS = ("1301", "风控", "内容安全", "敏感", "违规")


def service_code(body: Any) -> int | None:
    code = body.get("code") if isinstance(body, Mapping) else None
    if isinstance(code, bool):
        return None
    if isinstance(code, int):
        return code
    if isinstance(code, str) and code.strip().isdigit():
        return int(code)
    return None


def service_error(code: int, message: str, *, http_status: int | None, retry_after: float | None) -> ProviderError:
    """One Kling service code → a normalised error that keeps Kling's own words and code."""
    kind = SERVICE_CODES.get(code)
    if kind is None:
        kind = ErrorCode.PROVIDER_TRANSIENT if code >= 5000 else ErrorCode.INVALID_INPUT
    if kind is ErrorCode.RATE_LIMITED:
        retry_after = max(retry_after or 0.0, RATE_LIMIT_FLOOR_S)
    return ProviderError(kind, f"{message} (code {code})", provider="kling", http_status=http_status,
                         retry_after=retry_after)  # fmt: skip


def task_failure_code(message: str) -> ErrorCode:
    if any(word in message for word in _POLICY_WORDS):
        return ErrorCode.CONTENT_POLICY
    return failure_code(message)


def with_token(url: str, token: str) -> str:
    """The callback URL with our per-job token added to its query (Kling signs nothing)."""
    parts = urlsplit(url)
    query = [*parse_qsl(parts.query, keep_blank_values=True), ("token", token)]
    return urlunsplit(parts._replace(query=urlencode(query)))


def task_path(task_or_external_id: str) -> str:
    return f"{TASKS_PATH}/{quote(task_or_external_id, safe='')}"


class KlingProvider(HostedProvider):
    name = "kling"
    display_name = "Kling"
    capabilities = Capabilities(
        tiers=frozenset({"standard", "pro"}),
        video_reference=True,  # by public URL only: see check()
        elements="id",  # `element_list: [{element_id: int64}]` from Kling's element library
        start_end_frame=True,  # `image_list[].type` first_frame / end_frame
        multi_prompt="indexed",  # `[{index, prompt, duration: "str"}]`
        max_shots=6,
        shot_prompt_max=512,
        prompt_refs=RefStyle.ANGLE,
        upload=False,
        inline_base64=True,
        webhook="token",
        cancel="none",  # Kling documents no cancel
        reconcile=True,  # a task can be looked up by our external_task_id
        output_ttl_s=30 * 24 * 3600,  # generated videos are cleared after 30 days
        # The concurrency limit is account-wide and depends on the resource pack bought: not known here.
        default_concurrency=None,
    )

    def __init__(self, *args: Any, **kwargs: Any) -> None:
        super().__init__(*args, **kwargs)
        # task id -> callback token, filled at submit and by every poll (so it survives a restart)
        self._webhook_tokens: dict[str, str] = {}

    # --- auth --------------------------------------------------------------------------------------
    def api_token(self, now: float | None = None) -> str:
        """A fresh JWT: Kling authenticates every request with one signed by the secret key."""
        access, secret = self.settings.secret("KLING_ACCESS_KEY"), self.settings.secret("KLING_SECRET_KEY")
        if not access or not secret:
            raise ProviderError(ErrorCode.AUTH, "KLING_ACCESS_KEY and KLING_SECRET_KEY must be set", provider=self.name)
        issued = int(time.time() if now is None else now)
        claims = {"iss": access.get_secret_value(), "exp": issued + JWT_LIFETIME_S, "nbf": issued - JWT_EARLY_S}
        return jwt.encode(claims, secret.get_secret_value(), algorithm="HS256", headers={"typ": "JWT"})

    def auth_headers(self) -> Mapping[str, str]:
        return {"Authorization": f"Bearer {self.api_token()}"}

    def classifier(self) -> Classifier:
        by_status = default_classify(self.name)

        def classify(response: httpx.Response, body: Any) -> ProviderError:
            code = service_code(body)
            if code is None or code == 0:
                return by_status(response, body)
            message = provider_message(body, f"HTTP {response.status_code}")
            retry_after = parse_retry_after(response.headers.get("retry-after"))
            return service_error(code, message, http_status=response.status_code, retry_after=retry_after)

        return classify

    # --- before anything is sent -------------------------------------------------------------------
    def check(self, request: GenerationRequest) -> list[Violation]:
        out = super().check(request)

        def refuse(param: str, why: str) -> None:
            out.append(Violation(param, f"{self.display_name} {why}"))

        if request.video is not None and not request.video.source_url:
            refuse("video", "needs the reference video as a publicly reachable URL (it has no upload API and "
                            "takes only images as base64): give the video as an http(s) link, not a file")  # fmt: skip
        framed = {"start_frame": request.start_frame, "end_frame": request.end_frame}
        for param, ref in [*(("images", ref) for ref in request.images), *framed.items()]:
            if ref is not None and ref.format not in IMAGE_FORMATS:
                refuse(param, f"accepts only JPEG or PNG images ({ref.name} is {ref.format.upper()})")
        frames = sum(ref is not None for ref in framed.values())
        limit = MAX_REFS_WITH_VIDEO if request.video is not None else MAX_REFS
        total = len(request.images) + frames + len(request.elements)
        if frames and total > limit:
            refuse("start_frame", f"counts start/end frames as images: {total} images, frames and elements given, "
                                  f"at most {limit}{' with a reference video' if request.video else ''}")  # fmt: skip
        if request.end_frame is not None and request.images:
            # ❓ Stated for Kling's Omni-Video O1 ("with more than 2 images an end frame is not supported");
            # the 3.0 Omni page says nothing else, so the O1 rule is followed.
            refuse("end_frame", "does not take an end frame together with reference images")
        for index, element in enumerate(request.elements, start=1):
            if element.element_id is not None and not _is_int64(element.element_id):
                refuse(f"elements[{index}]", f"element ids are whole numbers; {element.element_id!r} is not one")
        if request.shot_type == "customize" and not request.multi_prompt:
            refuse("shot_type", "takes shot_type customize only with a multi-prompt (the shots are the customisation)")
        return out

    # --- the request -------------------------------------------------------------------------------
    async def build_body(self, request: GenerationRequest, *, job_id: str, callback_url: str | None) -> dict[str, Any]:
        body: dict[str, Any] = {
            "model_name": MODEL,
            "mode": MODE[request.tier],
            "duration": str(request.duration),  # a string "3".."15" on Kling's API
            # must be "off" with a reference video; the request model already forbids sound with one
            "sound": "on" if request.sound else "off",
            "external_task_id": job_id,  # our idempotency key: unique per account and queryable
        }
        if request.multi_prompt:
            # Kling's "intelligence" shot type writes its own shots from one prompt and ignores multi_prompt,
            # so shots given by the person are always sent as `customize`.
            body["multi_shot"] = True
            body["shot_type"] = "customize"
            body["multi_prompt"] = [
                {"index": i, "prompt": rewrite(shot.prompt, RefStyle.ANGLE), "duration": str(shot.duration)}
                for i, shot in enumerate(request.multi_prompt, start=1)
            ]
        else:
            # One prompt is one shot: Kling documents shot_type as meaningless unless multi_shot is on, and
            # reelbot's default `intelligent` must not turn every clip into an AI-cut storyboard.
            body["multi_shot"] = False
            body["prompt"] = rewrite(request.prompt or "", RefStyle.ANGLE)
        if request.start_frame is None:
            # Required without a first frame; with one, the frame decides the shape and Kling takes none.
            body["aspect_ratio"] = request.aspect_ratio
        images = await self.image_list(request)
        if images:
            body["image_list"] = images
        if request.elements:
            body["element_list"] = [{"element_id": int(str(e.element_id))} for e in request.elements]
        if request.video is not None:
            body["video_list"] = [
                {
                    "video_url": request.video.source_url,
                    "refer_type": "feature",  # a reference to follow, not a video to edit ("base")
                    "keep_original_sound": "yes" if request.keep_original_sound else "no",
                }
            ]
        if callback_url:
            body["callback_url"] = callback_url
        return body

    async def image_list(self, request: GenerationRequest) -> list[dict[str, str]]:
        """Reference images first, so `<<<image_N>>>` is the person's image N; then the frames."""
        items = [{"image_url": await self.inline(ref)} for ref in request.images]
        if request.start_frame is not None:
            items.append({"image_url": await self.inline(request.start_frame), "type": "first_frame"})
        if request.end_frame is not None:
            items.append({"image_url": await self.inline(request.end_frame), "type": "end_frame"})
        return items

    @staticmethod
    async def inline(ref: MediaRef) -> str:
        # Plain base64, no `data:` prefix (◐ Kling's image-to-video page asks for none; Omni documents
        # "base64 or URL" without saying). Local bytes never expire, unlike a Discord attachment link.
        return await as_base64(ref)

    # --- the task ----------------------------------------------------------------------------------
    async def submit(self, request: GenerationRequest, *, job_id: str, webhook_url: str | None = None) -> TaskHandle:
        token = new_token() if webhook_url else None
        callback = with_token(webhook_url, token) if webhook_url and token else None
        body = await self.build_body(request, job_id=job_id, callback_url=callback)
        reply = await self.api.submit(TASKS_PATH, json_body=body)
        try:
            data = self._data(reply)
        except ProviderError as error:
            if error.code is ErrorCode.PROVIDER_TRANSIENT and service_code(reply) is None:
                # a 2xx we cannot read: the task may exist, and reconcile can find it by external_task_id
                raise ProviderError(ErrorCode.SUBMIT_AMBIGUOUS, error.message, provider=self.name) from None
            raise
        task_id = data.get("task_id")
        if not task_id:
            raise ProviderError(ErrorCode.SUBMIT_AMBIGUOUS, "the submit reply carried no task id", provider=self.name)
        return self._handle(str(task_id), job_id, token)

    def _handle(self, task_id: str, job_id: str, token: str | None) -> TaskHandle:
        extra: dict[str, Any] = {"external_task_id": job_id}
        if token:
            extra["webhook_token"] = token
            self._webhook_tokens[task_id] = token
        return TaskHandle(provider=self.name, task_id=task_id, poll_url=task_path(task_id), extra=extra)

    async def poll(self, handle: TaskHandle) -> TaskState:
        token = handle.extra.get("webhook_token")
        if token:
            self._webhook_tokens[handle.task_id] = str(token)  # after a restart the first poll re-arms it
        reply = await self.api.get(handle.poll_url or task_path(handle.task_id))
        state = self.parse_state(self._data(reply))
        if state.status.terminal:
            self._webhook_tokens.pop(handle.task_id, None)
        return state

    async def reconcile(self, job_id: str) -> TaskHandle | None:
        """Look the task up by our external_task_id after a submit reply was lost.

        ❓ Querying by external id is not confirmed (PROVIDERS.md §9). Kling's single-task query names
        `task_id` and `external_task_id` as alternative path parameters ("choose one"), so we ask
        GET /v1/videos/omni-video/{external_task_id}, and believe the answer only if the task it returns
        carries our id. A refusal or "not found" is asked again briefly (the task may still be arriving),
        then means "cannot tell".
        """
        for attempt in range(1, RECONCILE_ATTEMPTS + 1):
            try:
                data = self._data(await self.api.get(task_path(job_id)))
            except ProviderError as error:
                if error.code is not ErrorCode.INVALID_INPUT:
                    raise
            else:
                external = (data.get("task_info") or {}).get("external_task_id")
                if data.get("task_id") and str(external) == job_id:
                    return self._handle(str(data["task_id"]), job_id, None)
                return None  # the id named some other task
            if attempt < RECONCILE_ATTEMPTS:
                await asyncio.sleep(self.api.retry.delay(attempt))
        return None

    def _data(self, reply: Any) -> dict[str, Any]:
        """The `data` object of a Kling reply; a non-zero `code` in a 2xx is still an error."""
        code = service_code(reply)
        if code:
            message = provider_message(reply, "Kling reported an error")
            raise service_error(code, message, http_status=None, retry_after=None)
        data = reply.get("data") if isinstance(reply, dict) else None
        if not isinstance(data, dict):
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, "unreadable reply (no task data)", provider=self.name)
        return data

    def parse_state(self, data: Mapping[str, Any]) -> TaskState:
        word = str(data.get("task_status", "")).lower()
        status = STATUS.get(word)
        if status is None:
            raise ProviderError(ErrorCode.PROVIDER_TRANSIENT, f"unknown task status {word!r}", provider=self.name)
        if status is TaskStatus.SUCCEEDED:
            videos = (data.get("task_result") or {}).get("videos") or []
            url = videos[0].get("url") if videos and isinstance(videos[0], Mapping) else None
            if not url:
                error = ProviderError(ErrorCode.OUTPUT_INVALID, "succeeded without a video URL", provider=self.name)
                return TaskState(TaskStatus.FAILED, error=error, raw=data)
            return TaskState(status, progress=1.0, output_url=str(url), raw=data)
        if status is TaskStatus.FAILED:
            message = str(data.get("task_status_msg") or "").strip() or "the task failed (Kling gave no reason)"
            error = ProviderError(task_failure_code(message), message, provider=self.name)
            return TaskState(status, error=error, raw=data)
        # Kling reports neither progress nor a queue position.
        return TaskState(status, raw=data)

    # --- callbacks ---------------------------------------------------------------------------------
    def parse_webhook(
        self, headers: Mapping[str, str], body: bytes, *, token: str | None = None, handle: TaskHandle | None = None
    ) -> WebhookEvent:
        """Kling signs nothing: accept a callback only with the task's own token, and trust none of its
        state (the engine polls to learn it). The expected token comes from the job's stored `handle` when
        the caller has it (as EvoLink's adapter takes it too), else from the tokens this process has seen."""
        try:
            payload = json.loads(body)
        except ValueError:
            raise WebhookRejected("the callback body is not JSON") from None
        task = payload.get("data", payload) if isinstance(payload, dict) else None
        task_id = task.get("task_id") if isinstance(task, dict) else None
        if not task_id:
            raise WebhookRejected("no task id in the callback")
        if handle is not None:
            if str(task_id) != handle.task_id:
                raise WebhookRejected("the callback names another task")
            expected = handle.extra.get("webhook_token")
        else:
            expected = self._webhook_tokens.get(str(task_id))
        if not tokens_match(expected, token):
            raise WebhookRejected("the callback token does not match this task")
        return WebhookEvent(task_id=str(task_id), state=None)


def _is_int64(text: str) -> bool:
    text = text.strip()
    return text.isascii() and text.isdigit() and int(text) <= INT64_MAX
