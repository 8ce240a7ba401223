"""A loopback Atlas Cloud API, written from Atlas's documentation (PROVIDERS.md §3.2), not the adapter.

Submit:  POST /api/v1/model/generateVideo  (Bearer auth, JSON)
         body {"model": "kwaivgi/kling-video-o3-{std,pro}/reference-to-video", …WaveSpeed's fields}
         (◐ `multi_shot: true` with `multi_prompt: [{index, prompt ≤ 512, duration}]`,
          `elements: [{element_name, reference_type: "image_refer", frontal_image, refer_images[1–4]}]`, ≤ 6)
         → {code: 200, message: "success", data: {id, model, status: "created", outputs: [], …}}
Poll:    GET /api/v1/model/prediction/{id} → data.status created | processing | completed | failed …,
         data.outputs[0], data.error; a failed prediction is HTTP 200; `has_nsfw_contents` in every body
Upload:  POST /api/v1/model/uploadMedia  multipart `file` → {"url": …} (temporary)
Errors:  a multi_prompt entry over 512 characters → `ret: 1201`
"""

from __future__ import annotations

import itertools
from typing import Any, Literal

from aiohttp import web

from tests.fakes.providers.harness import FakeAPI, FakeTask, Step, field_problems

FIELDS: dict[str, type | tuple[type, ...]] = {
    "model": str,
    "prompt": str,
    "images": list,
    "video": str,
    "aspect_ratio": str,
    "duration": int,
    "sound": bool,
    "keep_original_sound": bool,
    "shot_type": str,
    "multi_prompt": list,
    "multi_shot": bool,
    "elements": list,
}
MODELS = {f"kwaivgi/kling-video-o3-{tier}/reference-to-video" for tier in ("std", "pro")}
ELEMENT_FIELDS = {"element_name": str, "reference_type": str, "frontal_image": str, "refer_images": list}
SHOT_PROMPT_MAX = 512


def _is_url(value: Any) -> bool:
    return isinstance(value, str) and value.startswith(("http://", "https://"))


