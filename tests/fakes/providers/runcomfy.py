"""A loopback RunComfy Model API, written from RunComfy's documentation (PROVIDERS.md §3.3), not the adapter.

Submit:  POST /v1/models/kling/kling-video-o3/{standard,pro}/reference-to-video  (Bearer auth, JSON; `prompt`
         required; inputs are public HTTPS URLs RunComfy fetches itself)
         → {request_id, status_url, result_url, cancel_url}
Status:  GET /v1/requests/{id}/status → {status: in_queue (+queue_position) | in_progress | completed | cancelled}
Result:  GET /v1/requests/{id}/result → {status: "succeeded", output: {video: url}} (output shape ❓; a failed
         generation as {status: "failed", error: …}, as public RunComfy clients read it)
Cancel:  POST /v1/requests/{id}/cancel — only while queued
Errors:  HTTP status + {error_code, message}: 400001 InvalidResourceIdentifier, 400002 InsufficientResources,
         400004 UserAccountError (bad or missing token), 403001 PermissionDenied, 404001 NotFound
"""

from __future__ import annotations

import ipaddress
import itertools
from typing import Any, Literal
from urllib.parse import urlsplit

from aiohttp import web

from tests.fakes.providers.harness import FakeAPI, FakeTask, field_problems

FIELDS: dict[str, type | tuple[type, ...]] = {
    "prompt": str,
    "images": list,
    "video": str,
    "aspect_ratio": str,
    "duration": int,
    "sound": bool,
    "keep_original_sound": bool,
    "shot_type": str,
    "multi_prompt": list,
}
TIERS = {"standard", "pro"}
PUBLIC_MEDIA = "https://media.reelbot.test/m"  # where the harness says reelbot's media folder is published


def public_https(url: Any) -> bool:
    """What RunComfy can fetch server-side: an https URL on a public host (no data: URIs, no loopback)."""
    if not isinstance(url, str):
        return False
    parts = urlsplit(url)
    if parts.scheme != "https" or not parts.hostname or parts.hostname == "localhost":
        return False
    try:
        address = ipaddress.ip_address(parts.hostname)
    except ValueError:
        return True
    return address.is_global


def error(status: int, code: int, message: str) -> web.Response:
    return web.json_response({"error_code": code, "message": message}, status=status)


class FakeRunComfy(FakeAPI):
    name = "runcomfy"
    result_shape: Literal["output", "flat"] = "output"  # {output: {video}} or a bare {video}

    def settings_env(self) -> dict[str, str]:
        return {
            "RUNCOMFY_API_KEY": self.api_key,
            "RUNCOMFY_BASE_URL": self.base_url,
            "REELBOT_PUBLIC_MEDIA_URL": PUBLIC_MEDIA,
        }

    def setup_routes(self) -> None:
        self._ids = itertools.count(1)
        self.route("POST", "/v1/models/kling/kling-video-o3/{tier}/reference-to-video", self.submit, kind="submit")
        self.route("GET", "/v1/requests/{id}/status", self.status, kind="poll")
        self.route("GET", "/v1/requests/{id}/result", self.result, kind="result")
        self.route("POST", "/v1/requests/{id}/cancel", self.cancel, kind="cancel")

    @staticmethod
    def _unauthorised() -> web.Response:
        return error(400, 400004, "UserAccountError: the token is missing, expired or revoked")

    def _check_body(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["body is not a JSON object"]
        problems = field_problems(body, FIELDS)
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            problems.append("prompt is required")
        limit = 4 if "video" in body else 7
        if len(body.get("images", [])) > limit:
            problems.append(f"more than {limit} reference images")
        for url in [*body.get("images", []), *([body["video"]] if "video" in body else [])]:
            if not public_https(url):
                problems.append("inputs must be public HTTPS URLs that can be fetched server-side")
        if body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
            problems.append("bad aspect_ratio")
        if isinstance(body.get("duration"), int) and not 3 <= body["duration"] <= 15:
            problems.append("duration out of 3..15")
        if body.get("shot_type", "intelligent") not in ("intelligent", "customize"):
            problems.append("bad shot_type")
        if body.get("sound") and "video" in body:
            problems.append("sound with a reference video")
        for shot in body.get("multi_prompt", []):
            if not isinstance(shot, dict) or not isinstance(shot.get("prompt"), str) or len(shot["prompt"]) > 512:
                problems.append(f"bad multi_prompt item {shot!r}")
        return problems

    def _urls(self, task_id: str) -> dict[str, str]:
        root = f"{self.base_url}/v1/requests/{task_id}"
        return {"status_url": f"{root}/status", "result_url": f"{root}/result"}

    async def submit(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return self._unauthorised()
        if request.match_info["tier"] not in TIERS:
            self.expect(False, f"unknown model path {request.path}")
            return error(400, 400001, "InvalidResourceIdentifier: no such model")
        body = await self.json_body(request)
        problems = self._check_body(body)
        for problem in problems:
            self.expect(False, problem)
        if problems:
            return web.json_response({"error_code": 422001, "message": "; ".join(problems)}, status=422)
        task = self.new_task(f"rc-{next(self._ids):06d}", body)
        task.extra["tier"] = request.match_info["tier"]
        urls = self._urls(task.id)
        return web.json_response(
            {"request_id": task.id, **urls, "cancel_url": f"{self.base_url}/v1/requests/{task.id}/cancel"}
        )

    def _task(self, request: web.Request) -> FakeTask | None:
        return self.tasks.get(request.match_info["id"])

    async def status(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return self._unauthorised()
        task = self._task(request)
        if task is None:
            return error(404, 404001, "ResourceNotFound: no such request")
        step = task.advance()
        body: dict[str, Any] = {"request_id": task.id, **self._urls(task.id)}
        if step.kind == "queued":
            body.update(status="in_queue", queue_position=step.queue_position or 0)
        elif step.kind == "running":
            body["status"] = "in_progress"
        elif step.kind == "cancelled":
            body["status"] = "cancelled"
        else:  # succeeded, failed, content_policy: the queue only says the request is done
            body["status"] = "completed"
        return web.json_response(body)

    async def result(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return self._unauthorised()
        task = self._task(request)
        if task is None:
            return error(404, 404001, "ResourceNotFound: no such request")
        step = task.peek()
        if not self.expect(step.kind in ("succeeded", "failed", "content_policy"), "result read before completion"):
            return error(400, 400001, "the request has not completed")
        if step.kind == "succeeded":
            video = self.output_url(task)
            output = {"video": video} if self.result_shape == "flat" else {"output": {"video": video}}
            return web.json_response({"request_id": task.id, "status": "succeeded", **output})
        return web.json_response({"request_id": task.id, "status": "failed", "error": step.message or "failed"})

    async def cancel(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return self._unauthorised()
        task = self._task(request)
        if task is None:
            return error(404, 404001, "ResourceNotFound: no such request")
        if task.peek().kind != "queued" or task.cancelled:
            return web.json_response({"message": "only a queued request can be cancelled"}, status=400)
        task.cancelled = True
        return web.json_response({"request_id": task.id, "status": "cancelled"})
