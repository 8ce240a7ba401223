"""bot.media.inspect: real fixtures accepted with the right facts, generated bad files refused
with a message that names the file and the problem."""

from __future__ import annotations

import io
import struct
import zlib
from fractions import Fraction
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st
from PIL import Image

from bot.media.inspect import (
    IMAGE_MAX_BYTES,
    VIDEO_MAX_BYTES,
    ImageInfo,
    MediaError,
    VideoInfo,
    inspect_image,
    inspect_media,
    inspect_video,
    probe_video,
    sniff,
)

# ----------------------------------------------------------------------------- helpers


def encode_image(size: tuple[int, int], fmt: str = "PNG", **options: object) -> bytes:
    buffer = io.BytesIO()
    Image.new("RGB", size, (200, 120, 40)).save(buffer, fmt, **options)
    return buffer.getvalue()


def png_claiming(width: int, height: int) -> bytes:
    """A tiny, valid-looking PNG whose header claims ``width``×``height`` pixels."""

    def chunk(tag: bytes, body: bytes) -> bytes:
        return struct.pack(">I", len(body)) + tag + body + struct.pack(">I", zlib.crc32(tag + body))

    header = struct.pack(">IIBBBBB", width, height, 8, 2, 0, 0, 0)
    return (
        b"\x89PNG\r\n\x1a\n"
        + chunk(b"IHDR", header)
        + chunk(b"IDAT", zlib.compress(b"\x00" * 4096))
        + chunk(b"IEND", b"")
    )


def make_video(
    path: Path,
    *,
    size: tuple[int, int] = (1280, 720),
    seconds: float = 3.0,
    fps: int = 6,
    codec: str = "libx264",
    container_format: str | None = None,
    audio: bool = False,
) -> Path:
    """Encode a small synthetic clip; a low frame rate keeps long clips quick to make."""
    with av.open(str(path), mode="w", format=container_format) as out:
        options = {"preset": "ultrafast"} if codec in ("libx264", "libx265") else {}
        if codec == "libx265":
            options["x265-params"] = "log-level=error"
        video = out.add_stream(codec, rate=fps, options=options)
        video.width, video.height = size
        video.pix_fmt = "yuv420p"
        sound = out.add_stream("aac", rate=48_000, layout="mono") if audio else None
        n_frames = round(seconds * fps)
        for index in range(n_frames):
            pixels = np.full((size[1], size[0], 3), (index * 9) % 256, dtype=np.uint8)
            frame = av.VideoFrame.from_ndarray(pixels, format="rgb24")
            frame.pts = index
            frame.time_base = Fraction(1, fps)
            out.mux(video.encode(frame))
        out.mux(video.encode(None))
        if sound is not None:
            _write_tone(out, sound, seconds)
    return path


def _write_tone(out: av.container.OutputContainer, stream: av.AudioStream, seconds: float) -> None:
    total = int(seconds * 48_000)
    for start in range(0, total, 1024):
        t = (start + np.arange(min(1024, total - start))) / 48_000
        samples = (0.2 * np.sin(2 * np.pi * 440 * t)).astype(np.float32)[None, :]
        frame = av.AudioFrame.from_ndarray(samples, format="fltp", layout="mono")
        frame.sample_rate = 48_000
        frame.pts = start
        out.mux(stream.encode(frame))
    out.mux(stream.encode(None))


def rejection(call: object, *args: object) -> MediaError:
    assert callable(call)
    with pytest.raises(MediaError) as caught:
        call(*args)
    return caught.value


# ---------------------------------------------------------------------------- sniffing


