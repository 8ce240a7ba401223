"""Validate user-supplied reference media by looking at the bytes, never the file name.

Discord attachments arrive with whatever name and content type the client chose, so a
``.png`` may be a GIF, a text file or half a download. Everything here decides from magic
bytes and a real decode, and every rejection is one :class:`MediaError` whose message says
what is wrong, with the value and the limit, in words a Discord user can act on.

The limits mirror what Kling Video O3 accepts for reference images and videos.
"""

from __future__ import annotations

import codecs
import math
import re
import warnings
from dataclasses import dataclass
from io import BytesIO
from pathlib import Path

import av
from PIL import Image

__all__ = [
    "IMAGE_FORMATS",
    "IMAGE_MAX_ASPECT",
    "IMAGE_MAX_BYTES",
    "IMAGE_MAX_PIXELS",
    "IMAGE_MIN_SIDE",
    "VIDEO_CODECS",
    "VIDEO_CONTAINERS",
    "VIDEO_MAX_BYTES",
    "VIDEO_MAX_DURATION_S",
    "VIDEO_MAX_LONG_SIDE",
    "VIDEO_MIN_DURATION_S",
    "VIDEO_MIN_SHORT_SIDE",
    "ImageInfo",
    "MediaError",
    "VideoInfo",
    "inspect_image",
    "inspect_media",
    "inspect_video",
    "probe_video",
    "sniff",
]

MB = 1024 * 1024

IMAGE_FORMATS = ("jpeg", "png", "webp")
IMAGE_MAX_BYTES = 10 * MB
IMAGE_MIN_SIDE = 300
# Aspect ratio limit expressed as an exact fraction (5/2) so the 2.5:1 boundary is
# compared in integers and a float rounding error can never reject an exact 750×300.
IMAGE_MAX_ASPECT_NUM = 5
IMAGE_MAX_ASPECT_DEN = 2
IMAGE_MAX_ASPECT = IMAGE_MAX_ASPECT_NUM / IMAGE_MAX_ASPECT_DEN
# Far above any sensible reference photo (a 24 MP camera is well under) but low enough
# that a decompression bomb is refused before Pillow allocates gigabytes for it.
IMAGE_MAX_PIXELS = 50_000_000

VIDEO_CONTAINERS = ("mp4", "mov")
VIDEO_CODECS = ("h264", "hevc")
VIDEO_MAX_BYTES = 200 * MB
VIDEO_MIN_DURATION_S = 3.0
VIDEO_MAX_DURATION_S = 10.0
VIDEO_MIN_SHORT_SIDE = 720
VIDEO_MAX_LONG_SIDE = 2160

# Enough for every magic number below, and for an SVG whose <svg> tag follows an XML
# prolog, a doctype and a comment.
SNIFF_BYTES = 4096

_USE_IMAGE = "use JPEG, PNG or WebP"
_USE_VIDEO = "use MP4 or MOV (H.264/H.265)"

_PILLOW_FORMATS = {"jpeg": "JPEG", "png": "PNG", "webp": "WEBP"}

# How each sniffed kind is described when it is the wrong kind of file.
_KIND_WORDS = {
    "jpeg": "a JPEG image",
    "png": "a PNG image",
    "webp": "a WebP image",
    "gif": "a GIF image",
    "svg": "an SVG image",
    "bmp": "a BMP image",
    "tiff": "a TIFF image",
    "mp4": "an MP4 video",
    "mov": "a MOV video",
    "webm": "a WebM video",
    "pdf": "a PDF document",
    "text": "a text file",
}
_IMAGE_KINDS = frozenset({"jpeg", "png", "webp", "gif", "svg", "bmp", "tiff"})
_VIDEO_KINDS = frozenset({"mp4", "mov", "webm"})

_CODEC_WORDS = {"h264": "H.264", "hevc": "H.265"}


class MediaError(ValueError):
    """One clear problem with one file."""

    def __init__(self, name: str, problem: str) -> None:
        super().__init__(f"{name}: {problem}")
        self.name = name
        self.problem = problem


