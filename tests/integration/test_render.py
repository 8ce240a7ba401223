"""bot.media.render: real renders, probed and decoded — durations, frame sizes, audio presence,
codec, the burned-in preview label, and that a failed render leaves nothing behind."""

from __future__ import annotations

import threading
from dataclasses import replace
from pathlib import Path

import av
import numpy as np
import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.media.inspect import probe_video
from bot.media.render import FPS, FRAME_SIZES, RenderSpec, preview_label_box, render_preview

FIXTURES = Path(__file__).parent.parent / "fixtures"
PROMPT = "An astronaut cuddles a cat beside a rocket at dawn, slow dolly-in, warm light, film grain " * 3


def spec(**changes: object) -> RenderSpec:
    base = RenderSpec(
        images=(),
        video=None,
        prompt=PROMPT,
        aspect_ratio="16:9",
        duration_s=3,
        sound=False,
        keep_original_sound=False,
    )
    return replace(base, **changes)


# Each case renders once per module; the tests below check different facts about it.
CASES: dict[str, RenderSpec] = {
    # images, 3 s, the generated tone
    "images_sound": spec(images=(FIXTURES / "astronaut.png", FIXTURES / "chelsea.png"), sound=True),
    # title card (no references), 15 s, silent
    "card_15s": spec(aspect_ratio="1:1", duration_s=15),
    # reference video looped past its 5 s, keeping its 440 Hz audio
    "video_keep_7s": spec(
        video=FIXTURES / "motion_ref.mp4", aspect_ratio="9:16", duration_s=7, keep_original_sound=True
    ),
    # reference video, its audio dropped
    "video_mute": spec(video=FIXTURES / "motion_ref.mp4", duration_s=3),
    # forbidden by the request model, must not crash: the original sound wins
    "video_keep_and_sound": spec(
        video=FIXTURES / "motion_ref.mp4", aspect_ratio="1:1", sound=True, keep_original_sound=True
    ),
    # more slides than seconds: cross-fades must shrink to fit
    "seven_images": spec(
        images=tuple(FIXTURES / n for n in ("astronaut.png", "chelsea.png", "coffee.png", "rocket.jpg") * 2)[:7],
        aspect_ratio="9:16",
    ),
}
EXPECT_AUDIO = {
    "images_sound": True,
    "card_15s": False,
    "video_keep_7s": True,
    "video_mute": False,
    "video_keep_and_sound": True,
    "seven_images": False,
}


@pytest.fixture(scope="module")
def rendered(tmp_path_factory: pytest.TempPathFactory) -> dict[str, Path]:
    folder = tmp_path_factory.mktemp("renders")
    outputs = {}
    for name, case in CASES.items():
        outputs[name] = folder / f"{name}.mp4"
        render_preview(case, outputs[name])
    return outputs


def decode_frame(path: Path, index: int) -> np.ndarray:
    with av.open(str(path)) as container:
        for position, frame in enumerate(container.decode(video=0)):
            if position == index:
                return frame.to_ndarray(format="rgb24")
    raise AssertionError(f"{path.name} has fewer than {index + 1} frames")


def decode_audio(path: Path) -> tuple[np.ndarray, int]:
    with av.open(str(path)) as container:
        stream = container.streams.audio[0]
        chunks = [frame.to_ndarray()[0] for frame in container.decode(stream)]
        return np.concatenate(chunks), stream.rate


def stream_seconds(path: Path) -> dict[str, float]:
    with av.open(str(path)) as container:
        return {s.type: float(s.duration * s.time_base) for s in container.streams if s.duration}


def dominant_hz(samples: np.ndarray, rate: int) -> float:
    spectrum = np.abs(np.fft.rfft(samples * np.hanning(len(samples))))
    return float(np.fft.rfftfreq(len(samples), 1 / rate)[np.argmax(spectrum)])


# -------------------------------------------------------------------- container facts


@pytest.mark.parametrize("name", CASES)
def test_duration_matches_request(rendered: dict[str, Path], name: str) -> None:
    info = probe_video(rendered[name])
    assert info.duration_s == pytest.approx(CASES[name].duration_s, abs=0.1)


@pytest.mark.parametrize("name", CASES)
def test_no_stream_overhangs_the_clip(rendered: dict[str, Path], name: str) -> None:
    wanted = CASES[name].duration_s
    for kind, seconds in stream_seconds(rendered[name]).items():
        assert seconds == pytest.approx(wanted, abs=0.05), kind
    with av.open(str(rendered[name])) as container:
        assert container.streams.video[0].frames == wanted * FPS


@pytest.mark.parametrize("name", CASES)
def test_frame_size_codec_and_rate(rendered: dict[str, Path], name: str) -> None:
    info = probe_video(rendered[name])
    assert (info.width, info.height) == FRAME_SIZES[CASES[name].aspect_ratio]
    assert info.container == "mp4"
    assert info.codec == "h264"
    assert info.fps == pytest.approx(FPS)
    with av.open(str(rendered[name])) as container:
        assert container.streams.video[0].codec_context.pix_fmt == "yuv420p"


@pytest.mark.parametrize("name", CASES)
def test_audio_present_exactly_when_expected(rendered: dict[str, Path], name: str) -> None:
    assert probe_video(rendered[name]).has_audio is EXPECT_AUDIO[name]
    if EXPECT_AUDIO[name]:
        with av.open(str(rendered[name])) as container:
            assert container.streams.audio[0].codec_context.name == "aac"