@pytest.mark.parametrize(
    ("data", "kind"),
    [
        (b"\xff\xd8\xff\xe0\x00\x10JFIF", "jpeg"),
        (b"\x89PNG\r\n\x1a\n\x00\x00\x00\rIHDR", "png"),
        (b"RIFF\x24\x00\x00\x00WEBPVP8 ", "webp"),
        (b"GIF89a\x01\x00\x01\x00", "gif"),
        (b"GIF87a\x01\x00\x01\x00", "gif"),
        (b"BM6\x00\x00\x00\x00\x00\x00\x006\x00\x00\x00", "bmp"),
        (b"II*\x00\x08\x00\x00\x00", "tiff"),
        (b"MM\x00*\x00\x00\x00\x08", "tiff"),
        (b"%PDF-1.7\n", "pdf"),
        (b"\x1a\x45\xdf\xa3\x9f\x42\x86\x81\x01", "webm"),
        (b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00", "mp4"),
        (b"\x00\x00\x00\x14ftypqt  \x00\x00\x02\x00", "mov"),
        (b"\x00\x00\x00\x08wide\x00\x00\x00\x00mdat", "mov"),
        (b'<?xml version="1.0"?>\n<!-- logo -->\n<svg xmlns="http://www.w3.org/2000/svg"/>', "svg"),
        (b"\xef\xbb\xbf<svg viewBox='0 0 1 1'></svg>", "svg"),
        (b"just some notes\nsecond line\n", "text"),
        (b"I'm free to talk about mdat boxes", "text"),
        (b"BMW M3 review notes\n", "text"),
        ("caf\u00e9 \u2014 \u4e2d\u6587".encode(), "text"),
        (b"", None),
        (bytes(range(256)), None),
    ],
)
def test_sniff_recognises_magic_bytes(data: bytes, kind: str | None) -> None:
    assert sniff(data) == kind


def test_sniff_tolerates_a_multibyte_character_cut_by_the_prefix() -> None:
    data = ("a" * 10 + "\u00e9").encode()
    assert sniff(data[:-1]) == "text"


@settings(max_examples=200, deadline=None)
@given(st.binary(max_size=512))
def test_sniff_never_raises(data: bytes) -> None:
    kinds = {"jpeg", "png", "webp", "gif", "svg", "mp4", "mov", "webm", "bmp", "tiff", "pdf", "text"}
    assert sniff(data) in {None, *kinds}


# ------------------------------------------------------------------------ good images


@pytest.mark.parametrize(
    ("name", "fmt", "width", "height"),
    [
        ("astronaut.png", "png", 512, 512),
        ("chelsea.png", "png", 451, 300),  # exactly the 300 px boundary
        ("coffee.png", "png", 600, 400),
        ("rocket.jpg", "jpeg", 640, 427),
    ],
)
def test_fixture_images_are_accepted(fixtures_dir: Path, name: str, fmt: str, width: int, height: int) -> None:
    data = (fixtures_dir / name).read_bytes()
    assert inspect_image(name, data) == ImageInfo(format=fmt, width=width, height=height, size_bytes=len(data))


def test_format_comes_from_the_bytes_not_the_name(fixtures_dir: Path) -> None:
    info = inspect_image("photo.png", (fixtures_dir / "rocket.jpg").read_bytes())
    assert info.format == "jpeg"


def test_webp_is_accepted() -> None:
    info = inspect_image("a.webp", encode_image((400, 320), "WEBP"))
    assert (info.format, info.width, info.height) == ("webp", 400, 320)


@pytest.mark.parametrize("size", [(750, 300), (300, 750), (300, 300)])
def test_boundary_sizes_and_ratios_are_accepted(size: tuple[int, int]) -> None:
    info = inspect_image("edge.png", encode_image(size))
    assert (info.width, info.height) == size


# ------------------------------------------------------------------------- bad images


def test_empty_file_is_refused() -> None:
    assert str(rejection(inspect_image, "photo.png", b"")) == "photo.png: empty file (0 bytes)"


def test_text_file_named_png_is_refused() -> None:
    error = rejection(inspect_image, "notes.png", b"remember to buy milk\n")
    assert str(error) == "notes.png: not an image — looks like a text file; use JPEG, PNG or WebP"
    assert (error.name, error.problem) == ("notes.png", str(error).removeprefix("notes.png: "))


@pytest.mark.parametrize("name", ["chelsea.png", "rocket.jpg"])
def test_truncated_image_is_refused(fixtures_dir: Path, name: str) -> None:
    data = (fixtures_dir / name).read_bytes()
    error = rejection(inspect_image, f"broken-{name}", data[: len(data) // 2])
    assert str(error) == f"broken-{name}: the image data is truncated or corrupt"


def test_svg_is_refused() -> None:
    svg = b'<?xml version="1.0"?>\n<svg xmlns="http://www.w3.org/2000/svg" width="400" height="400"/>'
    assert str(rejection(inspect_image, "logo.svg", svg)) == (
        "logo.svg: SVG images are not supported; use JPEG, PNG or WebP"
    )


def test_gif_is_refused_even_when_named_png() -> None:
    error = rejection(inspect_image, "anim.png", encode_image((400, 400), "GIF"))
    assert str(error) == "anim.png: GIF images are not supported; use JPEG, PNG or WebP"


@pytest.mark.parametrize(("fmt", "word"), [("BMP", "BMP"), ("TIFF", "TIFF")])
def test_other_image_formats_are_refused(fmt: str, word: str) -> None:
    error = rejection(inspect_image, "scan.jpg", encode_image((400, 400), fmt))
    assert str(error) == f"scan.jpg: {word} images are not supported; use JPEG, PNG or WebP"


def test_pdf_is_refused_as_not_an_image() -> None:
    error = rejection(inspect_image, "doc.png", b"%PDF-1.4\n%\xe2\xe3\xcf\xd3\n")
    assert str(error) == "doc.png: not an image — looks like a PDF document; use JPEG, PNG or WebP"


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((299, 400), "small.png: 299×400 px is too small — each side must be at least 300 px"),
        ((400, 299), "small.png: 400×299 px is too small — each side must be at least 300 px"),
        ((200, 150), "small.png: 200×150 px is too small — each side must be at least 300 px"),
    ],
)
def test_too_small_is_refused(size: tuple[int, int], message: str) -> None:
    assert str(rejection(inspect_image, "small.png", encode_image(size))) == message


@pytest.mark.parametrize(
    ("size", "message"),
    [
        ((780, 300), "aspect ratio 2.60:1 is too wide — must be between 1:2.5 and 2.5:1"),
        ((960, 300), "aspect ratio 3.20:1 is too wide — must be between 1:2.5 and 2.5:1"),
        ((300, 780), "aspect ratio 1:2.60 is too tall — must be between 1:2.5 and 2.5:1"),
        # one pixel past 2.5:1 must not read "2.50:1 is too wide"
        ((751, 300), "aspect ratio 2.51:1 is too wide — must be between 1:2.5 and 2.5:1"),
    ],
)
def test_extreme_aspect_ratio_is_refused(size: tuple[int, int], message: str) -> None:
    assert str(rejection(inspect_image, "wide.png", encode_image(size))) == f"wide.png: {message}"


def test_oversized_image_is_refused() -> None:
    # Noise stored uncompressed: a genuinely > 10 MB, fully valid PNG.
    noise = np.random.default_rng(7).integers(0, 256, (2000, 2000, 3), dtype=np.uint8)
    buffer = io.BytesIO()
    Image.fromarray(noise).save(buffer, "PNG", compress_level=0)
    data = buffer.getvalue()
    assert len(data) > IMAGE_MAX_BYTES
    shown = -(-len(data) * 10 // (1024 * 1024)) / 10  # rounded up, as the message does
    assert str(rejection(inspect_image, "big.png", data)) == f"big.png: {shown:.1f} MB is over the 10 MB limit"


def test_size_just_over_the_limit_never_reads_as_the_limit() -> None:
    data = b"\xff\xd8\xff" + b"\x00" * IMAGE_MAX_BYTES
    assert str(rejection(inspect_image, "big.jpg", data)) == "big.jpg: 10.1 MB is over the 10 MB limit"


@pytest.mark.parametrize(
    ("width", "height", "megapixels"),
    [(60000, 60000, 3600), (10000, 10000, 100), (8000, 8000, 64)],
)
def test_decompression_bomb_is_refused_without_decoding(width: int, height: int, megapixels: int) -> None:
    data = png_claiming(width, height)
    assert len(data) < 1000  # tiny on disk; gigabytes if it were decoded
    error = rejection(inspect_image, "bomb.png", data)
    assert error.name == "bomb.png"
    assert f"{megapixels} megapixels" in error.problem
    assert "at most 50 megapixels" in error.problem


@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.binary(min_size=1, max_size=2048))
def test_arbitrary_bytes_give_info_or_media_error(data: bytes) -> None:
    for prefix in (b"", b"\x89PNG\r\n\x1a\n", b"\xff\xd8\xff"):
        try:
            inspect_image("x.png", prefix + data)
        except MediaError as error:
            assert str(error).startswith("x.png: ")


# ------------------------------------------------------------------------------ videos


@pytest.fixture(scope="module")
def videos(tmp_path_factory: pytest.TempPathFactory) -> Path:
    return tmp_path_factory.mktemp("videos")


def test_fixture_video_is_accepted(fixtures_dir: Path) -> None:
    path = fixtures_dir / "motion_ref.mp4"
    info = inspect_video("motion_ref.mp4", path)
    assert info == VideoInfo(
        container="mp4",
        codec="h264",
        width=1280,
        height=720,
        duration_s=pytest.approx(5.0, abs=0.01),
        fps=pytest.approx(24.0),
        has_audio=True,
        size_bytes=path.stat().st_size,
    )
    assert probe_video(path) == info


def test_mov_container_and_silent_video(videos: Path) -> None:
    info = inspect_video("clip.mov", make_video(videos / "clip.mov", seconds=3.0))
    assert (info.container, info.codec, info.has_audio) == ("mov", "h264", False)
    assert info.duration_s == pytest.approx(3.0, abs=0.01)


def test_hevc_portrait_is_accepted(videos: Path) -> None:
    path = make_video(videos / "hevc.mp4", size=(720, 1280), seconds=3.0, fps=4, codec="libx265")
    info = inspect_video("hevc.mp4", path)
    assert (info.codec, info.width, info.height) == ("hevc", 720, 1280)


def test_video_with_audio_reports_it(videos: Path) -> None:
    info = inspect_video("talk.mp4", make_video(videos / "talk.mp4", seconds=4.0, audio=True))
    assert info.has_audio is True
    assert info.duration_s == pytest.approx(4.0, abs=0.05)


@pytest.mark.parametrize(
    ("seconds", "message"),
    [
        (2.0, "clip.mp4: 2.0 s is too short — reference videos must be 3–10 s"),
        (12.0, "clip.mp4: 12.0 s is too long — reference videos must be 3–10 s"),
    ],
)
def test_duration_out_of_range_is_refused(videos: Path, seconds: float, message: str) -> None:
    path = make_video(videos / f"{seconds}.mp4", seconds=seconds)
    assert str(rejection(inspect_video, "clip.mp4", path)) == message
    assert probe_video(path).duration_s == pytest.approx(seconds, abs=0.01)  # probe applies no limits


def test_too_small_video_is_refused(videos: Path) -> None:
    path = make_video(videos / "small.mp4", size=(640, 360))
    assert str(rejection(inspect_video, "clip.mp4", path)) == (
        "clip.mp4: 640×360 is too small — the shorter side must be at least 720 px"
    )


def test_too_large_video_is_refused(videos: Path) -> None:
    path = make_video(videos / "wide.mp4", size=(2400, 720), fps=2)
    assert str(rejection(inspect_video, "clip.mp4", path)) == (
        "clip.mp4: 2400×720 is too large — the longer side must be at most 2160 px"
    )


def test_non_h264_codec_is_refused(videos: Path) -> None:
    path = make_video(videos / "mpeg4.mp4", codec="mpeg4")
    assert str(rejection(inspect_video, "clip.mp4", path)) == (
        "clip.mp4: the video is encoded as mpeg4, which is not supported; use H.264 or H.265"
    )


def test_webm_is_refused(videos: Path) -> None:
    path = make_video(videos / "clip.webm", size=(320, 240), seconds=1.0, codec="libvpx", container_format="webm")
    assert str(rejection(inspect_video, "clip.webm", path)) == (
        "clip.webm: WebM video is not supported; use MP4 or MOV (H.264/H.265)"
    )


def test_image_named_mp4_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes((fixtures_dir / "chelsea.png").read_bytes())
    assert str(rejection(inspect_video, "clip.mp4", path)) == (
        "clip.mp4: not a video — looks like a PNG image; use MP4 or MOV (H.264/H.265)"
    )


def test_empty_video_is_refused(tmp_path: Path) -> None:
    path = tmp_path / "clip.mp4"
    path.write_bytes(b"")
    assert str(rejection(inspect_video, "clip.mp4", path)) == "clip.mp4: empty file (0 bytes)"


def test_oversized_video_is_refused_without_reading_it(tmp_path: Path) -> None:
    path = tmp_path / "huge.mp4"
    with path.open("wb") as handle:  # sparse: 201 MB on paper, a few bytes on disk
        handle.write(b"\x00\x00\x00\x20ftypisom\x00\x00\x02\x00")
        handle.truncate(VIDEO_MAX_BYTES + 1024 * 1024)
    assert str(rejection(inspect_video, "huge.mp4", path)) == "huge.mp4: 201.0 MB is over the 200 MB limit"


def test_video_cut_short_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    # motion_ref.mp4 keeps its index up front, so half the file still probes as 5 s.
    data = (fixtures_dir / "motion_ref.mp4").read_bytes()
    path = tmp_path / "cut.mp4"
    path.write_bytes(data[: len(data) // 2])
    assert str(rejection(inspect_video, "cut.mp4", path)) == "cut.mp4: the video data is truncated or corrupt"


def test_video_without_its_index_is_refused(tmp_path: Path, fixtures_dir: Path) -> None:
    data = (fixtures_dir / "motion_ref.mp4").read_bytes()
    path = tmp_path / "broken.mp4"
    path.write_bytes(data[:64] + b"\x00" * 512)
    assert str(rejection(inspect_video, "broken.mp4", path)) == (
        "broken.mp4: no video track found — the file may be truncated or corrupt"
    )


def test_probe_names_the_unreadable_file(tmp_path: Path) -> None:
    path = tmp_path / "junk.mp4"
    path.write_bytes(b"not a video at all")
    assert rejection(probe_video, path).name == "junk.mp4"


# ------------------------------------------------------------------------ inspect_media


def test_inspect_media_dispatches_on_content(tmp_path: Path, fixtures_dir: Path) -> None:
    disguised = tmp_path / "actually-a-photo.mp4"
    disguised.write_bytes((fixtures_dir / "coffee.png").read_bytes())
    assert isinstance(inspect_media("actually-a-photo.mp4", disguised), ImageInfo)
    assert isinstance(inspect_media("ref.bin", fixtures_dir / "motion_ref.mp4"), VideoInfo)


def test_inspect_media_refuses_oversized_image_before_reading(tmp_path: Path) -> None:
    path = tmp_path / "big.png"
    with path.open("wb") as handle:
        handle.write(b"\x89PNG\r\n\x1a\n")
        handle.truncate(IMAGE_MAX_BYTES * 2)
    assert str(rejection(inspect_media, "big.png", path)) == "big.png: 20.0 MB is over the 10 MB limit"


_USE_EITHER = "use JPEG, PNG or WebP images, or MP4 or MOV videos"


@pytest.mark.parametrize(
    ("content", "problem"),
    [
        (b"", "empty file (0 bytes)"),
        (b"hello\n", f"not an image or video — looks like a text file; {_USE_EITHER}"),
        (b"\x01\x02\x03\x04" * 8, f"not an image or video — the file type is not recognised; {_USE_EITHER}"),
    ],
)
def test_inspect_media_refuses_other_files(tmp_path: Path, content: bytes, problem: str) -> None:
    path = tmp_path / "upload"
    path.write_bytes(content)
    assert str(rejection(inspect_media, "upload.png", path)) == f"upload.png: {problem}"


def test_inspect_media_applies_image_rules(tmp_path: Path) -> None:
    path = tmp_path / "anim.gif"
    path.write_bytes(encode_image((400, 400), "GIF"))
    assert str(rejection(inspect_media, "anim.gif", path)) == (
        "anim.gif: GIF images are not supported; use JPEG, PNG or WebP"
    )