@dataclass(frozen=True)
class ImageInfo:
    format: str  # "jpeg" | "png" | "webp"
    width: int
    height: int
    size_bytes: int


@dataclass(frozen=True)
class VideoInfo:
    container: str  # "mp4" | "mov"
    codec: str  # "h264" | "hevc" (or whatever the file holds, from probe_video)
    width: int
    height: int
    duration_s: float
    fps: float
    has_audio: bool
    size_bytes: int


# --------------------------------------------------------------------------- sniffing


def sniff(data: bytes) -> str | None:
    """Name the file type from its first bytes, or None if unrecognised.

    Only the first few KB are looked at, so callers may pass a prefix of a large file.
    """
    if data.startswith(b"\xff\xd8\xff"):
        return "jpeg"
    if data.startswith(b"\x89PNG\r\n\x1a\n"):
        return "png"
    if data[:4] == b"RIFF" and data[8:12] == b"WEBP":
        return "webp"
    if data[:6] in (b"GIF87a", b"GIF89a"):
        return "gif"
    # "BM" alone would also match text ("BMW…"); the header's reserved bytes are zero.
    if data[:2] == b"BM" and data[6:10] == b"\x00\x00\x00\x00":
        return "bmp"
    if data[:4] in (b"II*\x00", b"MM\x00*"):
        return "tiff"
    if data.startswith(b"%PDF-"):
        return "pdf"
    # Matroska and WebM share the EBML magic; both are refused the same way, so they
    # are both reported as "webm" (the form browsers and Discord clients produce).
    if data.startswith(b"\x1a\x45\xdf\xa3"):
        return "webm"
    iso = _sniff_iso_media(data)
    if iso is not None:
        return iso
    if _looks_like_text(data):
        return "svg" if _looks_like_svg(data) else "text"
    return None


def _sniff_iso_media(data: bytes) -> str | None:
    """MP4 vs QuickTime, from the ISO-BMFF box layout rather than the extension."""
    # The first box's 32-bit size starts with a zero byte (boxes up front are small, or
    # the size is 0/1 for "to end of file"/"64-bit"); without that, "I'm free to…" in a
    # text file would read as a "free" box.
    if len(data) < 8 or data[0] != 0:
        return None
    box_type = data[4:8]
    if box_type == b"ftyp":
        major_brand = data[8:12]
        return "mov" if major_brand == b"qt  " else "mp4"
    # Old QuickTime files have no ftyp box and start straight with one of these atoms.
    if box_type in (b"moov", b"mdat", b"wide", b"free", b"skip", b"pnot"):
        return "mov"
    return None


def _looks_like_text(data: bytes) -> bool:
    sample = data[:SNIFF_BYTES]
    if not sample or b"\x00" in sample:
        return False
    # Incremental decode so a multi-byte character cut off by the prefix is not an error.
    try:
        text = codecs.getincrementaldecoder("utf-8")().decode(sample, final=False)
    except UnicodeDecodeError:
        return False
    controls = sum(1 for ch in text if ord(ch) < 32 and ch not in "\t\n\r\f")
    return controls <= len(text) // 100


def _looks_like_svg(data: bytes) -> bool:
    head = data[:SNIFF_BYTES].decode("utf-8", errors="ignore").lstrip("\ufeff \t\r\n").lower()
    return head.startswith("<") and "<svg" in head


# ----------------------------------------------------------------------------- images


def inspect_image(name: str, data: bytes) -> ImageInfo:
    """Check that ``data`` is a JPEG/PNG/WebP Kling will accept; raise MediaError if not."""
    if not data:
        raise MediaError(name, "empty file (0 bytes)")
    kind = sniff(data)
    if kind not in IMAGE_FORMATS:
        raise MediaError(name, _wrong_image_kind(kind))
    if len(data) > IMAGE_MAX_BYTES:
        raise MediaError(name, _over_size_limit(len(data), IMAGE_MAX_BYTES))
    width, height = _decode_image(name, data, kind)
    return ImageInfo(format=kind, width=width, height=height, size_bytes=len(data))


