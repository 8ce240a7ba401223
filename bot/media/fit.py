"""Fit a finished clip under a delivery's size limit, and make a poster still for when it can't be.

Provider clips (1080p, up to 15 s, sometimes hundreds of MB) are often bigger than a chat
upload limit. :func:`fit_to_limit` re-encodes them to H.264/AAC at a bit rate worked out
from the byte budget, stepping the resolution down when the budget is too thin to look
right at full size. It is synchronous and streams one frame at a time, so memory stays flat
whatever the clip's size; the engine runs it in a worker thread.

Every output is written beside its destination and renamed into place only when complete,
so a crash or an exception never leaves a partial file behind.
"""

from __future__ import annotations

import math
import os
import tempfile
from collections.abc import Iterator
from dataclasses import dataclass
from fractions import Fraction
from pathlib import Path

import av
from PIL import Image

from bot.media.inspect import probe_video

__all__ = ["CannotFit", "FitResult", "fit_to_limit", "poster_frame"]

# The container (moov index, sample tables, edit lists) costs a few percent over the raw
# streams, and x264's rate control lands near, not exactly on, its target.
CONTAINER_MARGIN = 0.92
# Modest but clean for speech and music; a fixed figure keeps the budget arithmetic simple.
AUDIO_BITRATE = 96_000
MAX_FPS = 30
# Resolution ladder for the shorter side. The top rung also caps the work: a 4K source is
# never encoded at 4K, which would cost several times the CPU for a chat preview.
SHORT_SIDE_RUNGS = (1080, 720, 540, 360)
# Below this many bits per pixel per frame, H.264 detail turns to mush: step down a rung.
COMFORT_BITS_PER_PIXEL = 0.05
# Below this even at the lowest rung the result is not worth watching; a link to the
# original serves the user better, so we refuse instead of encoding.
FLOOR_BITS_PER_PIXEL = 0.03
# When an attempt overshoots, aim this much further under the measured ratio next time.
RETRY_SAFETY = 0.9

# veryfast re-encodes a 15 s 1080p30 clip in about 10 s on two cores; slower presets buy
# little at these bit rates compared with what they cost (and a retry doubles it).
_X264_PRESET = "veryfast"
# See _add_video_stream: how full x264's rate buffer starts, as a fraction of its size.
_VBV_INITIAL_FULLNESS = 0.5
# Enough to keep x264 and the decoder busy without one fit starving every other job.
_THREADS = min(4, os.cpu_count() or 1)
# AAC accepts these rates natively; anything else is resampled to 48 kHz.
_AAC_RATES = frozenset({96000, 88200, 64000, 48000, 44100, 32000, 24000, 22050, 16000, 12000, 11025, 8000})
_AAC_FRAME_SAMPLES = 1024
_POSTER_QUALITY = 85

_KB = 1024
_MB = 1024 * 1024


@dataclass(frozen=True)
class FitResult:
    path: Path  # the file to deliver (the source itself when it already fits)
    size_bytes: int
    transcoded: bool
    width: int
    height: int
    video_bitrate: int | None  # bits/s chosen, None when not transcoded


class CannotFit(Exception):
    """The clip cannot be made small enough; the message says how close it got, in plain words."""

    def __init__(self, message: str, *, limit_bytes: int, smallest_bytes: int) -> None:
        super().__init__(message)
        self.limit_bytes = limit_bytes
        # The smallest output reached, or (when nothing was encoded) the estimated minimum.
        self.smallest_bytes = smallest_bytes


@dataclass(frozen=True)
class _Plan:
    width: int
    height: int
    rate: Fraction  # output frames per second
    video_bitrate: int


# ----------------------------------------------------------------------------- fitting


