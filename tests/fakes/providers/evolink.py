"""A loopback EvoLink/AIHubMax unified task API, written from the documentation (PROVIDERS.md §3.7), not the adapter.

Submit:  POST /v1/videos/generations  (Bearer auth, JSON, `"model": "kling-o3-reference-to-video"`)
         → {created, id: "task-unified-<unix>-<8>", model, object: "video.generation.task", progress: 0,
            status: "pending", task_info: {can_cancel, estimated_time, video_duration}, type: "video", usage}
Poll:    GET /v1/tasks/{task_id} → status pending | processing | completed | failed, progress 0–100, results[],
         error {code, message} (string codes); an unknown id → 400 `invalid_task_id`
Upload:  POST /api/v1/files/upload/stream (the file API's own host in production) multipart `file`,
         images only → {success, code, msg, data: {file_id, file_url, download_url, mime_type, expires_at}}
Errors:  HTTP status + {"error": {"code", "message", "type"}} (the envelope is ❓; the codes are the
         documented string codes)
"""

from __future__ import annotations

import itertools
import time
from typing import Any

from aiohttp import web

from tests.fakes.providers.harness import FakeAPI, FakeTask, Step, field_problems

MODEL = "kling-o3-reference-to-video"
# The documented body fields (new schema, plus the names taken from EvoLink's own pages) and their JSON types.
FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "prompt": str,
    "multi_prompt": list,
    "image_urls": list,
    "elements": list,
    "image_start": str,
    "image_end": str,
    "video_url": str,
    "keep_original_sound": bool,
    "generate_audio": bool,
    "duration": int,
    "aspect_ratio": str,
    "quality": str,
    "shot_type": str,
    "callback_url": str,
}
IMAGE_TYPES = ("image/jpeg", "image/png", "image/gif", "image/webp")


def _error(status: int, code: str, message: str, kind: str = "invalid_request_error") -> web.Response:
    return web.json_response({"error": {"code": code, "message": message, "type": kind}}, status=status)


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