def _wrong_image_kind(kind: str | None) -> str:
    if kind in ("gif", "svg", "bmp", "tiff"):
        return f"{kind.upper()} images are not supported; {_USE_IMAGE}"
    if kind is None:
        return f"not an image — the file type is not recognised; {_USE_IMAGE}"
    return f"not an image — looks like {_KIND_WORDS[kind]}; {_USE_IMAGE}"


def _decode_image(name: str, data: bytes, kind: str) -> tuple[int, int]:
    """Open, check the header facts, then fully decode; returns (width, height)."""
    # catch_warnings() swaps process-wide state, so a concurrent call in another thread
    # could briefly see the default filter; safety does not depend on it, because our own
    # (lower) pixel cap below rejects anything Pillow would only have warned about.
    with warnings.catch_warnings():
        # Pillow only *warns* between its own limit and twice that; make it an error
        # so a bomb is refused before the image is even handed back.
        warnings.simplefilter("error", Image.DecompressionBombWarning)
        try:
            with Image.open(BytesIO(data), formats=[_PILLOW_FORMATS[kind]]) as image:
                width, height = image.size
                # Size checks come before load(): they need only the header, and the
                # pixel cap must run before the decoder allocates anything.
                _check_image_pixels(name, width, height)
                _check_image_sides(name, width, height)
                _check_image_aspect(name, width, height)
                # verify() only checks chunk CRCs; load() proves every pixel decodes,
                # which is what catches a truncated upload.
                image.load()
        except MediaError:
            raise
        except (Image.DecompressionBombError, Image.DecompressionBombWarning) as exc:
            raise MediaError(name, _bomb_problem(exc)) from None
        except Exception:
            # Hostile or damaged files make decoders fail in many ways (OSError,
            # SyntaxError, zlib, struct errors…); to the user they are all the same thing.
            raise MediaError(name, "the image data is truncated or corrupt") from None
    return width, height


def _check_image_pixels(name: str, width: int, height: int) -> None:
    pixels = width * height
    if pixels > IMAGE_MAX_PIXELS:
        raise MediaError(
            name,
            f"{width}×{height} px ({pixels / 1e6:.0f} megapixels) is too large — "
            f"images must be at most {IMAGE_MAX_PIXELS // 1_000_000} megapixels",
        )


def _bomb_problem(exc: Exception) -> str:
    """Describe an image Pillow refused before we could see its size ourselves."""
    limit = f"images must be at most {IMAGE_MAX_PIXELS // 1_000_000} megapixels"
    # Pillow's message is the only place the claimed size is available; if its wording
    # ever changes we still say what is wrong, just without the number.
    claimed = re.search(r"\((\d+) pixels\)", str(exc))
    if claimed is None:
        return f"the image is too large to decode safely — {limit}"
    megapixels = int(claimed.group(1)) / 1e6
    return f"{megapixels:.0f} megapixels is too large to decode safely — {limit}"


def _check_image_sides(name: str, width: int, height: int) -> None:
    if min(width, height) < IMAGE_MIN_SIDE:
        raise MediaError(
            name,
            f"{width}×{height} px is too small — each side must be at least {IMAGE_MIN_SIDE} px",
        )


def _check_image_aspect(name: str, width: int, height: int) -> None:
    long_side, short_side = max(width, height), min(width, height)
    if long_side * IMAGE_MAX_ASPECT_DEN <= short_side * IMAGE_MAX_ASPECT_NUM:
        return
    # Round the shown ratio *up* so a just-over image never reads "2.50:1 is too wide".
    ratio = f"{-(-100 * long_side // short_side) / 100:.2f}"
    limits = f"must be between 1:{IMAGE_MAX_ASPECT:g} and {IMAGE_MAX_ASPECT:g}:1"
    if width > height:
        raise MediaError(name, f"aspect ratio {ratio}:1 is too wide — {limits}")
    raise MediaError(name, f"aspect ratio 1:{ratio} is too tall — {limits}")


