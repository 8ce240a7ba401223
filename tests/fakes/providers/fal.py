"""A loopback fal queue, written from fal's docs (PROVIDERS.md §3.4) and fal-client's upload flow, not the adapter.

Submit:  POST /fal-ai/kling-video/o3/{standard,pro,4k}/reference-to-video[?fal_webhook=<url>]  (`Authorization: Key …`)
         → {request_id, response_url, status_url, cancel_url, gateway_request_id}; the URLs drop the sub-path:
         /fal-ai/kling-video/requests/{id}[/status|/cancel]
Status:  GET …/requests/{id}/status → {status: IN_QUEUE, queue_position} | {status: IN_PROGRESS, logs} |
         {status: COMPLETED, logs, metrics[, error, error_type]}
Result:  GET …/requests/{id} → {"video": {url, content_type, file_name, file_size}}, or the request's error
Cancel:  PUT …/requests/{id}/cancel → 202 {status: CANCELLATION_REQUESTED} while queued,
         else 400 {status: ALREADY_COMPLETED}
Errors:  {"detail": [{loc, msg, type, url}]} (model errors) or {detail: str, error_type} (request errors),
         with X-Fal-Retryable
Storage: POST /storage/auth/token?storage_type=fal-cdn-v3 (Key auth) → {token, token_type, base_url, expires_at};
         POST {base_url}/files/upload (raw bytes, `Authorization: <token_type> <token>`, Content-Type,
         X-Fal-File-Name) → {access_url}
JWKS:    GET /.well-known/jwks.json (tests put their own Ed25519 key in `jwks`)
"""

from __future__ import annotations

import itertools
import secrets
from typing import Any

from aiohttp import web

from tests.fakes.providers.harness import FakeAPI, FakeTask, Step, field_problems

APP = "/fal-ai/kling-video"
TIERS = ("standard", "pro", "4k")
DURATIONS = tuple(str(n) for n in range(3, 16))
FIELDS: dict[str, type | tuple[type, ...]] = {
    "prompt": str,
    "multi_prompt": list,
    "start_image_url": str,
    "end_image_url": str,
    "image_urls": list,
    "elements": list,
    "generate_audio": bool,
    "duration": str,
    "shot_type": str,
    "aspect_ratio": str,
}


def _detail(status: int, msg: str, kind: str, loc: list[str] | None = None, *, retryable: bool = False) -> web.Response:
    body = {"detail": [{"loc": loc or ["body"], "msg": msg, "type": kind, "url": f"https://docs.fal.ai/errors#{kind}"}]}
    return web.json_response(body, status=status, headers={"X-Fal-Retryable": "true" if retryable else "false"})


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


