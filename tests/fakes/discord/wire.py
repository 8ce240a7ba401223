"""Wire-level pieces shared by the fake's REST, CDN and gateway: ids, JSON replies, errors, request bodies."""

from __future__ import annotations

import email.parser
import email.policy
import json
import mimetypes
import re
import threading
import time
from dataclasses import dataclass, field
from typing import Any

from aiohttp import web

DISCORD_EPOCH_MS = 1420070400000
API_PREFIX = "/api/v10"

# Discord's JSON error codes used by the fake (DD topics/opcodes-and-status-codes.mdx).
UNKNOWN_CHANNEL = 10003
UNKNOWN_GUILD = 10004
UNKNOWN_MEMBER = 10007
UNKNOWN_MESSAGE = 10008
UNKNOWN_USER = 10013
UNKNOWN_WEBHOOK = 10015
UNKNOWN_INTERACTION = 10062
MAX_ATTACHMENTS = 30015
ENTITY_TOO_LARGE = 40005
ALREADY_ACKNOWLEDGED = 40060
MISSING_ACCESS = 50001
NOT_AUTHOR = 50005
EMPTY_MESSAGE = 50006
CANNOT_DM = 50007
MISSING_PERMISSIONS = 50013
WRONG_CHANNEL_TYPE = 50024
INVALID_WEBHOOK_TOKEN = 50027
INVALID_FORM_BODY = 50035
THREAD_LOCKED = 50083
THREAD_EXISTS = 160004


class ApiError(Exception):
    """An error answer in Discord's shape: `{"message": ..., "code": ...}` (+ `errors` for form errors)."""

    def __init__(self, status: int, code: int, message: str, errors: dict[str, Any] | None = None) -> None:
        super().__init__(f"{status} {code} {message}")
        self.status = status
        self.code = code
        self.message = message
        self.errors = errors

    def body(self) -> dict[str, Any]:
        body: dict[str, Any] = {"message": self.message, "code": self.code}
        if self.errors:
            body["errors"] = self.errors
        return body


def form_error(path: str, message: str, code: str = "BASE_TYPE_BAD_VALUE") -> ApiError:
    """400 / 50035 with the nested `errors` object Discord uses, e.g. path "content" or "embeds.0.title"."""
    errors: dict[str, Any] = {"_errors": [{"code": code, "message": message}]}
    for key in reversed(path.split(".")):
        errors = {key: errors}
    return ApiError(400, INVALID_FORM_BODY, "Invalid Form Body", errors)


def json_response(body: Any, status: int = 200, headers: dict[str, str] | None = None) -> web.Response:
    # discord.py compares Content-Type for *equality* with "application/json" (http.py json_or_text);
    # aiohttp's json_response appends "; charset=utf-8", which makes discord.py treat the body as text.
    all_headers = {"Content-Type": "application/json", **(headers or {})}
    return web.Response(body=json.dumps(body).encode(), status=status, headers=all_headers)


def error_response(error: ApiError, headers: dict[str, str] | None = None) -> web.Response:
    return json_response(error.body(), status=error.status, headers=headers)


class Snowflakes:
    """Strictly increasing Discord snowflakes carrying the real creation time (discord.py reads `created_at`)."""

    def __init__(self) -> None:
        self._last = 0
        self._lock = threading.Lock()

    def next(self, at: float | None = None) -> int:
        stamp = int((time.time() if at is None else at) * 1000) - DISCORD_EPOCH_MS
        with self._lock:
            candidate = max(stamp << 22, self._last + 1)
            self._last = candidate
            return candidate


def snowflake_time(snowflake: int) -> float:
    return ((snowflake >> 22) + DISCORD_EPOCH_MS) / 1000


@dataclass
class Upload:
    """One `files[n]` part of a multipart request."""

    field: str
    filename: str
    data: bytes
    content_type: str

    @property
    def index(self) -> int | None:
        match = re.fullmatch(r"files\[(\d+)\]", self.field)
        return int(match.group(1)) if match else None


def guess_type(filename: str, declared: str | None = None) -> str | None:
    """Discord derives an attachment's content type from its name when the part says octet-stream (discord.py does)."""
    if declared and declared != "application/octet-stream":
        return declared
    return mimetypes.guess_type(filename)[0] or declared


@dataclass
class RecordedRequest:
    """One request to the fake's API, as the test sees it (`fake.requests`)."""

    method: str
    path: str  # after /api/v10, e.g. "/channels/1/messages"
    query: dict[str, str]
    headers: dict[str, str]
    json: Any = None  # the JSON body, or the multipart `payload_json`
    files: list[Upload] = field(default_factory=list)
    at: float = field(default_factory=time.monotonic)
    status: int | None = None
    response: Any = None
    after_429: bool = False  # the same method + path was answered 429 before: discord.py retried it

    @property
    def multipart(self) -> bool:
        return bool(self.files)

    def __repr__(self) -> str:
        return f"<{self.method} {self.path} -> {self.status}>"


def parse_body(content_type: str, raw: bytes) -> tuple[Any, list[Upload]]:
    """A request body as (json, uploads): JSON bodies, or multipart with `payload_json` and `files[n]` parts."""
    if not raw:
        return None, []
    if content_type.startswith("multipart/"):
        header = f"Content-Type: {content_type}\r\n\r\n".encode()
        message = email.parser.BytesParser(policy=email.policy.HTTP).parsebytes(header + raw)
        payload: Any = None
        uploads: list[Upload] = []
        for part in message.iter_parts() if message.is_multipart() else []:
            name = str(part.get_param("name", header="content-disposition") or "")
            data = part.get_payload(decode=True) or b""
            if name == "payload_json":
                payload = json.loads(data)
            elif part.get_filename() is not None or name.startswith("file"):
                filename = str(part.get_filename() or name)
                uploads.append(Upload(name, filename, data, part.get_content_type()))
        return payload, uploads
    try:
        return json.loads(raw), []
    except ValueError as exc:
        raise ApiError(400, INVALID_FORM_BODY, "The request body contains invalid JSON.") from exc