def _over_size_limit(size: int, limit: int) -> str:
    # Rounded up for the same reason as the aspect ratio: "10.0 MB is over the 10 MB
    # limit" would look like a bug to the user.
    shown = math.ceil(size * 10 / MB) / 10
    return f"{shown:.1f} MB is over the {limit // MB} MB limit"


# ----------------------------------------------------------------------------- videos


def probe_video(path: Path) -> VideoInfo:
    """Read a video's facts without applying any limit; raise MediaError if unreadable."""
    return _probe(path.name, path)


def inspect_video(name: str, path: Path) -> VideoInfo:
    """Check that the file at ``path`` is a reference video Kling will accept.

    Only headers and the first frame are read, so a 200 MB upload is never held in memory.
    """
    size = _file_size(name, path)
    if size == 0:
        raise MediaError(name, "empty file (0 bytes)")
    kind = sniff(_read_head(name, path))
    if kind not in VIDEO_CONTAINERS:
        raise MediaError(name, _wrong_video_kind(kind))
    if size > VIDEO_MAX_BYTES:
        raise MediaError(name, _over_size_limit(size, VIDEO_MAX_BYTES))
    info = _probe(name, path)
    _check_video_codec(name, info)
    _check_video_duration(name, info.duration_s)
    _check_video_sides(name, info.width, info.height)
    _check_video_data(name, path, size)
    return info


def _wrong_video_kind(kind: str | None) -> str:
    if kind == "webm":
        return f"WebM video is not supported; {_USE_VIDEO}"
    if kind == "gif":
        return f"GIF animations are not supported; {_USE_VIDEO}"
    if kind is None:
        return f"not a video — the file type is not recognised; {_USE_VIDEO}"
    return f"not a video — looks like {_KIND_WORDS[kind]}; {_USE_VIDEO}"


def _probe(name: str, path: Path) -> VideoInfo:
    size = _file_size(name, path)
    kind = sniff(_read_head(name, path))
    try:
        with av.open(str(path), mode="r") as container:
            if not container.streams.video:
                raise MediaError(name, "no video track found — the file may be truncated or corrupt")
            stream = container.streams.video[0]
            duration_s = _container_duration(container)
            if duration_s is None:
                raise MediaError(name, "the video's duration could not be determined")
            rate = stream.average_rate or stream.guessed_rate or stream.base_rate
            return VideoInfo(
                container=kind if kind in VIDEO_CONTAINERS else container.format.name.split(",")[0],
                codec=stream.codec_context.name,
                width=stream.codec_context.width,
                height=stream.codec_context.height,
                duration_s=duration_s,
                fps=float(rate) if rate else 0.0,
                has_audio=bool(container.streams.audio),
                size_bytes=size,
            )
    except MediaError:
        raise
    except (av.FFmpegError, OSError, ValueError) as exc:
        raise MediaError(name, f"could not be read as a video ({_ffmpeg_reason(exc)})") from None


def _container_duration(container: av.container.InputContainer) -> float | None:
    """Whole-file duration in seconds (the longest stream), as players report it."""
    if container.duration is not None and container.duration > 0:
        return container.duration / av.time_base
    longest: float | None = None
    for stream in container.streams:
        if stream.duration is not None and stream.time_base is not None:
            seconds = float(stream.duration * stream.time_base)
            longest = seconds if longest is None else max(longest, seconds)
    return longest


def _check_video_codec(name: str, info: VideoInfo) -> None:
    if info.codec not in VIDEO_CODECS:
        raise MediaError(name, f"the video is encoded as {info.codec}, which is not supported; use H.264 or H.265")


def _check_video_duration(name: str, duration_s: float) -> None:
    span = f"reference videos must be {VIDEO_MIN_DURATION_S:g}–{VIDEO_MAX_DURATION_S:g} s"
    if duration_s < VIDEO_MIN_DURATION_S:
        shown = _seconds_beyond(duration_s, VIDEO_MIN_DURATION_S)
        raise MediaError(name, f"{shown} s is too short — {span}")
    if duration_s > VIDEO_MAX_DURATION_S:
        shown = _seconds_beyond(duration_s, VIDEO_MAX_DURATION_S)
        raise MediaError(name, f"{shown} s is too long — {span}")