class FakeFal(FakeAPI):
    name = "fal"

    def settings_env(self) -> dict[str, str]:
        return {"FAL_KEY": self.api_key, "FAL_BASE_URL": self.base_url, "FAL_STORAGE_URL": self.base_url,
                "FAL_JWKS_URL": f"{self.base_url}/.well-known/jwks.json"}  # fmt: skip

    def setup_routes(self) -> None:
        self._ids = itertools.count(1)
        self.cdn: dict[str, tuple[str, bytes]] = {}
        self.cdn_token = secrets.token_urlsafe(16)
        self.jwks: dict[str, Any] = {"keys": []}
        self.route("POST", f"{APP}/o3/{{tier}}/reference-to-video", self.submit, kind="submit")
        self.route("GET", f"{APP}/requests/{{id}}/status", self.status, kind="poll")
        self.route("GET", f"{APP}/requests/{{id}}", self.result, kind="result")
        self.route("PUT", f"{APP}/requests/{{id}}/cancel", self.cancel, kind="cancel")
        self.route("POST", "/storage/auth/token", self.token, kind="upload-token")
        self.route("POST", "/files/upload", self.upload, kind="upload")
        self.route("GET", "/cdn/{name}", self.serve_cdn, kind="upload-get")
        self.route("GET", "/.well-known/jwks.json", self.serve_jwks, kind="jwks")

    def _authorised(self, request: web.Request) -> bool:
        return self.expect(request.headers.get("Authorization") == f"Key {self.api_key}", "missing or wrong Key auth")

    @staticmethod
    def _unauthorised() -> web.Response:
        return web.json_response({"detail": "No user found for Key ID and Secret"}, status=401)

    # --- storage -----------------------------------------------------------------------------------
    async def token(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        self.expect(request.query.get("storage_type") == "fal-cdn-v3", "token request without storage_type=fal-cdn-v3")
        return web.json_response({"token": self.cdn_token, "token_type": "Bearer", "base_url": self.base_url,
                                  "expires_at": "2099-01-01T00:00:00+00:00"})  # fmt: skip

    async def upload(self, request: web.Request) -> web.Response:
        if not self.expect(request.headers.get("Authorization") == f"Bearer {self.cdn_token}",
                           "CDN upload without the storage token"):  # fmt: skip
            return web.json_response({"detail": "Unauthorized"}, status=401)
        content_type = request.headers.get("Content-Type", "")
        self.expect(content_type.startswith("image/"), f"CDN upload with Content-Type {content_type!r}")
        self.expect(bool(request.headers.get("X-Fal-File-Name")), "CDN upload without X-Fal-File-Name")
        data = await request.read()
        self.expect(len(data) > 0, "empty CDN upload")
        name = f"c{len(self.cdn) + 1}-{request.headers.get('X-Fal-File-Name', 'file')}"
        self.cdn[name] = (content_type, data)
        return web.json_response({"access_url": f"{self.base_url}/cdn/{name}"})

    async def serve_cdn(self, request: web.Request) -> web.Response:
        content_type, data = self.cdn[request.match_info["name"]]
        return web.Response(body=data, content_type=content_type)

    async def serve_jwks(self, request: web.Request) -> web.Response:
        return web.json_response(self.jwks)

    # --- queue -------------------------------------------------------------------------------------
    def check_body(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["body is not a JSON object"]
        problems = field_problems(body, FIELDS)
        if ("prompt" in body) == ("multi_prompt" in body):
            problems.append("either prompt or multi_prompt must be provided, but not both")
        if isinstance(body.get("prompt"), str) and not 1 <= len(body["prompt"]) <= 2500:
            problems.append("prompt must be 1–2500 characters")
        if "duration" in body and body["duration"] not in DURATIONS:
            problems.append(f"duration {body['duration']!r} is not one of {DURATIONS}")
        if body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
            problems.append("bad aspect_ratio")
        if body.get("shot_type", "customize") != "customize":
            problems.append("shot_type must be customize")
        problems += self._check_shots(body)
        images = body.get("image_urls") or []
        elements = body.get("elements") or []
        for url in [*images, body.get("start_image_url"), body.get("end_image_url")]:
            if url is not None and not _is_url(url):
                problems.append("image inputs must be URLs")
        for element in elements:
            problems += self._check_element(element)
        if len(images) + len(elements) > 7:
            problems.append("more than 7 images + elements")
        return problems

    @staticmethod
    def _check_element(element: Any) -> list[str]:
        if isinstance(element, dict) and set(element) == {"video_url"} and _is_url(element["video_url"]):
            return []
        if not (isinstance(element, dict) and set(element) == {"frontal_image_url", "reference_image_urls"}
                and _is_url(element["frontal_image_url"]) and isinstance(element["reference_image_urls"], list)
                and 1 <= len(element["reference_image_urls"]) <= 3
                and all(_is_url(u) for u in element["reference_image_urls"])):  # fmt: skip
            return [f"bad element {element!r}"]
        return []

    @staticmethod
    def _check_shots(body: dict[str, Any]) -> list[str]:
        shots = body.get("multi_prompt")
        if shots is None:
            return []
        problems = []
        for shot in shots:
            if not (isinstance(shot, dict) and set(shot) == {"prompt", "duration"} and isinstance(shot["prompt"], str)
                    and isinstance(shot["duration"], str) and shot["duration"].isdigit()):  # fmt: skip
                problems.append(f"bad shot {shot!r}")
        if not problems and sum(int(s["duration"]) for s in shots) != int(body.get("duration", "5")):
            problems.append("shot durations must add up to duration")
        return problems

    def _urls(self, request_id: str) -> dict[str, str]:
        base = f"{self.base_url}{APP}/requests/{request_id}"
        return {"response_url": base, "status_url": f"{base}/status", "cancel_url": f"{base}/cancel"}

    async def submit(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        tier = request.match_info["tier"]
        if not self.expect(tier in TIERS, f"unknown endpoint tier {tier}"):
            return web.json_response({"detail": "Not Found"}, status=404)
        body = await self.json_body(request)
        problems = self.check_body(body)
        for problem in problems:
            self.expect(False, problem)
        if problems:
            return _detail(422, "; ".join(problems), "value_error")
        request_id = f"{next(self._ids):08d}-fa1f-4bad-b00c-0123456789ab"
        task = self.new_task(request_id, body)
        task.extra.update(tier=tier, webhook=request.query.get("fal_webhook"))
        return web.json_response({"request_id": request_id, "gateway_request_id": request_id, **self._urls(request_id)})

    def render_status(self, task: FakeTask, step: Step) -> dict[str, Any]:
        urls = self._urls(task.id)
        if step.kind == "queued":
            return {"status": "IN_QUEUE", "queue_position": step.queue_position or 0, **urls}
        if step.kind == "running":
            return {"status": "IN_PROGRESS", "logs": [{"message": "generating", "level": "INFO"}], **urls}
        done = {"status": "COMPLETED", "logs": [], "metrics": {"inference_time": 42.0}, **urls}
        if step.kind == "succeeded":
            return done
        if step.kind == "cancelled":
            return {**done, "error": "Request was cancelled", "error_type": "client_cancelled"}
        return {**done, "error": step.message or "the request failed"}

    async def status(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        return web.json_response(self.render_status(task, task.advance()))

    async def result(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        step = task.peek()
        if step.kind in ("queued", "running"):
            return web.json_response({"detail": "Request is still in progress"}, status=400)
        if step.kind == "succeeded":
            url = self.output_url(task)
            return web.json_response({"video": {"url": url, "content_type": "video/mp4", "file_name": "output.mp4",
                                                "file_size": len(self.output_bytes)}})  # fmt: skip
        if step.kind == "content_policy":
            return _detail(
                422, step.message or "content policy violation", "content_policy_violation", ["body", "prompt"]
            )
        if step.kind == "cancelled":
            return web.json_response({"detail": "Request was cancelled", "error_type": "client_cancelled"}, status=400)
        return web.json_response({"detail": step.message or "internal error", "error_type": "internal_error"},
                                 status=500, headers={"X-Fal-Error-Type": "internal_error"})  # fmt: skip

    async def cancel(self, request: web.Request) -> web.Response:
        if not self._authorised(request):
            return self._unauthorised()
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return web.json_response({"detail": "Request not found"}, status=404)
        if task.peek().kind == "queued" and not task.cancelled:
            task.cancelled = True
            return web.json_response({"status": "CANCELLATION_REQUESTED"}, status=202)
        return web.json_response({"status": "ALREADY_COMPLETED"}, status=400)