def fit_to_limit(source: Path, dest: Path, limit_bytes: int, *, max_attempts: int = 3) -> FitResult:
    """Return a file no larger than ``limit_bytes``: ``source`` itself if it fits, else a re-encode at ``dest``.

    Raises :class:`CannotFit` when even the smallest watchable encode would be over the
    limit, or when ``max_attempts`` encodes all overshoot it; nothing is left at ``dest``
    then. Raises ``MediaError`` when ``source`` is not a readable video.
    """
    if limit_bytes <= 0:
        raise ValueError(f"limit_bytes must be positive, got {limit_bytes}")
    if max_attempts < 1:
        raise ValueError(f"max_attempts must be at least 1, got {max_attempts}")
    info = probe_video(source)
    if info.size_bytes <= limit_bytes:
        return FitResult(source, info.size_bytes, False, info.width, info.height, None)

    rate = _output_rate(info.fps)
    sizes = _candidate_sizes(info.width, info.height)
    audio_bitrate = AUDIO_BITRATE if info.has_audio else 0
    video_bitrate = _video_budget(limit_bytes, info.duration_s, audio_bitrate)
    floor = _floor_bitrate(sizes[-1], rate)
    if video_bitrate < floor:
        raise _too_small_to_try(info.duration_s, floor + audio_bitrate, limit_bytes)

    smallest: int | None = None
    for _attempt in range(max_attempts):
        plan = _Plan(*_choose_size(sizes, video_bitrate, rate), rate=rate, video_bitrate=round(video_bitrate))
        size = _encode_attempt(source, dest, plan, limit_bytes)
        if size <= limit_bytes:
            return FitResult(dest, size, True, plan.width, plan.height, plan.video_bitrate)
        smallest = size if smallest is None else min(smallest, size)
        # The overshoot is (almost all) video: scale the video share by how far off it was.
        video_bitrate = video_bitrate * limit_bytes / size * RETRY_SAFETY
        if video_bitrate < floor:
            break
    assert smallest is not None  # the loop ran at least once and every pass overshot
    raise CannotFit(
        f"the smallest this clip could be made was {_describe_size(smallest, up=True)}, "
        f"which is still over the {_describe_size(limit_bytes, up=False)} limit",
        limit_bytes=limit_bytes,
        smallest_bytes=smallest,
    )


def _output_rate(fps: float) -> Fraction:
    """The source frame rate (exactly, for NTSC rates like 23.976), capped at MAX_FPS."""
    if fps <= 0:
        return Fraction(MAX_FPS)
    # 1001 recovers 24000/1001 and 30000/1001 from the float the probe gives.
    return min(Fraction(fps).limit_denominator(1001), Fraction(MAX_FPS))


def _candidate_sizes(width: int, height: int) -> list[tuple[int, int]]:
    """Output sizes to consider, largest first: the source (capped at the top rung), then smaller rungs."""
    short = min(width, height)
    sizes: list[tuple[int, int]] = []
    for rung in (short, *SHORT_SIDE_RUNGS):
        if rung > SHORT_SIDE_RUNGS[0] or rung > short:
            continue  # never upscale, and never encode above the top rung
        size = _scaled(width, height, rung / short)
        if size not in sizes:
            sizes.append(size)
    return sizes


def _scaled(width: int, height: int, scale: float) -> tuple[int, int]:
    # yuv420p needs even sides; rounding each side separately keeps the aspect within a pixel.
    return max(2, round(width * scale / 2) * 2), max(2, round(height * scale / 2) * 2)


def _video_budget(limit_bytes: int, duration_s: float, audio_bitrate: int) -> float:
    return limit_bytes * 8 * CONTAINER_MARGIN / max(duration_s, 0.001) - audio_bitrate


def _bits_per_pixel(bitrate: float, size: tuple[int, int], rate: Fraction) -> float:
    return bitrate / (size[0] * size[1] * float(rate))


def _floor_bitrate(size: tuple[int, int], rate: Fraction) -> float:
    return FLOOR_BITS_PER_PIXEL * size[0] * size[1] * float(rate)


def _choose_size(sizes: list[tuple[int, int]], video_bitrate: float, rate: Fraction) -> tuple[int, int]:
    for size in sizes:
        if _bits_per_pixel(video_bitrate, size, rate) >= COMFORT_BITS_PER_PIXEL:
            return size
    return sizes[-1]