def test_kept_sound_is_the_reference_audio(rendered: dict[str, Path]) -> None:
    for name in ("video_keep_7s", "video_keep_and_sound"):
        samples, rate = decode_audio(rendered[name])
        # The fixture's track is a 440 Hz tone; look past the 5 s loop point too.
        assert dominant_hz(samples[rate : rate * 3], rate) == pytest.approx(440, abs=5), name
    samples, rate = decode_audio(rendered["video_keep_7s"])
    assert dominant_hz(samples[rate * 5 : rate * 6], rate) == pytest.approx(440, abs=5)


def test_generated_tone_is_not_the_reference_audio_and_is_audible(rendered: dict[str, Path]) -> None:
    samples, rate = decode_audio(rendered["images_sound"])
    assert np.sqrt(np.mean(samples**2)) > 0.01
    assert abs(dominant_hz(samples[: rate * 2], rate) - 440) > 20


def test_output_says_it_is_a_preview_in_its_metadata(rendered: dict[str, Path]) -> None:
    with av.open(str(rendered["images_sound"])) as container:
        assert "not AI generated" in container.metadata.get("comment", "")


# ----------------------------------------------------------------------------- pictures


def label_pixels(frame: np.ndarray, box: tuple[int, int, int, int]) -> tuple[float, int]:
    """(share of dark pixels, count of bright pixels) inside ``box``."""
    left, top, right, bottom = box
    luma = frame[top:bottom, left:right].mean(axis=2)
    return float((luma < 70).mean()), int((luma > 200).sum())


@pytest.mark.parametrize("name", ["card_15s", "images_sound", "video_mute", "seven_images"])
def test_preview_label_is_burned_in(rendered: dict[str, Path], name: str) -> None:
    aspect = CASES[name].aspect_ratio
    frame = decode_frame(rendered[name], FPS)  # one second in
    box = preview_label_box(aspect)
    dark_share, bright = label_pixels(frame, box)
    # A dark plate with white lettering on it.
    assert dark_share > 0.5
    assert bright > 150
    if name == "card_15s":
        # The same-sized patch mirrored to the top-right corner is plain (dark) gradient
        # with no lettering, so it fails the bright-pixel test: the check detects the label.
        width = FRAME_SIZES[aspect][0]
        mirrored = (width - box[2], box[1], width - box[0], box[3])
        assert label_pixels(frame, mirrored)[1] == 0


def test_slideshow_moves_and_changes_picture(rendered: dict[str, Path]) -> None:
    first = decode_frame(rendered["images_sound"], 0).astype(np.int16)
    middle = decode_frame(rendered["images_sound"], 20).astype(np.int16)  # before the cross-fade
    last = decode_frame(rendered["images_sound"], 3 * FPS - 1).astype(np.int16)
    # Ken Burns within a slide: the picture shifts a little …
    assert np.abs(first - middle).mean() > 5
    # … and by the end it is a different photo altogether.
    assert np.abs(first - last).mean() > 20


def test_reference_video_frames_are_the_picture(rendered: dict[str, Path]) -> None:
    frame = decode_frame(rendered["video_mute"], FPS // 2)
    with av.open(str(FIXTURES / "motion_ref.mp4")) as container:
        for index, source in enumerate(container.decode(video=0)):
            if index == FPS // 2:
                reference = source.to_ndarray(format="rgb24")
                break
    # Same frame size and frame rate: away from the label and caption they match closely.
    centre = (slice(200, 450), slice(200, 1080))
    assert np.abs(frame[centre].astype(np.int16) - reference[centre]).mean() < 8


# ------------------------------------------------------------------- robustness/contract


def test_failed_render_leaves_nothing_behind(tmp_path: Path) -> None:
    out = tmp_path / "clip.mp4"
    out.write_bytes(b"previous clip")
    threads_before = threading.active_count()

    def abort_midway(fraction: float) -> None:
        if fraction > 0.3:
            raise RuntimeError("cancelled")

    with pytest.raises(RuntimeError, match="cancelled"):
        render_preview(spec(aspect_ratio="1:1", duration_s=3, sound=True), out, abort_midway)
    assert out.read_bytes() == b"previous clip"
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]
    assert threading.active_count() == threads_before


def test_progress_rises_to_one(tmp_path: Path) -> None:
    seen: list[float] = []
    out = tmp_path / "clip.mp4"
    render_preview(spec(aspect_ratio="1:1", duration_s=3), out, seen.append)
    assert seen[0] == 0.0
    assert seen[-1] == 1.0
    assert seen == sorted(seen)
    assert len(seen) >= 3
    assert sorted(p.name for p in tmp_path.iterdir()) == ["clip.mp4"]


def test_unknown_aspect_ratio_is_a_programming_error(tmp_path: Path) -> None:
    with pytest.raises(ValueError, match="aspect ratio"):
        render_preview(spec(aspect_ratio="4:3"), tmp_path / "clip.mp4")
    assert not any(tmp_path.iterdir())


@given(n_slides=st.integers(1, 9), n_frames=st.integers(24, 15 * FPS), data=st.data())
def test_slide_weights_always_sum_to_one(n_slides: int, n_frames: int, data: st.DataObject) -> None:
    from bot.media.render import _CROSSFADE_S, _slide_weights

    fade = min(_CROSSFADE_S * FPS, n_frames / n_slides / 2)
    index = data.draw(st.integers(0, n_frames - 1))
    weights = _slide_weights(index, n_slides, n_frames, fade)
    assert 1 <= len(weights) <= 2
    assert sum(weight for weight, _ in weights.values()) == pytest.approx(1.0)
    assert all(0.0 <= progress <= 1.0 for _, progress in weights.values())
