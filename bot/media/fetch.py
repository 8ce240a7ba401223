"""Fetching bytes from URLs (and file:// paths): streamed to disk, capped, time-limited, atomic."""

from __future__ import annotations

import asyncio
import os
import shutil
from pathlib import Path
from urllib.parse import unquote, urlparse

import httpx

from bot.providers.base import ErrorCode, ProviderError

DOWNLOAD_TIMEOUT_S = 300.0
_CHUNK = 256 * 1024


class FetchError(Exception):
    """A URL could not be fetched; the message says why in plain words."""

    def __init__(self, message: str, *, status: int | None = None, transient: bool = False) -> None:
        super().__init__(message)
        self.status = status
        self.transient = transient


def _mb(size: int) -> str:
    return f"{size / 1_000_000:.1f} MB"


async def fetch_to_file(
    http: httpx.AsyncClient,
    url: str,
    dest: Path,
    *,
    max_bytes: int,
    timeout_s: float = DOWNLOAD_TIMEOUT_S,
    attempts: int = 3,
) -> int:
    """Stream `url` into `dest` (replaced atomically when complete). Returns the byte count.

    5xx answers and broken connections are retried (a GET is safe to repeat); 4xx and oversize are final.
    """
    parsed = urlparse(url)
    if parsed.scheme == "file":
        return _copy_local(Path(unquote(parsed.path)), dest, max_bytes)
    if parsed.scheme not in ("http", "https"):
        raise FetchError(f"cannot fetch {parsed.scheme or 'a schemeless'} URL; use http(s)")
    for attempt in range(1, attempts + 1):
        try:
            async with asyncio.timeout(timeout_s):
                return await _stream(http, url, dest, max_bytes)
        except FetchError as exc:
            if not exc.transient or attempt == attempts:
                raise
        except (httpx.TransportError, TimeoutError) as exc:
            if attempt == attempts:
                what = "timed out" if isinstance(exc, TimeoutError | httpx.TimeoutException) else "connection failed"
                raise FetchError(f"download {what} after {attempts} attempts", transient=True) from None
        await asyncio.sleep(min(2.0 ** (attempt - 1) * 0.5, 5.0))
    raise AssertionError("unreachable")


async def _stream(http: httpx.AsyncClient, url: str, dest: Path, max_bytes: int) -> int:
    dest.parent.mkdir(parents=True, exist_ok=True)
    partial = dest.with_name(dest.name + ".part")
    async with http.stream("GET", url, follow_redirects=True) as response:
        if response.status_code >= 400:
            transient = response.status_code >= 500 or response.status_code == 429
            raise FetchError(f"the server answered HTTP {response.status_code}", status=response.status_code,
                             transient=transient)  # fmt: skip
        declared = response.headers.get("content-length")
        if declared and declared.isdigit() and int(declared) > max_bytes:
            raise FetchError(f"the file is {_mb(int(declared))}, over the {_mb(max_bytes)} limit")
        size = 0
        try:
            with partial.open("wb") as out:
                async for chunk in response.aiter_bytes(_CHUNK):
                    size += len(chunk)
                    if size > max_bytes:
                        raise FetchError(f"the file is over the {_mb(max_bytes)} limit")
                    out.write(chunk)
        except BaseException:
            partial.unlink(missing_ok=True)
            raise
    os.replace(partial, dest)
    return size


def _copy_local(source: Path, dest: Path, max_bytes: int) -> int:
    if not source.is_file():
        raise FetchError(f"{source} does not exist")
    size = source.stat().st_size
    if size > max_bytes:
        raise FetchError(f"the file is {_mb(size)}, over the {_mb(max_bytes)} limit")
    if source.resolve() != dest.resolve():
        dest.parent.mkdir(parents=True, exist_ok=True)
        partial = dest.with_name(dest.name + ".part")
        shutil.copyfile(source, partial)
        os.replace(partial, dest)
    return size


async def fetch_output(http: httpx.AsyncClient, url: str, dest: Path, *, max_bytes: int, provider: str) -> None:
    """Download a finished clip and check that it really is an MP4."""
    from bot.media.inspect import sniff

    try:
        await fetch_to_file(http, url, dest, max_bytes=max_bytes)
    except FetchError as exc:
        code = ErrorCode.PROVIDER_TRANSIENT if exc.transient else ErrorCode.OUTPUT_INVALID
        raise ProviderError(code, f"downloading the clip failed: {exc}", provider=provider,
                            http_status=exc.status) from None  # fmt: skip
    with dest.open("rb") as handle:
        head = handle.read(64)
    if sniff(head) not in ("mp4", "mov"):
        dest.unlink(missing_ok=True)
        raise ProviderError(ErrorCode.OUTPUT_INVALID, "the provider's output is not an MP4 video", provider=provider)
