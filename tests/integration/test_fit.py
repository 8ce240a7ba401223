"""bot.media.fit on real video: noisy clips (the worst case for a size budget) are rendered with
PyAV, fitted under a limit, then probed and decoded frame by frame."""

from __future__ import annotations

import struct
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from PIL import Image

import bot.media.fit as fit
from bot.media.fit import CannotFit, fit_to_limit, poster_frame
from bot.media.inspect import VideoInfo, probe_video

KB = 1024

# ----------------------------------------------------------------------------- sources


def render_clip(
    path: Path,
    *,
    size: tuple[int, int],
    seconds: float,
    fps: int = 24,
    audio: str | None = "stereo",
    audio_rate: int = 48_000,
    rotation: int = 0,
    picture: str = "noise",
) -> Path:
    """Write an H.264 (+ AAC tone) MP4. Noise is coarse blocks, new every frame: it barely
    compresses, so the file is genuinely large, but encodes far faster than per-pixel noise."""
    rng = np.random.default_rng(7)
    width, height = size
    with av.open(str(path), mode="w", format="mp4") as out:
        video = out.add_stream("libx264", rate=fps, options={"preset": "ultrafast", "crf": "23"})
        video.width, video.height, video.pix_fmt = width, height, "yuv420p"
        if rotation:
            video.set_display_rotation(rotation)
        tone = out.add_stream("aac", rate=audio_rate, layout=audio) if audio else None
        sent = 0
        n_frames = round(seconds * fps)
        for index in range(n_frames):
            pixels = _noise(rng, size) if picture == "noise" else _grey(size, _ramp_level(index, n_frames))
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            out.mux(video.encode(frame))
            if tone is not None and audio is not None:
                sent = _mux_tone(out, tone, audio, audio_rate, sent, (index + 1) * audio_rate // fps)
        out.mux(video.encode(None))
        if tone is not None:
            out.mux(tone.encode(None))
    return path


def _noise(rng: np.random.Generator, size: tuple[int, int], block: int = 16) -> np.ndarray:
    small = rng.integers(0, 256, (size[1] // block, size[0] // block, 3), dtype=np.uint8)
    return np.repeat(np.repeat(small, block, axis=0), block, axis=1)


def _ramp_level(index: int, n_frames: int) -> int:
    """Grey level of frame ``index`` in the ramp clip: dark at the start, light at the end."""
    return 20 + round(200 * index / (n_frames - 1))


def _grey(size: tuple[int, int], level: int) -> np.ndarray:
    return np.full((size[1], size[0], 3), level, dtype=np.uint8)


def _mux_tone(
    out: av.container.OutputContainer, stream: av.AudioStream, layout: str, rate: int, sent: int, due: int
) -> int:
    channels = 1 if layout == "mono" else 2
    while sent < due:
        t = (sent + np.arange(1024)) / rate
        wave = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)
        frame = av.AudioFrame.from_ndarray(np.tile(wave, (channels, 1)), format="fltp", layout=layout)
        frame.sample_rate = rate
        frame.pts = sent
        frame.time_base = Fraction(1, rate)
        out.mux(stream.encode(frame))
        sent += 1024
    return sent


@pytest.fixture(scope="module")
def sources(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    # Rendered once for the module: generation is most of the cost of these tests.
    folder = tmp_path_factory.mktemp("fit-sources")
    return {
        "720p_audio": render_clip(folder / "720p.mp4", size=(1280, 720), seconds=4),
        "1080p_silent": render_clip(folder / "1080p.mp4", size=(1920, 1080), seconds=3, audio=None),
        # A phone clip: 60 fps, rotated to portrait by metadata, mono 44.1 kHz sound.
        "phone": render_clip(
            folder / "phone.mp4", size=(640, 360), seconds=2, fps=60, audio="mono", audio_rate=44_100, rotation=90
        ),
    }


# ----------------------------------------------------------------------------- helpers


def decoded_frames(path: Path) -> int:
    """Decode every video frame (raising on any error) and count them."""
    with av.open(str(path)) as container:
        return sum(1 for _frame in container.decode(video=0))


def top_level_boxes(path: Path) -> list[bytes]:
    boxes = []
    with path.open("rb") as handle:
        while header := handle.read(8):
            size, kind = struct.unpack(">I4s", header)
            if size == 1:
                size = struct.unpack(">Q", handle.read(8))[0] - 8
            boxes.append(kind)
            handle.seek(size - 8, 1)
    return boxes


def leftovers(folder: Path) -> list[str]:
    return sorted(path.name for path in folder.iterdir() if ".part" in path.name)


def assert_plays_like(result: Path, source: VideoInfo, limit: int) -> VideoInfo:
    """The fitted file is under the limit, whole, H.264, as long as the source, with the same audio."""
    info = probe_video(result)
    assert info.size_bytes <= limit
    assert info.codec == "h264"
    assert info.duration_s == pytest.approx(source.duration_s, abs=0.1)
    assert info.has_audio == source.has_audio
    assert decoded_frames(result) == pytest.approx(info.duration_s * info.fps, abs=1)
    # faststart: the index comes before the media data, so a player can start mid-download.
    boxes = top_level_boxes(result)
    assert boxes.index(b"moov") < boxes.index(b"mdat")
    return info


# ------------------------------------------------------------------------------- tests


def test_a_clip_that_fits_is_returned_untouched(sources: dict[str, Path], tmp_path: Path) -> None:
    source = sources["720p_audio"]
    before = source.read_bytes()
    dest = tmp_path / "out.mp4"

    # The limit is inclusive: a file exactly at it fits.
    result = fit_to_limit(source, dest, len(before))

    assert result.path == source and not result.transcoded
    assert (result.size_bytes, result.width, result.height, result.video_bitrate) == (len(before), 1280, 720, None)
    assert not dest.exists()
    assert source.read_bytes() == before


@pytest.mark.parametrize(
    ("name", "limit", "expected_width"),
    [
        ("720p_audio", 1_000_000, 1280),  # ~0.08 bits per pixel: full size is fine
        ("720p_audio", 500_000, 960),  # too thin for 720p: one rung down
        ("1080p_silent", 1_000_000, 1280),  # one rung down
        ("1080p_silent", 300_000, 960),  # two rungs down
    ],
)
def test_a_large_clip_is_fitted_under_the_limit(
    sources: dict[str, Path], tmp_path: Path, name: str, limit: int, expected_width: int
) -> None:
    source = probe_video(sources[name])
    assert source.size_bytes > 5 * limit  # the sources really are far too big
    dest = tmp_path / "fitted.mp4"

    result = fit_to_limit(sources[name], dest, limit)

    assert result.path == dest and result.transcoded
    info = assert_plays_like(dest, source, limit)
    assert result.size_bytes == info.size_bytes
    assert (result.width, result.height) == (info.width, info.height)
    assert info.width == expected_width
    # Stepping down keeps the aspect ratio (to within the rounding to even sides).
    assert info.width / info.height == pytest.approx(source.width / source.height, rel=0.01)
    assert result.video_bitrate is not None and result.video_bitrate > 0
    assert leftovers(tmp_path) == []


def test_a_phone_clip_keeps_its_rotation_and_mono_sound_at_30_fps(sources: dict[str, Path], tmp_path: Path) -> None:
    source = probe_video(sources["phone"])
    limit = source.size_bytes // 4
    dest = tmp_path / "fitted.mp4"

    fit_to_limit(sources["phone"], dest, limit)

    info = assert_plays_like(dest, source, limit)
    assert info.fps == pytest.approx(30)
    with av.open(str(dest)) as container:
        assert container.streams.audio[0].codec_context.channels == 1
        assert next(container.decode(video=0)).rotation == 90


def test_an_overshoot_is_retried_at_a_lower_bit_rate(
    sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    # Without its safety margin (and aiming 30% over), the first encode must overshoot.
    monkeypatch.setattr(fit, "CONTAINER_MARGIN", 1.3)
    encodes: list[int] = []
    real_transcode = fit._transcode

    def counting(source: Path, out_path: Path, plan: fit._Plan) -> None:
        real_transcode(source, out_path, plan)
        encodes.append(out_path.stat().st_size)

    monkeypatch.setattr(fit, "_transcode", counting)
    limit = 500_000

    result = fit_to_limit(sources["720p_audio"], tmp_path / "fitted.mp4", limit)

    assert len(encodes) == 2 and encodes[0] > limit >= encodes[1] == result.size_bytes
    assert_plays_like(result.path, probe_video(sources["720p_audio"]), limit)
    assert leftovers(tmp_path) == []


def test_running_out_of_attempts_says_how_close_it_got(
    sources: dict[str, Path], tmp_path: Path, monkeypatch: pytest.MonkeyPatch
) -> None:
    monkeypatch.setattr(fit, "CONTAINER_MARGIN", 1.3)
    dest = tmp_path / "fitted.mp4"

    with pytest.raises(CannotFit) as caught:
        fit_to_limit(sources["720p_audio"], dest, 500 * KB, max_attempts=1)

    assert caught.value.smallest_bytes > caught.value.limit_bytes == 500 * KB
    message = str(caught.value)
    assert "the smallest this clip could be made was" in message and "over the 500 kB limit" in message
    assert not dest.exists() and leftovers(tmp_path) == []


def test_an_impossible_limit_is_refused_without_leaving_files(sources: dict[str, Path], tmp_path: Path) -> None:
    dest = tmp_path / "fitted.mp4"

    with pytest.raises(CannotFit, match=r"over the 20 kB limit") as caught:
        fit_to_limit(sources["720p_audio"], dest, 20 * KB)

    # It names a realistic minimum (hundreds of kB for 4 s), not just "too small".
    assert "can't be made smaller than about" in str(caught.value)
    assert caught.value.smallest_bytes > 100 * KB
    assert not dest.exists() and leftovers(tmp_path) == []


def test_poster_frame_is_a_jpeg_no_wider_than_asked(sources: dict[str, Path], tmp_path: Path) -> None:
    dest = poster_frame(sources["1080p_silent"], tmp_path / "poster.jpg")

    with Image.open(dest) as image:
        assert image.format == "JPEG"
        assert image.size == (640, 360)
    assert leftovers(tmp_path) == []


def test_poster_frame_is_upright_and_never_enlarged(sources: dict[str, Path], tmp_path: Path) -> None:
    dest = poster_frame(sources["phone"], tmp_path / "poster.jpg", max_width=1000)

    with Image.open(dest) as image:
        assert image.size == (360, 640)  # the 640×360 frame, turned to portrait, at its own size


@pytest.mark.parametrize("at_fraction", [0.0, 0.3, 0.75, 1.0])
def test_poster_frame_comes_from_the_asked_point(tmp_path: Path, at_fraction: float) -> None:
    # Every frame is one flat grey, lighter as the clip goes on, so the still's brightness
    # says which frame it came from.
    n_frames = 48
    source = render_clip(tmp_path / "ramp.mp4", size=(320, 240), seconds=2, audio=None, picture="ramp")

    dest = poster_frame(source, tmp_path / "poster.jpg", at_fraction=at_fraction)

    with Image.open(dest) as image:
        level = float(np.asarray(image.convert("L")).mean())
    expected = _ramp_level(min(n_frames - 1, round(at_fraction * n_frames)), n_frames)
    assert level == pytest.approx(expected, abs=12)
