"""A loopback copy of Kling's own API (Omni-Video), written from Kling's documentation (PROVIDERS.md §3.5 and
Kling's "General Information" page), not from reelbot's adapter.

Auth:    `Authorization: Bearer <JWT>`: HS256, header {alg: HS256, typ: JWT}, claims {iss: access key,
         exp: now+1800, nbf: now-5}, signed with the secret key. Failures: HTTP 401 with code 1000–1004.
Submit:  POST /v1/videos/omni-video  → {code: 0, message, request_id, data: {task_id, task_status: "submitted",
         task_info: {external_task_id}, created_at, updated_at}}
Query:   GET /v1/videos/omni-video/{id}, `id` being the task_id or the external_task_id (the single-task query
         names both as alternative path parameters; by external id is not confirmed, see the adapter)
         → data: {task_id, task_status: submitted|processing|succeed|failed, task_status_msg, task_info,
         task_result: {videos: [{id, url, duration}]}, final_unit_deduction, created_at, updated_at}
Errors:  {code, message, request_id} with the documented HTTP status: 400/1201 bad parameter, 404/1203 no such
         resource, 400/1301 content security, 429/1102 resource pack used up, 429/1303 too many tasks …
"""

from __future__ import annotations

import base64
import binascii
import itertools
import re
import time
import uuid
from typing import Any

import jwt
from aiohttp import web

from tests.fakes.providers.harness import FakeAPI, FakeTask, Step, field_problems

# The documented body fields of POST /v1/videos/omni-video and their JSON types.
FIELDS: dict[str, type | tuple[type, ...]] = {
    "model_name": str,
    "prompt": str,
    "negative_prompt": str,
    "multi_shot": bool,
    "shot_type": str,
    "multi_prompt": list,
    "image_list": list,
    "element_list": list,
    "video_list": list,
    "sound": str,
    "mode": str,
    "aspect_ratio": str,
    "duration": str,
    "cfg_scale": (int, float),
    "watermark_info": dict,
    "callback_url": str,
    "external_task_id": str,
}
MODELS = {"kling-v3-omni", "kling-video-o1"}
DURATIONS = {str(n) for n in range(3, 16)}
_REF = re.compile(r"<<<(image|element|video)_(\d+)>>>")
# Reference syntaxes of other providers: Kling would read these as plain words.
_FOREIGN_REF = re.compile(r"\bFigure \d|@Image\d|@Element\d", re.IGNORECASE)


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def _is_base64(text: str) -> bool:
    try:
        base64.b64decode(text, validate=True)
    except (binascii.Error, ValueError):
        return False
    return True