class FakeEvoLink(FakeAPI):
    name = "evolink"

    def settings_env(self) -> dict[str, str]:
        return {"EVOLINK_API_KEY": self.api_key, "EVOLINK_BASE_URL": self.base_url,
                "EVOLINK_FILES_URL": self.base_url}  # fmt: skip

    def setup_routes(self) -> None:
        self._ids = itertools.count(1)
        self.uploads: dict[str, bytes] = {}
        self.failure_code = "service_error"  # the code a scripted "failed" step reports
        self.route("POST", "/v1/videos/generations", self.submit, kind="submit")
        self.route("GET", "/v1/tasks/{task_id}", self.poll, kind="poll")
        self.route("POST", "/api/v1/files/upload/stream", self.upload, kind="upload")
        self.route("GET", "/uploads/{name}", self.serve_upload, kind="upload-get")

    # --- file API ----------------------------------------------------------------------------------
    async def upload(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return web.json_response({"success": False, "code": 401, "msg": "Invalid API key"}, status=401)
        files = await self.form_files(request)
        if not self.expect("file" in files, "upload without a multipart `file` field"):
            return web.json_response({"success": False, "code": 400, "msg": "file is required"}, status=400)
        filename, data = files["file"]
        kind = _sniff(data)
        if not self.expect(kind in IMAGE_TYPES, f"the file API takes images only, got {kind}"):
            return web.json_response({"success": False, "code": 400, "msg": "unsupported file type"}, status=400)
        name = f"f{len(self.uploads) + 1}-{filename}"
        self.uploads[name] = data
        url = f"{self.base_url}/uploads/{name}"
        return web.json_response({
            "success": True, "code": 200, "msg": "File uploaded successfully",
            "data": {"file_id": f"file_{len(self.uploads)}", "file_name": name, "original_name": filename,
                     "file_size": len(data), "mime_type": kind, "upload_path": "images", "file_url": url,
                     "download_url": url, "upload_time": "2026-11-22T05:00:00+08:00",
                     "expires_at": "2026-11-25T05:00:00+08:00"},
        })  # fmt: skip

    async def serve_upload(self, request: web.Request) -> web.Response:
        return web.Response(body=self.uploads[request.match_info["name"]])

    # --- tasks -------------------------------------------------------------------------------------
    def check_body(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["body is not a JSON object"]
        problems = field_problems(body, FIELDS)
        if body.get("model") != MODEL:
            problems.append(f"model must be {MODEL}")
        has_prompt, has_shots = "prompt" in body, "multi_prompt" in body
        if has_prompt == has_shots:
            problems.append("give exactly one of prompt and multi_prompt")
        if isinstance(body.get("prompt"), str) and not 1 <= len(body["prompt"]) <= 2500:
            problems.append("prompt must be 1–2500 characters")
        problems += self._check_shots(body)
        duration = body.get("duration", 5)
        video = "video_url" in body
        if isinstance(duration, int) and not 3 <= duration <= (10 if video else 15):
            problems.append(f"duration {duration} out of range")
        if body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
            problems.append("bad aspect_ratio")
        if body.get("quality", "720p") not in ("720p", "1080p", "4k"):
            problems.append("bad quality")
        if body.get("shot_type", "customize") != "customize":
            problems.append("shot_type is fixed to customize")
        images = body.get("image_urls") or []
        elements = body.get("elements") or []
        if len(images) + len(elements) > (4 if video else 7):
            problems.append("too many images + elements")
        for url in [*images, body.get("image_start"), body.get("image_end"), body.get("video_url")]:
            if url is not None and not _is_url(url):
                problems.append("inputs must be URLs")
        for element in elements:
            if not (isinstance(element, dict) and set(element) == {"frontal_image_url", "reference_image_urls"}
                    and _is_url(element["frontal_image_url"]) and isinstance(element["reference_image_urls"], list)
                    and 1 <= len(element["reference_image_urls"]) <= 3
                    and all(_is_url(u) for u in element["reference_image_urls"])):  # fmt: skip
                problems.append(f"bad element {element!r}")
        if "image_end" in body and "image_start" not in body:
            problems.append("a last frame requires a first frame")
        if video and body.get("generate_audio"):
            problems.append("sound cannot be generated with a reference video")
        if "keep_original_sound" in body and not video:
            problems.append("keep_original_sound without a video")
        callback = body.get("callback_url")
        if callback is not None and not (callback.startswith("https://") and len(callback) <= 2048):
            problems.append("callback_url must be HTTPS and ≤ 2048 characters")
        return problems

    @staticmethod
    def _check_shots(body: dict[str, Any]) -> list[str]:
        shots = body.get("multi_prompt")
        if shots is None:
            return []
        if not 1 <= len(shots) <= 6:
            return ["multi_prompt needs 1–6 shots"]
        problems = []
        for shot in shots:
            if not (isinstance(shot, dict) and set(shot) == {"prompt", "duration"}
                    and isinstance(shot["prompt"], str) and 1 <= len(shot["prompt"]) <= 512
                    and isinstance(shot["duration"], int) and not isinstance(shot["duration"], bool)):  # fmt: skip
                problems.append(f"bad shot {shot!r}")
        if not problems and sum(shot["duration"] for shot in shots) != body.get("duration", 5):
            problems.append("shot durations must add up to duration")
        return problems

    async def submit(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return _error(401, "unauthorized", "Invalid API key", "authentication_error")
        body = await self.json_body(request)
        problems = self.check_body(body)
        for problem in problems:
            self.expect(False, problem)
        if problems:
            return _error(400, "invalid_parameters", "; ".join(problems))
        now = int(time.time())
        task = self.new_task(f"task-unified-{now}-{next(self._ids):08d}", body)
        task.extra["callback_url"] = body.get("callback_url")
        return web.json_response(self._task(task, "pending"))

    def _task(self, task: FakeTask, status: str, *, progress: int = 0, **more: Any) -> dict[str, Any]:
        return {
            "created": 1763787600,
            "id": task.id,
            "model": MODEL,
            "object": "video.generation.task",
            "progress": progress,
            "status": status,
            "task_info": {"can_cancel": status == "pending", "estimated_time": 300,
                          "video_duration": task.input.get("duration", 5)},
            "type": "video",
            "usage": {"billing_rule": "per_call", "credits_reserved": 7, "user_group": "default"},
            **more,
        }  # fmt: skip

    def render(self, task: FakeTask, step: Step) -> dict[str, Any]:
        if step.kind == "queued":
            return self._task(task, "pending")
        if step.kind == "running":
            return self._task(task, "processing", progress=round((step.progress or 0) * 100))
        if step.kind == "succeeded":
            return self._task(task, "completed", progress=100, results=[self.output_url(task)])
        code = {"content_policy": "content_policy_violation", "cancelled": "request_cancelled"}.get(
            step.kind, self.failure_code
        )
        message = step.message or {"cancelled": "Request was cancelled"}.get(step.kind, "generation failed")
        return self._task(task, "failed", error={"code": code, "message": message})

    async def poll(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return _error(401, "unauthorized", "Invalid API key", "authentication_error")
        task = self.tasks.get(request.match_info["task_id"])
        if task is None:
            return _error(400, "invalid_task_id", "Task ID is invalid")
        return web.json_response(self.render(task, task.advance()))


def _sniff(data: bytes) -> str:
    """The image type from the bytes, as the file API identifies it."""
    if data.startswith(b"\x89PNG"):
        return "image/png"
    if data.startswith(b"\xff\xd8"):
        return "image/jpeg"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "image/webp"
    if data.startswith(b"GIF8"):
        return "image/gif"
    return "application/octet-stream"