def _too_small_to_try(duration_s: float, min_bitrate: float, limit_bytes: int) -> CannotFit:
    estimate = math.ceil(min_bitrate * duration_s / 8 / CONTAINER_MARGIN)
    return CannotFit(
        f"a {duration_s:.1f} s clip can't be made smaller than about {_describe_size(estimate, up=True)} "
        f"and still be watchable, which is over the {_describe_size(limit_bytes, up=False)} limit",
        limit_bytes=limit_bytes,
        smallest_bytes=estimate,
    )


def _describe_size(size: int, *, up: bool) -> str:
    """Bytes in words. Sizes reached round up and limits down, so a miss never reads "10 MB over 10 MB"."""
    if size < _KB:
        return f"{size} bytes"
    unit, name = (_MB, "MB") if size >= _MB else (_KB, "kB")
    decimals = 0 if size / unit >= 100 else 1
    scaled = size / unit * 10**decimals
    shown = (math.ceil(scaled) if up else math.floor(scaled)) / 10**decimals
    return f"{shown:.{decimals}f}".removesuffix(".0") + f" {name}"


def _encode_attempt(source: Path, dest: Path, plan: _Plan, limit_bytes: int) -> int:
    """Encode ``plan`` into a temp file; move it to ``dest`` if it fits. Returns the size either way."""
    tmp = _temp_path_beside(dest, ".part.mp4")
    try:
        _transcode(source, tmp, plan)
        size = tmp.stat().st_size
        if size <= limit_bytes:
            # mkstemp makes the file owner-only; the result is an ordinary output file.
            tmp.chmod(0o644)
            os.replace(tmp, dest)
        return size
    finally:
        tmp.unlink(missing_ok=True)


def _temp_path_beside(dest: Path, suffix: str) -> Path:
    # Same directory so os.replace is an atomic rename, never a cross-device copy.
    fd, name = tempfile.mkstemp(dir=dest.parent, prefix=f".{dest.stem}.", suffix=suffix)
    os.close(fd)
    return Path(name)


# ---------------------------------------------------------------------------- encoding


def _transcode(source: Path, out_path: Path, plan: _Plan) -> None:
    """Decode ``source`` packet by packet and re-encode it per ``plan``; one frame in memory at a time."""
    with (
        av.open(str(source), mode="r") as inp,
        av.open(str(out_path), mode="w", format="mp4", options={"movflags": "+faststart"}) as out,
    ):
        video_in = inp.streams.video[0]
        video_in.thread_type = "AUTO"
        video_in.codec_context.thread_count = _THREADS
        audio_in = inp.streams.audio[0] if inp.streams.audio else None
        # Both streams are timed from the file's start, so A/V sync survives a non-zero start time.
        start = Fraction(inp.start_time, av.time_base) if inp.start_time is not None else Fraction(0)
        video = _VideoWriter(out, video_in, plan, start, _display_rotation(source))
        audio = _AudioWriter(out, audio_in, start) if audio_in is not None else None
        # demux() yields packets in file order, so the two encoders advance together and
        # the muxer never buffers one stream while waiting on the other.
        streams = [video_in] if audio_in is None else [video_in, audio_in]
        for packet in inp.demux(streams):
            for frame in packet.decode():
                if isinstance(frame, av.VideoFrame):
                    video.write(frame)
                elif audio is not None and isinstance(frame, av.AudioFrame):
                    audio.write(frame)
        video.finish()
        if audio is not None:
            audio.finish()