class FakeKling(FakeAPI):
    name = "kling"
    # Kling's secret keys are 32 characters; a long one also keeps PyJWT from warning about key length.
    secret_key = "test-kling-secret-key-0123456789abcdef"

    def settings_env(self) -> dict[str, str]:
        return {"KLING_ACCESS_KEY": self.api_key, "KLING_SECRET_KEY": self.secret_key, "KLING_BASE_URL": self.base_url}

    def setup_routes(self) -> None:
        self._ids = itertools.count(860_000_000_000_000_001)
        self.by_external: dict[str, str] = {}
        self.tokens: list[dict[str, Any]] = []  # every verified JWT's claims, for tests
        self.route("POST", "/v1/videos/omni-video", self.submit, kind="submit")
        self.route("GET", "/v1/videos/omni-video/{id}", self.query, kind="poll")
        self.route("GET", "/v1/videos/omni-video", self.query_list, kind="list")

    # --- wire format -------------------------------------------------------------------------------
    @staticmethod
    def error(status: int, code: int, message: str) -> web.Response:
        return web.json_response({"code": code, "message": message, "request_id": uuid.uuid4().hex}, status=status)

    @staticmethod
    def ok(data: Any) -> web.Response:
        return web.json_response({"code": 0, "message": "SUCCEED", "request_id": uuid.uuid4().hex, "data": data})

    def _authorised(self, request: web.Request) -> web.Response | None:
        """None when the JWT is valid; otherwise Kling's 401 answer."""
        header = request.headers.get("Authorization", "")
        if not self.expect(bool(header), "no Authorization header"):
            return self.error(401, 1001, "Authorization is empty")
        scheme, _, token = header.partition(" ")
        if not self.expect(scheme == "Bearer" and bool(token), "Authorization is not `Bearer <token>`"):
            return self.error(401, 1002, "Authorization is invalid")
        try:
            head = jwt.get_unverified_header(token)
            claims = jwt.decode(
                token, self.secret_key, algorithms=["HS256"], options={"require": ["iss", "exp", "nbf"]}
            )
        except jwt.ExpiredSignatureError:
            self.expect(False, "JWT expired")
            return self.error(401, 1004, "Authorization is expired")
        except jwt.ImmatureSignatureError:
            self.expect(False, "JWT not yet valid")
            return self.error(401, 1003, "Authorization is not yet valid")
        except jwt.InvalidTokenError as exc:
            self.expect(False, f"JWT rejected: {type(exc).__name__}")
            return self.error(401, 1002, "Authorization is invalid")
        now = time.time()
        problems = [
            (head.get("alg") == "HS256" and head.get("typ") == "JWT", "JWT header is not {alg: HS256, typ: JWT}"),
            (claims["iss"] == self.api_key, "JWT iss is not the access key"),
            (_is_int(claims["exp"]) and 1790 <= claims["exp"] - now <= 1801, "JWT exp is not now + 1800"),
            (_is_int(claims["nbf"]) and 0 <= now - claims["nbf"] <= 15, "JWT nbf is not now - 5"),
        ]
        for condition, problem in problems:
            self.expect(condition, problem)
        if claims["iss"] != self.api_key:
            return self.error(401, 1000, "Authentication failed")
        self.tokens.append(claims)
        return None

    # --- the contract ------------------------------------------------------------------------------
    def check_body(self, body: Any) -> list[str]:
        if not isinstance(body, dict):
            return ["body is not a JSON object"]
        problems: list[str] = field_problems(body, FIELDS)
        if problems:
            return problems
        if body.get("model_name") not in MODELS:
            problems.append(f"model_name {body.get('model_name')!r} is not a documented model")
        if body.get("mode", "pro") not in ("std", "pro"):
            problems.append("mode must be std or pro")
        if body.get("duration", "5") not in DURATIONS:
            problems.append('duration must be a string "3".."15"')
        if body.get("sound", "off") not in ("on", "off"):
            problems.append('sound must be "on" or "off"')
        problems += self._check_prompt(body)
        problems += self._check_images(body)
        problems += self._check_elements(body)
        problems += self._check_video(body)
        if "external_task_id" in body and body["external_task_id"] in self.by_external:
            problems.append("external_task_id must be unique per account")
        return problems

    def _check_prompt(self, body: dict[str, Any]) -> list[str]:
        problems = []
        if body.get("multi_shot"):
            shot_type = body.get("shot_type")
            if shot_type not in ("customize", "intelligence"):
                problems.append("shot_type must be customize or intelligence when multi_shot is true")
            if shot_type == "customize":
                problems += self._check_shots(body.get("multi_prompt"), body.get("duration", "5"))
            texts = [str(s.get("prompt", "")) for s in body.get("multi_prompt") or [] if isinstance(s, dict)]
            if shot_type == "intelligence" or "prompt" in body:
                texts.append(str(body.get("prompt", "")))
        else:
            if "shot_type" in body or "multi_prompt" in body:
                problems.append("shot_type / multi_prompt are invalid without multi_shot")
            texts = [str(body.get("prompt", ""))]
        if not body.get("multi_shot") or body.get("shot_type") == "intelligence":
            prompt = body.get("prompt")
            if not isinstance(prompt, str) or not prompt.strip():
                problems.append("prompt is required unless multi_shot with shot_type customize")
            elif len(prompt) > 2500:
                problems.append("prompt over 2500 characters")
        counts = {
            "image": sum(1 for item in body.get("image_list") or [] if isinstance(item, dict) and "type" not in item),
            "element": len(body.get("element_list") or []),
            "video": len(body.get("video_list") or []),
        }
        for text in texts:
            if _FOREIGN_REF.search(text):
                problems.append(f"prompt uses another provider's reference syntax: {text!r}")
            for kind, number in _REF.findall(text):
                if not 1 <= int(number) <= counts[kind]:
                    problems.append(f"<<<{kind}_{number}>>> refers to nothing")
        return problems

    @staticmethod
    def _check_shots(shots: Any, duration: str) -> list[str]:
        if not isinstance(shots, list) or not 1 <= len(shots) <= 6:
            return ["multi_prompt must hold 1–6 shots when shot_type is customize"]
        problems, total = [], 0
        for position, shot in enumerate(shots, start=1):
            if not isinstance(shot, dict) or set(shot) != {"index", "prompt", "duration"}:
                problems.append("each shot is exactly {index, prompt, duration}")
                continue
            if not _is_int(shot["index"]) or shot["index"] != position:
                problems.append("shot index must be an int counting from 1")
            if not isinstance(shot["prompt"], str) or not shot["prompt"] or len(shot["prompt"]) > 512:
                problems.append("shot prompt must be 1–512 characters")
            if not isinstance(shot["duration"], str) or not shot["duration"].isdigit() or int(shot["duration"]) < 1:
                problems.append("shot duration must be a string of whole seconds ≥ 1")
            else:
                total += int(shot["duration"])
        if not problems and str(total) != duration:
            problems.append("shot durations must add up to the duration")
        return problems

    def _check_images(self, body: dict[str, Any]) -> list[str]:
        problems = []
        items = body.get("image_list") or []
        types = []
        for item in items:
            if not isinstance(item, dict) or not set(item) <= {"image_url", "type"}:
                problems.append("image_list items are {image_url, type?}")
                continue
            url = item.get("image_url")
            if not isinstance(url, str) or not url:
                problems.append("image_url must not be empty")
            elif url.startswith("data:"):
                problems.append("base64 image_url must not carry a data: prefix")
            elif not url.startswith(("http://", "https://")) and not _is_base64(url):
                problems.append("image_url is neither a URL nor base64")
            if "type" in item:
                if item["type"] not in ("first_frame", "end_frame"):
                    problems.append("image type must be first_frame or end_frame")
                types.append(item["type"])
        if "end_frame" in types and "first_frame" not in types:
            problems.append("an end frame needs a first frame")
        if "end_frame" in types and len(items) > 2:
            problems.append("an end frame is not supported with more than 2 images")
        if "first_frame" not in types and "aspect_ratio" not in body:
            problems.append("aspect_ratio is required without a first frame")
        if "first_frame" in types and "aspect_ratio" in body:
            problems.append("aspect_ratio is not supported with a first frame")
        if body.get("aspect_ratio", "16:9") not in ("16:9", "9:16", "1:1"):
            problems.append("aspect_ratio must be 16:9, 9:16 or 1:1")
        limit = 4 if body.get("video_list") else 7
        if len(items) + len(body.get("element_list") or []) > limit:
            problems.append(f"images + elements over {limit}")
        return problems

    @staticmethod
    def _check_elements(body: dict[str, Any]) -> list[str]:
        for item in body.get("element_list") or []:
            if not isinstance(item, dict) or set(item) != {"element_id"} or not _is_int(item["element_id"]):
                return ["element_list items are {element_id: int64}"]
        return []

    @staticmethod
    def _check_video(body: dict[str, Any]) -> list[str]:
        videos = body.get("video_list")
        if videos is None:
            return []
        problems = []
        if len(videos) > 1:
            problems.append("at most 1 reference video")
        for video in videos:
            if not isinstance(video, dict) or "video_url" not in video:
                problems.append("video_list items need video_url")
                continue
            if not str(video["video_url"]).startswith(("http://", "https://")):
                problems.append("video_url must be a URL")
            if video.get("refer_type", "base") not in ("feature", "base"):
                problems.append("refer_type must be feature or base")
            if video.get("keep_original_sound", "yes") not in ("yes", "no"):
                problems.append('keep_original_sound must be "yes" or "no"')
        if body.get("sound", "off") != "off":
            problems.append("sound must be off with a reference video")
        return problems

    # --- routes --------------------------------------------------------------------------------------
    async def submit(self, request: web.Request) -> web.Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        body = await self.json_body(request)
        problems = self.check_body(body)
        for problem in problems:
            self.expect(False, problem)
        if problems:
            return self.error(400, 1201, "; ".join(problems))
        task = self.new_task(str(next(self._ids)), body)
        now = int(time.time() * 1000)
        task.extra.update(created_at=now, external_task_id=body.get("external_task_id"))
        if body.get("external_task_id"):
            self.by_external[body["external_task_id"]] = task.id
        return self.ok(
            {
                "task_id": task.id,
                "task_status": "submitted",
                "task_info": {"external_task_id": body.get("external_task_id", "")},
                "created_at": now,
                "updated_at": now,
            }
        )

    def find(self, task_or_external_id: str) -> FakeTask | None:
        task_id = self.by_external.get(task_or_external_id, task_or_external_id)
        return self.tasks.get(task_id)

    def render(self, task: FakeTask, step: Step) -> dict[str, Any]:
        data: dict[str, Any] = {
            "task_id": task.id,
            "task_status": "submitted",
            "task_status_msg": "",
            "task_info": {"external_task_id": task.extra.get("external_task_id") or ""},
            "created_at": task.extra.get("created_at", 0),
            "updated_at": int(time.time() * 1000),
        }
        if step.kind == "running":
            data["task_status"] = "processing"
        elif step.kind == "succeeded":
            data["task_status"] = "succeed"
            data["task_result"] = {
                "videos": [{"id": f"v{task.id}", "url": self.output_url(task), "duration": task.input["duration"]}]
            }
            data["final_unit_deduction"] = "5"
        elif step.kind in ("failed", "content_policy", "cancelled"):
            # Kling reports every failure, risk control included, as `failed` with the reason in
            # task_status_msg; it has no cancelled state.
            data["task_status"] = "failed"
            data["task_status_msg"] = step.message or ("task canceled" if step.kind == "cancelled" else "failed")
        return data

    async def query(self, request: web.Request) -> web.Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        task = self.find(request.match_info["id"])
        if task is None:
            return self.error(404, 1203, "task not found")
        return self.ok(self.render(task, task.advance()))

    async def query_list(self, request: web.Request) -> web.Response:
        refused = self._authorised(request)
        if refused is not None:
            return refused
        page, size = int(request.query.get("pageNum", "1")), int(request.query.get("pageSize", "30"))
        tasks = list(self.tasks.values())[(page - 1) * size : page * size]
        return self.ok([self.render(task, task.peek()) for task in tasks])

    def callback_payload(self, task_id: str, status: str = "succeed") -> dict[str, Any]:
        """What Kling POSTs to callback_url: the task object itself (unsigned)."""
        task = self.tasks[task_id]
        data = self.render(task, task.peek())
        data["task_status"] = status
        return data
