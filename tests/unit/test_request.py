"""Every rule of the request model at its boundaries; all violations reported together."""

from __future__ import annotations

from typing import Any

import pytest
from hypothesis import given
from hypothesis import strategies as st
from pydantic import ValidationError

from bot.request import Element, GenerationRequest, InvalidRequest, Shot
from tests.conftest import media_ref

IMG = media_ref()
VIDEO = media_ref("video", "ref.mp4")


def problems(**fields: Any) -> list[str]:
    with pytest.raises(InvalidRequest) as caught:
        GenerationRequest.create(**fields)
    return [str(v) for v in caught.value.violations]


def test_defaults() -> None:
    request = GenerationRequest.create(prompt="a cat")
    assert (request.aspect_ratio, request.duration, request.tier, request.shot_type) == (
        "16:9",
        5,
        "standard",
        "intelligent",
    )
    assert request.sound is False and request.keep_original_sound is True


@pytest.mark.parametrize("count", [0, 1, 7])
def test_up_to_seven_images(count: int) -> None:
    assert len(GenerationRequest.create(prompt="x", images=[IMG] * count).images) == count


def test_eight_images_rejected() -> None:
    assert problems(prompt="x", images=[IMG] * 8) == ["images: 8 images given — at most 7"]


def test_four_images_with_video_ok_five_rejected() -> None:
    assert len(GenerationRequest.create(prompt="x", images=[IMG] * 4, video=VIDEO).images) == 4
    assert problems(prompt="x", images=[IMG] * 5, video=VIDEO) == [
        "images: 5 images given — at most 4 with a reference video"
    ]


def test_elements_share_the_reference_budget() -> None:
    element = Element(frontal=IMG, references=(IMG,))
    GenerationRequest.create(prompt="x", images=[IMG] * 5, elements=[element] * 2)
    assert problems(prompt="x", images=[IMG] * 6, elements=[element] * 2) == [
        "images: 6 images + 2 elements given — at most 7"
    ]


@pytest.mark.parametrize("duration", [3, 15])
def test_duration_bounds_ok(duration: int) -> None:
    assert GenerationRequest.create(prompt="x", duration=duration).duration == duration


@pytest.mark.parametrize("duration", [2, 16])
def test_duration_out_of_bounds(duration: int) -> None:
    assert problems(prompt="x", duration=duration) == [f"duration: {duration} s is out of range — must be 3–15 s"]


def test_prompt_length() -> None:
    assert len(GenerationRequest.create(prompt="p" * 2500).prompt or "") == 2500
    assert problems(prompt="p" * 2501) == ["prompt: 2501 characters is over the 2500-character limit"]


@pytest.mark.parametrize("prompt", [None, "", "   "])
def test_prompt_required(prompt: str | None) -> None:
    assert problems(prompt=prompt) == ["prompt: is required (1–2500 characters) unless multi_prompt is given"]


def test_sound_with_video_rejected() -> None:
    assert problems(prompt="x", video=VIDEO, sound=True) == [
        "sound: cannot be on with a reference video (use keep_original_sound instead)"
    ]


def test_multi_prompt_sums_to_duration() -> None:
    shots = [Shot(prompt="wide", duration=2), Shot(prompt="close", duration=3)]
    assert GenerationRequest.create(multi_prompt=shots, duration=5).texts == ["wide", "close"]
    assert problems(multi_prompt=shots, duration=6) == [
        "multi_prompt: shot durations add up to 5 s but duration is 6 s"
    ]


def test_multi_prompt_limits() -> None:
    seven = [Shot(prompt="s", duration=1)] * 7
    assert "multi_prompt: 7 shots given — at most 6" in problems(multi_prompt=seven, duration=7)
    long_shot = [Shot(prompt="s" * 513, duration=5)]
    assert problems(multi_prompt=long_shot) == ["multi_prompt[1].prompt: 513 characters is over the 512 limit"]
    GenerationRequest.create(multi_prompt=[Shot(prompt="s" * 512, duration=5)])
    zero = [Shot(prompt="a", duration=0), Shot(prompt="b", duration=5)]
    assert problems(multi_prompt=zero) == ["multi_prompt[1].duration: 0 must be a whole number ≥ 1 s"]