class _VideoWriter:
    """Scale, re-time (dropping frames above the output rate) and encode video frames."""

    def __init__(
        self, out: av.container.OutputContainer, source: av.VideoStream, plan: _Plan, start: Fraction, rotation: int
    ) -> None:
        self._out = out
        self._plan = plan
        self._start = start
        self._last_slot = -1
        self._stream = _add_video_stream(out, source, plan)
        if rotation:
            # Keep a phone video's rotation as metadata rather than turning every frame's pixels.
            self._stream.set_display_rotation(rotation)

    def write(self, frame: av.VideoFrame) -> None:
        slot = self._slot(frame)
        if slot <= self._last_slot:
            return  # a faster source: this frame shares an output slot with the one before
        self._last_slot = slot
        scaled = frame.reformat(
            width=self._plan.width,
            height=self._plan.height,
            format="yuv420p",
            interpolation="AREA",  # averages the pixels a downscale drops: no aliasing shimmer
            src_color_range=frame.color_range or None,
            dst_color_range="MPEG",
        )
        scaled.pts = slot
        scaled.time_base = 1 / self._plan.rate
        self._out.mux(self._stream.encode(scaled))

    def finish(self) -> None:
        self._out.mux(self._stream.encode(None))

    def _slot(self, frame: av.VideoFrame) -> int:
        if frame.pts is None or frame.time_base is None:
            return self._last_slot + 1
        seconds = frame.pts * frame.time_base - self._start
        # A frame takes the slot it starts in. The quarter-slot tolerance absorbs timestamps
        # rounded to a coarse time base (milliseconds) without letting a 60 fps source's
        # in-between frames, which start half a slot in, claim the next slot.
        return max(0, math.floor(seconds * self._plan.rate + Fraction(1, 4)))


def _display_rotation(source: Path) -> int:
    """The source's display rotation in degrees, counter-clockwise, from its first frame.

    Read up front in a separate pass: it must be set on the output stream before anything
    is muxed, and audio packets may come first in the file.
    """
    with av.open(str(source), mode="r") as container:
        for frame in container.decode(video=0):
            return round(frame.rotation / 90) * 90 % 360
    return 0


def _add_video_stream(out: av.container.OutputContainer, source: av.VideoStream, plan: _Plan) -> av.VideoStream:
    stream = out.add_stream("libx264", rate=plan.rate)
    stream.width, stream.height = plan.width, plan.height
    stream.pix_fmt = "yuv420p"
    context = stream.codec_context
    context.time_base = 1 / plan.rate
    context.bit_rate = plan.video_bitrate
    # Plain ABR overshoots short, busy clips by 20-30%: it cannot converge in a few
    # seconds. A one-second VBV at the target rate caps every stretch of the clip, and
    # starting that buffer half full (x264 defaults to 90%) stops the opening frames
    # spending bits the rest of the clip never gets back; measured on noise, the worst
    # case, the video lands within 1% of its target.
    context.options = {
        "preset": _X264_PRESET,
        "maxrate": str(plan.video_bitrate),
        "bufsize": str(plan.video_bitrate),
        "x264-params": f"vbv-init={_VBV_INITIAL_FULLNESS}",
    }
    context.thread_count = _THREADS
    # Frame threading encodes ~30% faster than the slice threading PyAV asks for.
    context.thread_type = "FRAME"
    _copy_colour_tags(source.codec_context, context)
    return stream


def _copy_colour_tags(
    source: av.video.codeccontext.VideoCodecContext, target: av.video.codeccontext.VideoCodecContext
) -> None:
    """Carry the source's colour description over, so players don't guess and shift colours."""
    unspecified = 2  # AVCOL_SPC/PRI/TRC_UNSPECIFIED share this value
    for name in ("colorspace", "color_primaries", "color_trc"):
        value = getattr(source, name)
        if value is not None and int(value) != unspecified:
            setattr(target, name, value)
    target.color_range = av.video.reformatter.ColorRange.MPEG


