"""Receiving input files: from a path, a URL or bytes → checked and stored content-addressed → MediaRef.

Inputs are copied into reelbot's own media folder at once: Discord CDN links and temporary files vanish,
and a job must be able to resume (or be re-submitted to another provider) days later.
"""

from __future__ import annotations

import asyncio
import hashlib
import os
import tempfile
from pathlib import Path
from typing import Literal
from urllib.parse import unquote, urlparse

import httpx

from bot.media.fetch import FetchError, fetch_to_file
from bot.media.inspect import VIDEO_MAX_BYTES, ImageInfo, MediaError, VideoInfo, inspect_media
from bot.request import MediaRef

_EXTENSIONS = {"jpeg": "jpg", "png": "png", "webp": "webp", "mp4": "mp4", "mov": "mov"}


def _is_url(source: str) -> bool:
    return urlparse(source).scheme in ("http", "https")


def display_name(source: str | Path) -> str:
    text = str(source)
    if _is_url(text):
        return unquote(Path(urlparse(text).path).name) or text
    return Path(text).name


class MediaStore:
    """The content-addressed folder where received inputs live."""

    def __init__(self, root: Path) -> None:
        self.root = root

    async def ingest(
        self,
        source: str | Path,
        *,
        http: httpx.AsyncClient | None = None,
        expect: Literal["image", "video"] | None = None,
        name: str | None = None,
    ) -> MediaRef:
        """Fetch or copy a file, check it, store it. Raises MediaError naming the file and the problem."""
        name = name or display_name(source)
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".incoming")
        os.close(fd)
        temp = Path(tmp)
        try:
            text = str(source)
            if _is_url(text):
                if http is None:
                    raise MediaError(name, "cannot download URLs here")
                try:
                    await fetch_to_file(http, text, temp, max_bytes=VIDEO_MAX_BYTES)
                except FetchError as exc:
                    raise MediaError(name, f"could not be downloaded — {exc}") from None
                source_url: str | None = text
            else:
                await asyncio.to_thread(_copy_in, name, Path(text).expanduser(), temp)
                source_url = None
            # inspecting decodes the whole image or demuxes the video: keep it off the event loop
            return await asyncio.to_thread(self._store, name, temp, expect, source_url)
        finally:
            temp.unlink(missing_ok=True)

    def ingest_bytes(
        self, name: str, data: bytes, *, expect: Literal["image", "video"] | None = None, source_url: str | None = None
    ) -> MediaRef:
        self.root.mkdir(parents=True, exist_ok=True)
        fd, tmp = tempfile.mkstemp(dir=self.root, suffix=".incoming")
        temp = Path(tmp)
        try:
            with os.fdopen(fd, "wb") as out:
                out.write(data)
            return self._store(name, temp, expect, source_url)
        finally:
            temp.unlink(missing_ok=True)

    def _store(self, name: str, temp: Path, expect: str | None, source_url: str | None) -> MediaRef:
        info = inspect_media(name, temp)
        kind = "video" if isinstance(info, VideoInfo) else "image"
        if expect and kind != expect:
            wanted = "an image (JPEG, PNG or WebP)" if expect == "image" else "a video (MP4 or MOV)"
            raise MediaError(name, f"is {'a video' if kind == 'video' else 'an image'}, but {wanted} is needed here")
        digest = _sha256(temp)
        fmt = info.container if isinstance(info, VideoInfo) else info.format
        final = self.root / f"{digest}.{_EXTENSIONS[fmt]}"
        if not final.exists():
            os.replace(temp, final)
        return MediaRef(
            name=name,
            path=str(final.resolve()),
            sha256=digest,
            kind=kind,
            format=fmt,
            width=info.width,
            height=info.height,
            size_bytes=info.size_bytes,
            duration_s=info.duration_s if isinstance(info, VideoInfo) else None,
            has_audio=info.has_audio if isinstance(info, VideoInfo) else None,
            source_url=source_url,
        )


def _copy_in(name: str, path: Path, temp: Path) -> None:
    if not path.is_file():
        raise MediaError(name, f"no such file ({path})")
    with path.open("rb") as src, temp.open("wb") as dst:
        while chunk := src.read(1 << 20):
            dst.write(chunk)


def _sha256(path: Path) -> str:
    digest = hashlib.sha256()
    with path.open("rb") as handle:
        while chunk := handle.read(1 << 20):
            digest.update(chunk)
    return digest.hexdigest()


__all__ = ["ImageInfo", "MediaError", "MediaStore", "VideoInfo", "display_name"]
