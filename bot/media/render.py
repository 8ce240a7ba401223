"""The offline preview renderer behind the ``local`` provider.

This is *not* AI generation and must never pass for it: it makes a slideshow-style clip
(pan-and-zoom over the reference images, or the reference video's own frames, or a
gradient title card) with the prompt as a caption, and burns a visible
"PREVIEW — not AI generated" label into every frame. It exists so the whole bot —
quotas, queues, delivery — can run end to end without spending provider credits.

Everything is streamed: one output frame and one audio block exist at a time, so memory
stays flat however long the clip is. The output is written beside ``out_path`` and moved
into place only when complete.
"""

from __future__ import annotations

import math
import os
import queue
import re
import tempfile
import threading
from collections.abc import Callable, Generator, Iterator
from dataclasses import dataclass
from fractions import Fraction
from functools import lru_cache
from pathlib import Path
from typing import TypeVar

import av
import numpy as np
from PIL import Image, ImageDraw, ImageFilter, ImageFont, ImageOps

__all__ = [
    "FPS",
    "FRAME_SIZES",
    "PREVIEW_LABEL",
    "RenderSpec",
    "preview_label_box",
    "render_preview",
]

FRAME_SIZES: dict[str, tuple[int, int]] = {"16:9": (1280, 720), "9:16": (720, 1280), "1:1": (720, 720)}
FPS = 24

PREVIEW_LABEL = "PREVIEW — not AI generated"
# Written into the MP4 metadata too, so the file says what it is even once it is
# downloaded and separated from the Discord message.
METADATA_COMMENT = "reelbot offline preview — not AI generated"

AUDIO_RATE = 48_000
AUDIO_LAYOUT = "stereo"
_AUDIO_CHANNELS = 2
# The AAC encoder takes exactly this many samples per frame (the last may be shorter).
_AAC_FRAME_SAMPLES = 1024

# veryfast keeps a 5 s 720p clip around a second or two on two cores; the quality
# difference from slower presets is invisible at these bit rates for a preview.
_X264_OPTIONS = {"preset": "veryfast", "crf": "23"}