class _AudioWriter:
    """Resample decoded audio into AAC-sized blocks with continuous timestamps and encode it."""

    def __init__(self, out: av.container.OutputContainer, source: av.AudioStream, start: Fraction) -> None:
        self._out = out
        self._start = start
        context = source.codec_context
        self._rate = context.sample_rate if context.sample_rate in _AAC_RATES else 48000
        # Delivery is to phones and browsers: more than stereo buys nothing but bytes.
        layout = "mono" if context.channels == 1 else "stereo"
        self._stream = out.add_stream("aac", rate=self._rate, layout=layout)
        self._stream.codec_context.bit_rate = AUDIO_BITRATE
        self._stream.codec_context.time_base = Fraction(1, self._rate)
        self._resampler = av.AudioResampler(
            format="fltp", layout=layout, rate=self._rate, frame_size=_AAC_FRAME_SAMPLES
        )
        self._next_pts: int | None = None

    def write(self, frame: av.AudioFrame) -> None:
        if self._next_pts is None:
            # Where the sound starts relative to the picture; from then on the samples are
            # counted, so a timestamp jitter in the source never opens a gap or an overlap.
            offset = frame.time - float(self._start) if frame.time is not None else 0.0
            self._next_pts = max(0, round(offset * self._rate))
        # The resampler expects a consistent timeline; ours is the sample count above.
        frame.pts = None
        self._encode(self._resampler.resample(frame))

    def finish(self) -> None:
        if self._next_pts is not None:
            self._encode(self._resampler.resample(None))
        self._out.mux(self._stream.encode(None))

    def _encode(self, frames: list[av.AudioFrame]) -> None:
        for block in frames:
            assert self._next_pts is not None
            block.pts = self._next_pts
            block.time_base = Fraction(1, self._rate)
            self._next_pts += block.samples
            self._out.mux(self._stream.encode(block))


# ------------------------------------------------------------------------------ poster


def poster_frame(source: Path, dest: Path, *, at_fraction: float = 0.3, max_width: int = 640) -> Path:
    """Write a JPEG still from ``at_fraction`` of the way into ``source`` to ``dest``; returns ``dest``.

    The still is display-oriented and at most ``max_width`` wide (never enlarged). Raises
    ``MediaError`` when ``source`` is not a readable video.
    """
    if not 0.0 <= at_fraction <= 1.0:
        raise ValueError(f"at_fraction must be between 0 and 1, got {at_fraction}")
    if max_width < 2:
        raise ValueError(f"max_width must be at least 2, got {max_width}")
    info = probe_video(source)
    frame = _frame_at(source, at_fraction * info.duration_s)
    picture = _display_picture(frame, max_width)
    tmp = _temp_path_beside(dest, ".part.jpg")
    try:
        picture.save(tmp, format="JPEG", quality=_POSTER_QUALITY, optimize=True)
        tmp.chmod(0o644)
        os.replace(tmp, dest)
    finally:
        tmp.unlink(missing_ok=True)
    return dest


def _frame_at(source: Path, seconds: float) -> av.VideoFrame:
    """The first frame shown at or after ``seconds`` (or the last frame, past the end)."""
    with av.open(str(source), mode="r") as container:
        stream = container.streams.video[0]
        stream.thread_type = "AUTO"
        start = container.start_time / av.time_base if container.start_time is not None else 0.0
        target = start + seconds
        frame = None
        if stream.time_base is not None and seconds > 0:
            # Jump to the keyframe before the target rather than decoding everything up to it.
            try:
                container.seek(int(target / stream.time_base), stream=stream)
                frame = _first_at_or_after(container.decode(stream), target)
            except av.FFmpegError:
                frame = None
        if frame is None:
            container.seek(0)
            frame = _first_at_or_after(container.decode(stream), target)
    if frame is None:
        raise ValueError(f"{source.name}: no video frame could be decoded")
    return frame


def _first_at_or_after(frames: Iterator[av.VideoFrame], target: float) -> av.VideoFrame | None:
    last = None
    for frame in frames:
        last = frame
        if frame.time is not None and frame.time >= target:
            break
    return last


def _display_picture(frame: av.VideoFrame, max_width: int) -> Image.Image:
    """RGB picture the right way up, scaled (in swscale, which is fast) to at most ``max_width``."""
    rotation = round(frame.rotation / 90) * 90 % 360
    sideways = rotation in (90, 270)
    shown_w, shown_h = (frame.height, frame.width) if sideways else (frame.width, frame.height)
    scale = min(1.0, max_width / shown_w)
    width, height = max(1, round(shown_w * scale)), max(1, round(shown_h * scale))
    coded = (height, width) if sideways else (width, height)
    picture = frame.reformat(width=coded[0], height=coded[1], format="rgb24", interpolation="AREA").to_image()
    if rotation:
        # VideoFrame.rotation is counter-clockwise, as is Image.rotate.
        picture = picture.rotate(rotation, expand=True)
    return picture