def _seconds_beyond(value: float, limit: float) -> str:
    """Format a rejected duration with just enough decimals to differ from the limit."""
    for decimals in (1, 2, 3):
        shown = f"{value:.{decimals}f}"
        if float(shown) != limit:
            return shown
    return f"{value:.6f}"


def _check_video_sides(name: str, width: int, height: int) -> None:
    # Sides, not width/height: a portrait phone video is stored landscape plus a
    # rotation flag, and both checks are the same either way round.
    if min(width, height) < VIDEO_MIN_SHORT_SIDE:
        raise MediaError(
            name,
            f"{width}×{height} is too small — the shorter side must be at least {VIDEO_MIN_SHORT_SIDE} px",
        )
    if max(width, height) > VIDEO_MAX_LONG_SIDE:
        raise MediaError(
            name,
            f"{width}×{height} is too large — the longer side must be at most {VIDEO_MAX_LONG_SIDE} px",
        )


def _check_video_data(name: str, path: Path, size: int) -> None:
    """Headers can be intact over missing or garbage data: check the sample index fits in
    the file (an upload cut short after an up-front index still probes fine) and that the
    first frame really decodes."""
    if not _data_is_complete(path, size):
        raise MediaError(name, "the video data is truncated or corrupt")


def _data_is_complete(path: Path, size: int) -> bool:
    try:
        with av.open(str(path), mode="r") as container:
            if _index_end(container) > size:
                return False
            return any(True for _frame in container.decode(video=0))
    except (av.FFmpegError, OSError, ValueError):
        return False


def _index_end(container: av.container.InputContainer) -> int:
    """The byte offset just past the last sample the container's index points at."""
    end = 0
    for stream in container.streams:
        entries = stream.index_entries
        if entries is not None and len(entries) > 0:
            last = entries[len(entries) - 1]
            end = max(end, last.pos + last.size)
    return end


def _ffmpeg_reason(exc: Exception) -> str:
    reason = getattr(exc, "strerror", None) or str(exc) or type(exc).__name__
    return reason.rstrip(".").lower() if reason else "unknown error"


# ------------------------------------------------------------------------ either kind


def inspect_media(name: str, path: Path) -> ImageInfo | VideoInfo:
    """Validate a file whose kind the caller does not know, dispatching on its bytes."""
    size = _file_size(name, path)
    if size == 0:
        raise MediaError(name, "empty file (0 bytes)")
    kind = sniff(_read_head(name, path))
    if kind in _VIDEO_KINDS:
        return inspect_video(name, path)
    if kind in _IMAGE_KINDS:
        # Refuse an oversized image before reading it, so memory stays bounded.
        if kind in IMAGE_FORMATS and size > IMAGE_MAX_BYTES:
            raise MediaError(name, _over_size_limit(size, IMAGE_MAX_BYTES))
        return inspect_image(name, _read_all(name, path))
    use = "use JPEG, PNG or WebP images, or MP4 or MOV videos"
    if kind is None:
        raise MediaError(name, f"not an image or video — the file type is not recognised; {use}")
    raise MediaError(name, f"not an image or video — looks like {_KIND_WORDS[kind]}; {use}")


# ------------------------------------------------------------------------ file access


def _file_size(name: str, path: Path) -> int:
    try:
        return path.stat().st_size
    except OSError as exc:
        raise MediaError(name, f"the file could not be read ({exc.strerror or exc})") from None


def _read_head(name: str, path: Path) -> bytes:
    try:
        with path.open("rb") as handle:
            return handle.read(SNIFF_BYTES)
    except OSError as exc:
        raise MediaError(name, f"the file could not be read ({exc.strerror or exc})") from None


def _read_all(name: str, path: Path) -> bytes:
    try:
        return path.read_bytes()
    except OSError as exc:
        raise MediaError(name, f"the file could not be read ({exc.strerror or exc})") from None
