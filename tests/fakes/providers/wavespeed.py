"""A loopback WaveSpeed API, written from WaveSpeed's documentation (PROVIDERS.md §3.1), not the adapter.

Submit:  POST /api/v3/kwaivgi/kling-video-o3-{std,pro,4k}/reference-to-video   (Bearer auth, JSON body)
         → {code: 200, message, data: {id, model, outputs: [], urls: {get}, has_nsfw_contents: [],
            status: "created", …}}
Poll:    GET /api/v3/predictions/{id}/result  (and GET /api/v3/predictions/{id})
Upload:  POST /api/v3/media/upload/binary  multipart `file` → data.download_url
Secret:  GET /api/v3/webhook/secret
"""

from __future__ import annotations

import itertools
from typing import Any

from aiohttp import web

from tests.fakes.providers.harness import FakeAPI, FakeTask, Step, field_problems

# The documented body fields and their JSON types.
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
    "element_list": list,
}
MODELS = {"std", "pro", "4k"}


class FakeWaveSpeed(FakeAPI):
    name = "wavespeed"
    webhook_secret = "whsec_test-wavespeed-secret"

    def settings_env(self) -> dict[str, str]:
        return {"WAVESPEED_API_KEY": self.api_key, "WAVESPEED_BASE_URL": self.base_url}

    def setup_routes(self) -> None:
        self._ids = itertools.count(1)
        self.uploads: dict[str, bytes] = {}
        self.route("POST", "/api/v3/kwaivgi/{model}/reference-to-video", self.submit, kind="submit")
        self.route("GET", "/api/v3/predictions/{id}/result", self.poll, kind="poll")
        self.route("GET", "/api/v3/predictions/{id}", self.poll, kind="poll")
        self.route("POST", "/api/v3/media/upload/binary", self.upload, kind="upload")
        self.route("GET", "/api/v3/webhook/secret", self.secret, kind="secret")
        self.route("GET", "/uploads/{name}", self.serve_upload, kind="upload-get")

    async def upload(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return web.json_response({"code": 401, "message": "Unauthorized"}, status=401)
        files = await self.form_files(request)
        if not self.expect("file" in files, "upload without a multipart `file` field"):
            return web.json_response({"code": 400, "message": "file is required"}, status=400)
        filename, data = files["file"]
        name = f"u{len(self.uploads) + 1}-{filename}"
        self.uploads[name] = data
        url = f"{self.base_url}/uploads/{name}"
        return web.json_response({"code": 200, "message": "success", "data": {"download_url": url, "filename": name}})

    async def serve_upload(self, request: web.Request) -> web.Response:
        return web.Response(body=self.uploads[request.match_info["name"]])

    async def secret(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return web.json_response({"code": 401, "message": "Unauthorized"}, status=401)
        return web.json_response({"code": 200, "message": "success", "data": {"secret": self.webhook_secret}})

    def _check_body(self, model: str, body: Any) -> list[str]:
        problems = []
        if not isinstance(body, dict):
            return ["body is not a JSON object"]
        tier = model.removeprefix("kling-video-o3-")
        if tier not in MODELS:
            problems.append(f"unknown model {model}")
        problems += field_problems(body, FIELDS)
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            problems.append("prompt is required")
        limit = 4 if "video" in body else 7
        if len(body.get("images", [])) > limit:
            problems.append(f"more than {limit} images")
        for url in [*body.get("images", []), *([body["video"]] if "video" in body else [])]:
            if not str(url).startswith(("http://", "https://")):
                problems.append("inputs must be publicly accessible URLs")
        if body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
            problems.append("bad aspect_ratio")
        if isinstance(body.get("duration"), int) and not 3 <= body["duration"] <= 15:
            problems.append("duration out of 3..15")
        if body.get("shot_type", "intelligent") not in ("intelligent", "customize"):
            problems.append("bad shot_type")
        if "element_list" in body and tier != "pro":
            problems.append("element_list is a Pro-only field")
        if body.get("sound") and "video" in body:
            problems.append("sound with a reference video")
        return problems

    async def submit(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return web.json_response({"code": 401, "message": "Unauthorized"}, status=401)
        body = await self.json_body(request)
        problems = self._check_body(request.match_info["model"], body)
        for problem in problems:
            self.expect(False, problem)
        if problems:
            return web.json_response({"code": 400, "message": "; ".join(problems)}, status=400)
        task = self.new_task(f"ws{next(self._ids):06d}", body)
        task.extra["webhook"] = request.query.get("webhook")
        return web.json_response({"code": 200, "message": "success", "data": self._prediction(task, "created")})

    def _prediction(self, task: FakeTask, status: str, *, outputs: list[str] | None = None, error: str = "") -> dict:
        return {
            "id": task.id,
            "model": "kwaivgi/kling-video-o3-std/reference-to-video",
            "outputs": outputs or [],
            "urls": {"get": f"{self.base_url}/api/v3/predictions/{task.id}/result"},
            "has_nsfw_contents": [False] * len(outputs or []),
            "status": status,
            "created_at": "2026-11-22T05:00:00.000Z",
            "error": error,
            "timings": {"inference": 0},
        }

    def render(self, task: FakeTask, step: Step) -> dict:
        if step.kind == "queued":
            return self._prediction(task, "created")
        if step.kind == "running":
            return self._prediction(task, "processing")
        if step.kind == "succeeded":
            return self._prediction(task, "completed", outputs=[self.output_url(task)])
        if step.kind == "cancelled":
            return self._prediction(task, "cancelled")
        # failed and content_policy alike: WaveSpeed reports both as `failed` with the reason in `error`
        return self._prediction(task, "failed", error=step.message or "failed")

    async def poll(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return web.json_response({"code": 401, "message": "Unauthorized"}, status=401)
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return web.json_response({"code": 404, "message": "prediction not found"}, status=404)
        return web.json_response({"code": 200, "message": "success", "data": self.render(task, task.advance())})