# Ken Burns: images are prepared this much larger than the frame, and the view drifts
# between showing all of that and a frame-sized window of it.
_KEN_BURNS_ZOOM = 1.15
_CROSSFADE_S = 0.6
# Beyond this mismatch between picture and frame aspect ratios, cropping to fill would
# throw away most of the picture (a landscape photo in a 9:16 frame), so it is shown
# whole over a blurred copy of itself instead.
_MAX_CROP_MISMATCH = 1.6
_AUDIO_FADE_S = 0.05
# Lookup table dimming a letterbox backdrop to 60 %, so the picture itself stands out.
_DIM = [value * 6 // 10 for value in range(256)] * 3

_CAPTION_MAX_LINES = 3
_T = TypeVar("_T")
_FONT_FILE = "DejaVuSans.ttf"


@dataclass(frozen=True)
class RenderSpec:
    images: tuple[Path, ...]  # 0..7 reference image files (already validated)
    video: Path | None  # optional reference video (validated)
    prompt: str  # caption text (may be long: wrapped to at most 3 lines, ellipsized)
    aspect_ratio: str  # key of FRAME_SIZES
    duration_s: int  # exact output duration
    sound: bool  # generated tone track
    keep_original_sound: bool  # keep the reference video's audio (when it has any)


def render_preview(spec: RenderSpec, out_path: Path, progress: Callable[[float], None] | None = None) -> None:
    """Render ``spec`` to an MP4 at ``out_path`` (H.264 + optional AAC), synchronously.

    ``progress`` is called with a fraction in 0..1 now and then; an exception raised by it
    aborts the render (and leaves nothing at ``out_path``), which callers may use to cancel.
    """
    _check_spec(spec)
    size = FRAME_SIZES[spec.aspect_ratio]
    n_frames = spec.duration_s * FPS
    report = progress or (lambda _fraction: None)
    report(0.0)

    title_card = not spec.images and spec.video is None
    overlay = _build_overlay(size, spec.prompt, centred_caption=title_card)
    # Drawing (Pillow), colour conversion (swscale) and encoding (x264) all release the
    # GIL, so preparing the next frames on another thread overlaps them with encoding.
    frames = _prefetch(_video_frames(_pictures(spec, size, n_frames), overlay), depth=4)
    audio = _audio_blocks(spec, spec.duration_s * AUDIO_RATE)

    tmp_path = _temp_path_beside(out_path)
    try:
        _encode(tmp_path, size, n_frames, frames, audio, report)
        # mkstemp makes the file owner-only; the finished clip is an ordinary output file.
        tmp_path.chmod(0o644)
        os.replace(tmp_path, out_path)
    except BaseException:
        tmp_path.unlink(missing_ok=True)
        raise
    finally:
        frames.close()
    report(1.0)


def preview_label_box(aspect_ratio: str) -> tuple[int, int, int, int]:
    """Where the preview label sits in a frame: (left, top, right, bottom) in pixels."""
    return _label_layout(FRAME_SIZES[aspect_ratio])[1]


def _check_spec(spec: RenderSpec) -> None:
    if spec.aspect_ratio not in FRAME_SIZES:
        raise ValueError(f"unknown aspect ratio {spec.aspect_ratio!r}; expected one of {sorted(FRAME_SIZES)}")
    if spec.duration_s < 1:
        raise ValueError(f"duration must be at least 1 s, got {spec.duration_s}")


def _temp_path_beside(out_path: Path) -> Path:
    # Same directory so os.replace is an atomic rename, never a cross-device copy.
    fd, name = tempfile.mkstemp(dir=out_path.parent, prefix=f".{out_path.stem}.", suffix=".part.mp4")
    os.close(fd)
    return Path(name)


# ----------------------------------------------------------------------------- encoding


def _encode(
    path: Path,
    size: tuple[int, int],
    n_frames: int,
    frames: Iterator[av.VideoFrame],
    audio: Iterator[np.ndarray] | None,
    report: Callable[[float], None],
) -> None:
    # faststart puts the index first so Discord can start playing before the download ends.
    with av.open(str(path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out:
        out.metadata["comment"] = METADATA_COMMENT
        video = _add_video_stream(out, size)
        audio_stream = _add_audio_stream(out) if audio is not None else None
        samples_sent = 0
        for index in range(n_frames):
            out.mux(video.encode(next(frames)))
            if audio is not None and audio_stream is not None:
                # Keep audio in step with video so the muxer never has to buffer one
                # stream while waiting for the other.
                due = (index + 1) * AUDIO_RATE // FPS
                samples_sent = _encode_audio_until(out, audio_stream, audio, samples_sent, due)
            if index % FPS == 0:
                report(index / n_frames)
        out.mux(video.encode(None))
        if audio_stream is not None:
            out.mux(audio_stream.encode(None))


def _add_video_stream(out: av.container.OutputContainer, size: tuple[int, int]) -> av.VideoStream:
    stream = out.add_stream("libx264", rate=FPS, options=dict(_X264_OPTIONS))
    stream.width, stream.height = size
    stream.pix_fmt = "yuv420p"
    stream.codec_context.time_base = Fraction(1, FPS)
    # Frame threading (x264's default) encodes ~30% faster than the slice threading
    # PyAV asks for; the extra frames of latency don't matter for a file.
    stream.codec_context.thread_type = "FRAME"
    # Tag BT.709 (and convert with it, below) so players don't guess and shift colours.
    stream.codec_context.colorspace = av.video.reformatter.Colorspace.ITU709
    stream.codec_context.color_primaries = 1  # AVCOL_PRI_BT709
    stream.codec_context.color_trc = 1  # AVCOL_TRC_BT709
    stream.codec_context.color_range = av.video.reformatter.ColorRange.MPEG
    return stream


def _add_audio_stream(out: av.container.OutputContainer) -> av.AudioStream:
    stream = out.add_stream("aac", rate=AUDIO_RATE, layout=AUDIO_LAYOUT)
    stream.codec_context.time_base = Fraction(1, AUDIO_RATE)
    return stream


def _video_frames(
    pictures: Iterator[Image.Image], overlay: list[tuple[tuple[int, int], Image.Image]]
) -> Generator[av.VideoFrame, None, None]:
    """Label and caption each picture, and convert it to the encoder's format."""
    for index, picture in enumerate(pictures):
        for position, tile in overlay:
            picture.paste(tile, position, tile)
        frame = av.VideoFrame.from_image(picture).reformat(
            format="yuv420p", dst_colorspace="ITU709", dst_color_range="MPEG"
        )
        frame.pts = index
        frame.time_base = Fraction(1, FPS)
        yield frame


def _encode_audio_until(
    out: av.container.OutputContainer,
    stream: av.AudioStream,
    blocks: Iterator[np.ndarray],
    samples_sent: int,
    due: int,
) -> int:
    while samples_sent < due:
        block = next(blocks, None)
        if block is None:
            break
        frame = av.AudioFrame.from_ndarray(np.ascontiguousarray(block), format="fltp", layout=AUDIO_LAYOUT)
        frame.sample_rate = AUDIO_RATE
        frame.pts = samples_sent
        frame.time_base = Fraction(1, AUDIO_RATE)
        out.mux(stream.encode(frame))
        samples_sent += block.shape[1]
    return samples_sent


def _prefetch(items: Generator[_T, None, None], depth: int) -> Generator[_T, None, None]:
    """Run ``items`` on a worker thread, up to ``depth`` ahead; its errors re-raise here.

    Closing the returned generator stops the worker (and closes ``items`` on it, so the
    decoders it holds are released), so an aborted render leaves no thread behind.
    """
    # None marks the end; an exception object carries a failure across the thread.
    ready: queue.Queue[_T | BaseException | None] = queue.Queue(maxsize=depth)
    stop = threading.Event()

    def offer(message: _T | BaseException | None) -> None:
        while not stop.is_set():
            try:
                ready.put(message, timeout=0.1)
                return
            except queue.Full:
                continue

    def produce() -> None:
        try:
            for item in items:
                if stop.is_set():
                    return
                offer(item)
            offer(None)
        except BaseException as exc:  # handed to the consumer, which re-raises it
            offer(exc)
        finally:
            items.close()

    worker = threading.Thread(target=produce, name="render-frames", daemon=True)
    worker.start()
    try:
        while (message := ready.get()) is not None:
            if isinstance(message, BaseException):
                raise message
            yield message
    finally:
        stop.set()
        worker.join()


# ----------------------------------------------------------------------------- pictures


def _pictures(spec: RenderSpec, size: tuple[int, int], n_frames: int) -> Generator[Image.Image, None, None]:
    """One fresh RGB frame-sized image per output frame (callers may draw on it)."""
    if spec.images:
        return _slideshow([_image_loader(path) for path in spec.images], size, n_frames)
    if spec.video is not None:
        return _video_pictures(spec.video, size, n_frames)
    return _slideshow([_gradient], size, n_frames)


def _image_loader(path: Path) -> Callable[[tuple[int, int]], Image.Image]:
    return lambda canvas: _prepare_image(path, canvas)


def _prepare_image(path: Path, canvas: tuple[int, int]) -> Image.Image:
    """Load a reference image and fit it to ``canvas`` (cover-crop, or whole over a blur)."""
    with Image.open(path) as opened:
        # draft() lets the JPEG decoder downscale while decoding: a 40 MP photo costs a
        # fraction of the time and memory when we only need ~1500 px.
        # Square request: EXIF rotation may swap the sides after decoding.
        opened.draft("RGB", (max(canvas), max(canvas)))
        image = ImageOps.exif_transpose(opened).convert("RGB")
    return _fit(image, canvas)


def _fit(image: Image.Image, canvas: tuple[int, int]) -> Image.Image:
    if _aspect_mismatch(image.size, canvas) <= _MAX_CROP_MISMATCH:
        return ImageOps.fit(image, canvas, Image.Resampling.LANCZOS)
    whole = ImageOps.contain(image, canvas, Image.Resampling.LANCZOS)
    return _over_backdrop(whole, ImageOps.fit(image, _backdrop_size(canvas)), canvas)


def _backdrop_size(size: tuple[int, int]) -> tuple[int, int]:
    # Blurring a tiny copy and scaling it up looks the same as blurring at full size,
    # at a hundredth of the cost — cheap enough to do on every video frame.
    return max(2, size[0] // 24), max(2, size[1] // 24)


def _over_backdrop(picture: Image.Image, tiny: Image.Image, size: tuple[int, int]) -> Image.Image:
    """``picture`` centred over a dimmed, blurred fill made from ``tiny`` (a small cover crop)."""
    backdrop = tiny.filter(ImageFilter.BoxBlur(1)).resize(size, Image.Resampling.BILINEAR)
    backdrop = backdrop.point(_DIM)
    backdrop.paste(picture, ((size[0] - picture.width) // 2, (size[1] - picture.height) // 2))
    return backdrop


def _aspect_mismatch(a: tuple[int, int], b: tuple[int, int]) -> float:
    ratio = (a[0] / a[1]) / (b[0] / b[1])
    return max(ratio, 1 / ratio)


def _gradient(canvas: tuple[int, int]) -> Image.Image:
    """A calm diagonal two-colour gradient for the title card."""
    width, height = canvas
    x = np.linspace(0.0, 1.0, width, dtype=np.float32)[None, :]
    y = np.linspace(0.0, 1.0, height, dtype=np.float32)[:, None]
    t = (0.6 * x + 0.4 * y)[..., None]
    start = np.array([24, 32, 72], dtype=np.float32)
    end = np.array([112, 48, 96], dtype=np.float32)
    pixels = start + (end - start) * t
    return Image.fromarray(pixels.astype(np.uint8))


def _slideshow(
    loaders: list[Callable[[tuple[int, int]], Image.Image]], size: tuple[int, int], n_frames: int
) -> Generator[Image.Image, None, None]:
    """Pan and zoom over each picture in turn, cross-fading at the joins."""
    canvas = (round(size[0] * _KEN_BURNS_ZOOM), round(size[1] * _KEN_BURNS_ZOOM))
    fade = min(_CROSSFADE_S * FPS, n_frames / len(loaders) / 2)
    prepared: dict[int, Image.Image] = {}
    for index in range(n_frames):
        weights = _slide_weights(index, len(loaders), n_frames, fade)
        # Only the (at most two) pictures on screen stay decoded: memory stays flat
        # however many references there are.
        for stale in [i for i in prepared if i not in weights]:
            del prepared[stale]
        layers = []
        for slide, (_weight, progress) in weights.items():
            if slide not in prepared:
                prepared[slide] = loaders[slide](canvas)
            layers.append(_ken_burns(prepared[slide], size, progress, slide))
        yield _blend(layers, [weight for weight, _progress in weights.values()])


def _slide_weights(index: int, n_slides: int, n_frames: int, fade: float) -> dict[int, tuple[float, float]]:
    """For one frame: {slide: (opacity, pan-zoom progress 0..1)} of the slides on screen.

    Each slide owns an equal share of the clip; a cross-fade of ``fade`` frames is centred
    on each join, and a slide's motion runs over everything it is visible for, so it keeps
    moving through the fades.
    """
    share = n_frames / n_slides
    t = index + 0.5  # sample the middle of the frame so the split is symmetric
    current = min(int(t // share), n_slides - 1)
    weights: dict[int, tuple[float, float]] = {}
    for slide in (current - 1, current, current + 1):
        if not 0 <= slide < n_slides:
            continue
        start = max(0.0, slide * share - fade / 2) if slide > 0 else 0.0
        end = min(float(n_frames), (slide + 1) * share + fade / 2) if slide < n_slides - 1 else n_frames
        if not start <= t < end:
            continue
        weights[slide] = (1.0, (t - start) / (end - start))
    if len(weights) == 2:
        first, second = sorted(weights)
        join = second * share
        alpha = min(1.0, max(0.0, (t - (join - fade / 2)) / fade))
        weights[first] = (1.0 - alpha, weights[first][1])
        weights[second] = (alpha, weights[second][1])
    return weights


def _ken_burns(picture: Image.Image, size: tuple[int, int], progress: float, slide: int) -> Image.Image:
    """The frame-sized view of ``picture`` at ``progress`` along this slide's move."""
    # Alternate zooming in and out, and the pan direction, so consecutive slides differ.
    zoom_in = slide % 2 == 0
    p = progress if zoom_in else 1.0 - progress
    scale = 1.0 + (_KEN_BURNS_ZOOM - 1.0) * p  # 1 = whole canvas, ZOOM = frame-sized window
    box_w, box_h = picture.width / scale, picture.height / scale
    direction = (1.0, 0.3) if slide % 3 != 2 else (-0.6, -1.0)
    fx = 0.5 + 0.5 * direction[0] * (progress - 0.5)
    fy = 0.5 + 0.5 * direction[1] * (progress - 0.5)
    left = (picture.width - box_w) * fx
    top = (picture.height - box_h) * fy
    return picture.resize(size, Image.Resampling.BILINEAR, box=(left, top, left + box_w, top + box_h))


def _blend(layers: list[Image.Image], weights: list[float]) -> Image.Image:
    if len(layers) == 1:
        return layers[0]
    return Image.blend(layers[0], layers[1], weights[1])


def _video_pictures(path: Path, size: tuple[int, int], n_frames: int) -> Generator[Image.Image, None, None]:
    """The reference video's frames, resampled to FPS and looped to fill the clip."""
    emitted = 0
    loop_start = 0.0  # output time at which the current pass through the video began
    while emitted < n_frames:
        held: av.VideoFrame | None = None
        held_picture: Image.Image | None = None
        first_time: float | None = None
        local = 0.0
        with av.open(str(path), mode="r") as container:
            stream = container.streams.video[0]
            stream.thread_type = "AUTO"
            step = 1.0 / float(stream.average_rate or FPS)
            for decoded_index, frame in enumerate(container.decode(stream)):
                if first_time is None:
                    first_time = frame.time if frame.time is not None else 0.0
                local = (frame.time - first_time) if frame.time is not None else decoded_index * step
                # Emit every output frame that falls before this decoded frame, showing
                # the previous one; converting lazily skips frames a faster source drops.
                while held is not None and emitted < n_frames and emitted / FPS - loop_start < local:
                    if held_picture is None:
                        held_picture = _fit_video_frame(held, size)
                    yield held_picture.copy()
                    emitted += 1
                if emitted >= n_frames:
                    return
                held, held_picture = frame, None
        if held is None:
            # Nothing decodable (inspect should have caught it): a title card beats a crash.
            yield from _slideshow([_gradient], size, n_frames - emitted)
            return
        loop_end = loop_start + local + step
        while emitted < n_frames and emitted / FPS < loop_end:
            if held_picture is None:
                held_picture = _fit_video_frame(held, size)
            yield held_picture.copy()
            emitted += 1
        loop_start = max(loop_end, emitted / FPS)


def _fit_video_frame(frame: av.VideoFrame, size: tuple[int, int]) -> Image.Image:
    """Display-orient a decoded frame and crop it to fill ``size``, or letterbox it."""
    rotation = round(frame.rotation / 90) * 90 % 360
    shown = (frame.height, frame.width) if rotation in (90, 270) else (frame.width, frame.height)
    if _aspect_mismatch(shown, size) <= _MAX_CROP_MISMATCH:
        return _centre_crop(_scaled_frame(frame, _cover(shown, size), rotation), size)
    picture = _scaled_frame(frame, _contain(shown, size), rotation)
    tiny_size = _backdrop_size(size)
    tiny = _centre_crop(_scaled_frame(frame, _cover(shown, tiny_size), rotation), tiny_size)
    return _over_backdrop(picture, tiny, size)


def _cover(shown: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    scale = max(size[0] / shown[0], size[1] / shown[1])
    return max(2, math.ceil(shown[0] * scale)), max(2, math.ceil(shown[1] * scale))


def _contain(shown: tuple[int, int], size: tuple[int, int]) -> tuple[int, int]:
    scale = min(size[0] / shown[0], size[1] / shown[1])
    return min(size[0], max(2, round(shown[0] * scale))), min(size[1], max(2, round(shown[1] * scale)))


def _scaled_frame(frame: av.VideoFrame, shown_size: tuple[int, int], rotation: int) -> Image.Image:
    """Scale in swscale (much faster than Pillow), then rotate to display orientation."""
    sideways = rotation in (90, 270)
    coded = (shown_size[1], shown_size[0]) if sideways else shown_size
    picture = frame.reformat(width=coded[0], height=coded[1], format="rgb24").to_image()
    if rotation:
        # VideoFrame.rotation is counter-clockwise, as is Image.rotate.
        picture = picture.rotate(rotation, expand=True)
    return picture


def _centre_crop(picture: Image.Image, size: tuple[int, int]) -> Image.Image:
    if picture.size == size:
        return picture
    left = (picture.width - size[0]) // 2
    top = (picture.height - size[1]) // 2
    return picture.crop((left, top, left + size[0], top + size[1]))


# ------------------------------------------------------------------------------ overlay


def _build_overlay(
    size: tuple[int, int], prompt: str, *, centred_caption: bool
) -> list[tuple[tuple[int, int], Image.Image]]:
    """Pre-rendered RGBA tiles (position, tile): drawn once, pasted on every frame."""
    tiles = [_label_tile(size)]
    caption = _caption_tile(size, prompt, centred=centred_caption)
    if caption is not None:
        tiles.append(caption)
    return tiles


def _label_layout(size: tuple[int, int]) -> tuple[str, tuple[int, int, int, int], int]:
    """(label text, box, font size) — shared by the drawing and preview_label_box()."""
    font_size = max(14, round(min(size) * 0.03))
    font = _font(font_size)
    text = PREVIEW_LABEL if _can_draw(font, "—") else PREVIEW_LABEL.replace("—", "-")
    left, top, right, bottom = font.getbbox(text)
    pad = font_size // 2
    margin = max(12, min(size) // 40)
    box = (margin, margin, margin + (right - left) + 2 * pad, margin + (bottom - top) + 2 * pad)
    return text, box, font_size


def _label_tile(size: tuple[int, int]) -> tuple[tuple[int, int], Image.Image]:
    text, box, font_size = _label_layout(size)
    font = _font(font_size)
    tile = Image.new("RGBA", (box[2] - box[0], box[3] - box[1]), (0, 0, 0, 0))
    draw = ImageDraw.Draw(tile)
    draw.rounded_rectangle((0, 0, tile.width - 1, tile.height - 1), radius=font_size // 3, fill=(0, 0, 0, 190))
    left, top, _right, _bottom = font.getbbox(text)
    pad = font_size // 2
    draw.text((pad - left, pad - top), text, font=font, fill=(255, 255, 255, 255))
    return (box[0], box[1]), tile


def _caption_tile(size: tuple[int, int], prompt: str, *, centred: bool) -> tuple[tuple[int, int], Image.Image] | None:
    width, height = size
    font_size = max(16, round(min(size) * (0.06 if centred else 0.042)))
    font = _font(font_size)
    margin = max(16, width // 24)
    lines = _wrap(_drawable(font, prompt), font, width - 2 * margin, _CAPTION_MAX_LINES)
    if not lines:
        return None
    line_height = round(font_size * 1.3)
    text_height = line_height * len(lines)
    pad = font_size // 2
    tile = Image.new("RGBA", (width, text_height + 2 * pad), (0, 0, 0, 0))
    draw = ImageDraw.Draw(tile)
    if not centred:
        # A translucent band keeps white text legible over any photo.
        draw.rectangle((0, 0, width, tile.height), fill=(0, 0, 0, 130))
    for row, line in enumerate(lines):
        line_width = font.getlength(line)
        x = (width - line_width) / 2
        y = pad + row * line_height
        draw.text((x, y), line, font=font, fill=(255, 255, 255, 255), stroke_width=1, stroke_fill=(0, 0, 0, 160))
    top = (height - tile.height) // 2 if centred else height - tile.height - max(12, height // 30)
    return (0, top), tile


def _wrap(text: str, font: ImageFont.FreeTypeFont, max_width: float, max_lines: int) -> list[str]:
    """Greedy word wrap; over-long words are split; overflow ends the last line with "…"."""
    words = text.split()
    lines: list[str] = []
    current = ""
    for word in words:
        for piece in _split_long_word(word, font, max_width):
            candidate = f"{current} {piece}" if current else piece
            if font.getlength(candidate) <= max_width:
                current = candidate
                continue
            lines.append(current)
            current = piece
    if current:
        lines.append(current)
    if len(lines) <= max_lines:
        return lines
    return [*lines[: max_lines - 1], _ellipsize(lines[max_lines - 1], font, max_width)]


def _split_long_word(word: str, font: ImageFont.FreeTypeFont, max_width: float) -> list[str]:
    if font.getlength(word) <= max_width:
        return [word]
    pieces: list[str] = []
    current = ""
    for ch in word:
        if current and font.getlength(current + ch) > max_width:
            pieces.append(current)
            current = ""
        current += ch
    pieces.append(current)
    return pieces


def _ellipsize(line: str, font: ImageFont.FreeTypeFont, max_width: float) -> str:
    # The line is being cut regardless of whether it is full, so always mark it.
    while line and font.getlength(line + "…") > max_width:
        line = line[:-1]
    return line.rstrip() + "…"


@lru_cache(maxsize=16)
def _font(size: int) -> ImageFont.FreeTypeFont:
    # Pillow's built-in font covers little beyond ASCII (no "é", no "—"); DejaVu is on
    # most Linux hosts and covers far more, so prefer it when it is there.
    try:
        return ImageFont.truetype(_FONT_FILE, size)
    except OSError:
        font = ImageFont.load_default(size=size)
        if not isinstance(font, ImageFont.FreeTypeFont):  # size= needs FreeType (Pillow ≥ 10.1)
            raise RuntimeError("Pillow was built without FreeType; captions cannot be drawn") from None
        return font


def _drawable(font: ImageFont.FreeTypeFont, text: str) -> str:
    """Drop characters the font would draw as empty boxes (emoji, unsupported scripts)."""
    text = re.sub(r"\s+", " ", text).strip()
    return "".join(ch for ch in text if ch == " " or _can_draw(font, ch))


@lru_cache(maxsize=4096)
def _can_draw(font: ImageFont.FreeTypeFont, ch: str) -> bool:
    # FreeType has no "has glyph" query through Pillow; a missing glyph renders as the
    # font's .notdef box, so compare against a code point no font covers.
    return _glyph_pixels(font, ch) != _glyph_pixels(font, "\U0010fffd")


def _glyph_pixels(font: ImageFont.FreeTypeFont, ch: str) -> tuple[tuple[int, int], bytes]:
    left, top, right, bottom = font.getbbox(ch)
    image = Image.new("L", (max(1, right - left), max(1, bottom - top)))
    ImageDraw.Draw(image).text((-left, -top), ch, font=font, fill=255)
    return image.size, image.tobytes()


# -------------------------------------------------------------------------------- audio


def _audio_blocks(spec: RenderSpec, total: int) -> Iterator[np.ndarray] | None:
    """Exactly ``total`` samples of planar stereo float audio, in AAC-sized blocks; or None.

    The original sound wins over the generated tone: the request model never asks for
    both, but if it does, the user's own audio is the less surprising result.
    """
    if spec.video is not None and spec.keep_original_sound and _has_audio(spec.video):
        source = _original_audio(spec.video)
    elif spec.sound:
        source = _tone()
    else:
        return None
    return _with_fades(_rechunk(source, total), total)


def _has_audio(path: Path) -> bool:
    with av.open(str(path), mode="r") as container:
        return bool(container.streams.audio)


def _original_audio(path: Path) -> Iterator[np.ndarray]:
    """The video's audio, resampled to our format and looped forever (the caller trims)."""
    while True:
        produced = 0
        with av.open(str(path), mode="r") as container:
            resampler = av.AudioResampler(format="fltp", layout=AUDIO_LAYOUT, rate=AUDIO_RATE)
            for frame in container.decode(audio=0):
                for out in resampler.resample(frame):
                    produced += out.samples
                    yield out.to_ndarray()
            for out in resampler.resample(None):
                produced += out.samples
                yield out.to_ndarray()
        if produced == 0:
            # An audio track that decodes to nothing: silence keeps the promised stream.
            while True:
                yield np.zeros((_AUDIO_CHANNELS, _AAC_FRAME_SAMPLES), dtype=np.float32)


def _tone() -> Iterator[np.ndarray]:
    """A gentle repeating arpeggio of soft sine notes over a quiet drone."""
    notes_hz = np.array([261.63, 329.63, 392.00, 523.25, 392.00, 329.63], dtype=np.float64)
    note_s = 0.5
    start = 0
    while True:
        t = (start + np.arange(_AAC_FRAME_SAMPLES)) / AUDIO_RATE
        note = notes_hz[(t // note_s).astype(int) % len(notes_hz)]
        within = (t % note_s) / note_s
        envelope = np.sin(np.pi * within) ** 2  # each note swells and dies away: no clicks
        melody = 0.12 * envelope * np.sin(2 * np.pi * note * t)
        drone = 0.04 * np.sin(2 * np.pi * 130.81 * t)
        mono = (melody + drone).astype(np.float32)
        yield np.stack([mono, mono])
        start += _AAC_FRAME_SAMPLES


def _rechunk(source: Iterator[np.ndarray], total: int) -> Iterator[np.ndarray]:
    """Re-cut arbitrary blocks into AAC-frame-sized ones, stopping at exactly ``total``."""
    pending = np.zeros((_AUDIO_CHANNELS, 0), dtype=np.float32)
    sent = 0
    while sent < total:
        want = min(_AAC_FRAME_SAMPLES, total - sent)
        while pending.shape[1] < want:
            pending = np.concatenate([pending, next(source).astype(np.float32, copy=False)], axis=1)
        block, pending = pending[:, :want], pending[:, want:]
        sent += want
        yield block


def _with_fades(blocks: Iterator[np.ndarray], total: int) -> Iterator[np.ndarray]:
    """Short fade in and out, so a trimmed or looped track never starts or ends on a click."""
    fade = max(1, min(int(_AUDIO_FADE_S * AUDIO_RATE), total // 2))
    position = 0
    for block in blocks:
        index = position + np.arange(block.shape[1])
        gain = np.minimum(1.0, np.minimum(index / fade, (total - 1 - index) / fade)).clip(0.0, 1.0)
        position += block.shape[1]
        yield (block * gain.astype(np.float32)).astype(np.float32)
