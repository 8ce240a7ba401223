"""Reading a stored input for upload or inlining, off the event loop."""

from __future__ import annotations

import asyncio
import base64
from pathlib import Path

from bot.request import MediaRef

MIME = {"jpeg": "image/jpeg", "png": "image/png", "webp": "image/webp", "mp4": "video/mp4", "mov": "video/quicktime"}


def mime_of(ref: MediaRef) -> str:
    return MIME.get(ref.format, "application/octet-stream")


async def read_bytes(ref: MediaRef) -> bytes:
    return await asyncio.to_thread(Path(ref.path).read_bytes)


async def as_base64(ref: MediaRef) -> str:
    return base64.b64encode(await read_bytes(ref)).decode("ascii")


def upload_name(ref: MediaRef) -> str:
    """A neutral file name (the person's own file name may carry private words)."""
    extension = {"jpeg": "jpg"}.get(ref.format, ref.format)
    return f"{ref.sha256[:16]}.{extension}"