class FakeAtlasCloud(FakeAPI):
    name = "atlascloud"
    success_word: str = "completed"  # some Atlas code sees "succeeded"
    upload_shape: Literal["documented", "data"] = "documented"  # `{url}` or WaveSpeed-style `data.download_url`
    failed_http_status: int = 200  # documented: a failed prediction answers 200
    nsfw: bool = False  # what has_nsfw_contents says about a finished prediction

    def settings_env(self) -> dict[str, str]:
        return {"ATLASCLOUD_API_KEY": self.api_key, "ATLASCLOUD_BASE_URL": self.base_url}

    def setup_routes(self) -> None:
        self._ids = itertools.count(1)
        self.uploads: dict[str, bytes] = {}
        self.route("POST", "/api/v1/model/generateVideo", self.submit, kind="submit")
        self.route("GET", "/api/v1/model/prediction/{id}", self.poll, kind="poll")
        self.route("POST", "/api/v1/model/uploadMedia", self.upload, kind="upload")
        self.route("GET", "/media/{name}", self.serve_upload, kind="upload-get")

    @staticmethod
    def _unauthorised() -> web.Response:
        return web.json_response({"code": 401, "message": "Unauthorized: invalid API key"}, status=401)

    async def upload(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return self._unauthorised()
        files = await self.form_files(request)
        if not self.expect("file" in files, "upload without a multipart `file` field"):
            return web.json_response({"code": 400, "message": "file is required"}, status=400)
        filename, data = files["file"]
        name = f"u{len(self.uploads) + 1}-{filename}"
        self.uploads[name] = data
        url = f"{self.base_url}/media/{name}"
        if self.upload_shape == "data":
            return web.json_response({"code": 200, "data": {"download_url": url, "filename": name}})
        return web.json_response({"url": url})

    async def serve_upload(self, request: web.Request) -> web.Response:
        return web.Response(body=self.uploads[request.match_info["name"]])

    def _check_body(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["body is not a JSON object"]
        problems = field_problems(body, FIELDS)
        if body.get("model") not in MODELS:
            problems.append(f"unknown model {body.get('model')!r}")
        if not isinstance(body.get("prompt"), str) or not body["prompt"]:
            problems.append("prompt is required")
        elements = body.get("elements", [])
        refs = len(body.get("images", [])) + len(elements)
        limit = 4 if "video" in body else 7
        if refs > limit:
            problems.append(f"more than {limit} images and elements")
        if len(elements) > 6:
            problems.append("more than 6 elements")
        for element in elements:
            problems += self._check_element(element)
        inputs = [*body.get("images", []), *([body["video"]] if "video" in body else [])]
        if not all(_is_url(url) for url in inputs):
            problems.append("inputs must be URLs")
        if body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
            problems.append("bad aspect_ratio")
        if isinstance(body.get("duration"), int) and not 3 <= body["duration"] <= 15:
            problems.append("duration out of 3..15")
        if body.get("shot_type", "intelligent") not in ("intelligent", "customize"):
            problems.append("bad shot_type")
        if body.get("sound") and "video" in body:
            problems.append("sound with a reference video")
        if "multi_prompt" in body and body.get("multi_shot") is not True:
            problems.append("multi_prompt without multi_shot: true")
        for shot in body.get("multi_prompt", []):
            if not isinstance(shot, dict) or set(shot) != {"index", "prompt", "duration"}:
                problems.append(f"multi_prompt item {shot!r} is not {{index, prompt, duration}}")
            elif not all(isinstance(shot[k], int) and not isinstance(shot[k], bool) for k in ("index", "duration")):
                problems.append("multi_prompt index and duration must be integers")
        return problems

    @staticmethod
    def _check_element(element: Any) -> list[str]:
        if not isinstance(element, dict) or set(element) != set(ELEMENT_FIELDS):
            return [f"element {element!r} is not {{{', '.join(ELEMENT_FIELDS)}}}"]
        problems = [f"element {k} has type {type(element[k]).__name__}"
                    for k, t in ELEMENT_FIELDS.items() if not isinstance(element[k], t)]  # fmt: skip
        if element["reference_type"] != "image_refer":
            problems.append("element reference_type must be image_refer")
        if not 1 <= len(element["refer_images"]) <= 4:
            problems.append("element refer_images must hold 1–4 images")
        if not all(_is_url(u) for u in [element["frontal_image"], *element["refer_images"]]):
            problems.append("element images must be URLs")
        return problems

    async def submit(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return self._unauthorised()
        body = await self.json_body(request)
        shots = body.get("multi_prompt") if isinstance(body, dict) else None
        if isinstance(shots, list) and any(len(str(dict(s).get("prompt", ""))) > SHOT_PROMPT_MAX for s in shots):
            self.expect(False, "multi_prompt entry over 512 characters")
            return web.json_response({"ret": 1201, "msg": "multi_prompt prompt exceeds 512 characters"}, status=400)
        problems = self._check_body(body)
        for problem in problems:
            self.expect(False, problem)
        if problems:
            return web.json_response({"code": 400, "message": "; ".join(problems)}, status=400)
        task = self.new_task(f"atl{next(self._ids):06d}", body)
        return web.json_response({"code": 200, "message": "success", "data": self._prediction(task, "created")})

    def _prediction(self, task: FakeTask, status: str, *, outputs: list[str] | None = None, error: str = "",
                    nsfw: bool = False) -> dict[str, Any]:  # fmt: skip
        return {
            "id": task.id,
            "model": task.input.get("model"),
            "outputs": outputs or [],
            "urls": {"get": f"{self.base_url}/api/v1/model/prediction/{task.id}"},
            "has_nsfw_contents": [nsfw] * max(1, len(outputs or [])),  # present in every body, even failures
            "status": status,
            "created_at": "2026-11-22T05:00:00.000Z",
            "error": error,
            "timings": {"inference": 0},
        }

    def render(self, task: FakeTask, step: Step) -> tuple[int, dict[str, Any]]:
        if step.kind == "queued":
            return 200, self._prediction(task, "created")
        if step.kind == "running":
            return 200, self._prediction(task, "processing")
        if step.kind == "succeeded":
            return 200, self._prediction(task, self.success_word, outputs=[self.output_url(task)], nsfw=self.nsfw)
        if step.kind == "cancelled":
            return 200, self._prediction(task, "canceled")
        # failed and content_policy alike: `failed` with the reason in `error` (content moderation upstream is
        # Kling's, whose words Atlas passes on)
        failed = self._prediction(task, "failed", error=step.message or "failed", nsfw=self.nsfw)
        return self.failed_http_status, failed

    async def poll(self, request: web.Request) -> web.Response:
        if not self.bearer_ok(request):
            return self._unauthorised()
        task = self.tasks.get(request.match_info["id"])
        if task is None:
            return web.json_response({"code": 404, "message": "prediction not found"}, status=404)
        status, data = self.render(task, task.advance())
        message = "success" if status == 200 else data["error"]
        return web.json_response({"code": status, "message": message, "data": data}, status=status)