def test_prompt_and_multi_prompt_are_exclusive() -> None:
    shots = [Shot(prompt="a", duration=5)]
    assert problems(prompt="x", multi_prompt=shots) == [
        "prompt: must be left out when multi_prompt is given (each shot has its own)"
    ]


def test_figure_three_with_two_images_rejected() -> None:
    assert problems(prompt="Figure 1 meets Figure 3", images=[IMG, IMG]) == [
        "prompt: refers to 'Figure 3' but the request has only 2 images"
    ]


@pytest.mark.parametrize("ref", ["Figure 2", "@Image2", "image 2", "<<<image_2>>>", "figure 2"])
def test_every_reference_syntax_is_checked(ref: str) -> None:
    GenerationRequest.create(prompt=f"{ref} waves", images=[IMG, IMG])
    assert problems(prompt=f"{ref} waves", images=[IMG])[0].startswith("prompt: refers to")


def test_references_in_shots_are_checked() -> None:
    shots = [Shot(prompt="@Image1 runs", duration=2), Shot(prompt="@Element1 jumps", duration=3)]
    assert problems(multi_prompt=shots, images=[IMG]) == [
        "prompt: refers to '@Element1' but the request has no elements"
    ]


def test_elements_rules() -> None:
    assert problems(prompt="x", elements=[Element(frontal=IMG)]) == [
        "elements[1]: 0 extra reference images — an element needs 1–3"
    ]
    assert problems(prompt="x", elements=[Element(references=(IMG,))]) == [
        "elements[1]: needs a frontal image (or a provider element id)"
    ]
    assert problems(prompt="x", elements=[Element(frontal=IMG, references=(IMG,) * 4)]) == [
        "elements[1]: 4 extra reference images — an element needs 1–3"
    ]
    GenerationRequest.create(prompt="x", elements=[Element(element_id="123")])
    GenerationRequest.create(prompt="x", elements=[Element(frontal=IMG, references=(IMG,) * 3)])


def test_end_frame_needs_start_frame() -> None:
    assert problems(prompt="x", end_frame=IMG) == ["end_frame: needs a start_frame too"]
    GenerationRequest.create(prompt="x", start_frame=IMG, end_frame=IMG)


def test_choices() -> None:
    assert problems(prompt="x", aspect_ratio="4:3", tier="ultra", shot_type="auto") == [
        "aspect_ratio: '4:3' is not allowed — choose one of 16:9, 9:16, 1:1",
        "tier: 'ultra' is not allowed — choose one of standard, pro, 4k",
        "shot_type: 'auto' is not allowed — choose one of intelligent, customize",
    ]


def test_all_violations_reported_together() -> None:
    found = problems(prompt="Figure 9 " + "x" * 2600, images=[IMG] * 5, video=VIDEO, sound=True, duration=20)
    assert [p.split(":")[0] for p in found] == ["prompt", "duration", "images", "sound", "prompt"]


def test_model_cannot_be_built_invalid_directly() -> None:
    with pytest.raises(ValidationError):
        GenerationRequest(prompt="x", duration=16)


def test_round_trips_through_json() -> None:
    request = GenerationRequest.create(
        multi_prompt=[Shot(prompt="Figure 1 a", duration=4), Shot(prompt="b", duration=4)],
        duration=8,
        images=[IMG],
        elements=[Element(frontal=IMG, references=(IMG,))],
        start_frame=IMG,
        tier="pro",
    )
    assert GenerationRequest.model_validate_json(request.model_dump_json()) == request


@given(
    images=st.integers(0, 9),
    video=st.booleans(),
    duration=st.integers(0, 20),
    sound=st.booleans(),
)
def test_accepts_exactly_the_documented_space(images: int, video: bool, duration: int, sound: bool) -> None:
    fields = {"prompt": "x", "images": [IMG] * images, "video": VIDEO if video else None, "duration": duration,
              "sound": sound}  # fmt: skip
    valid = images <= (4 if video else 7) and 3 <= duration <= 15 and not (sound and video)
    try:
        GenerationRequest.create(**fields)
        accepted = True
    except InvalidRequest:
        accepted = False
    assert accepted == valid
