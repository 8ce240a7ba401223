"""The provider-neutral generation request and its validation.

`GenerationRequest.create(...)` checks every rule at once and raises `InvalidRequest` listing every
violation, each naming the field, the value given and the limit. The model itself re-checks the same rules
on construction, so no invalid request can exist anywhere in the program.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from typing import Any, Literal

from pydantic import BaseModel, ConfigDict, model_validator

from bot.prompt_refs import find_refs

AspectRatio = Literal["16:9", "9:16", "1:1"]
Tier = Literal["standard", "pro", "4k"]
ShotType = Literal["intelligent", "customize"]

ASPECT_RATIOS: tuple[str, ...] = ("16:9", "9:16", "1:1")
TIERS: tuple[str, ...] = ("standard", "pro", "4k")
SHOT_TYPES: tuple[str, ...] = ("intelligent", "customize")
PROMPT_MAX = 2500
SHOT_PROMPT_MAX = 512
MAX_SHOTS = 6
DURATION_MIN, DURATION_MAX = 3, 15
MAX_REFS = 7  # images + elements
MAX_REFS_WITH_VIDEO = 4
ELEMENT_MAX_EXTRA_REFS = 3


@dataclass(frozen=True)
class Violation:
    field: str
    message: str

    def __str__(self) -> str:
        return f"{self.field}: {self.message}"


class InvalidRequest(ValueError):
    """A request broke one or more rules; `violations` lists every one."""

    def __init__(self, violations: Iterable[Violation]) -> None:
        self.violations = list(violations)
        super().__init__("; ".join(str(v) for v in self.violations))


class MediaRef(BaseModel):
    """An input file already received, checked and stored locally (content-addressed by sha256)."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    name: str
    path: str
    sha256: str
    kind: Literal["image", "video"]
    format: str
    width: int
    height: int
    size_bytes: int
    duration_s: float | None = None
    has_audio: bool | None = None
    source_url: str | None = None


class Element(BaseModel):
    """A subject: a frontal image plus 1–3 more views, or an element id already known to the provider."""

    model_config = ConfigDict(frozen=True, extra="forbid")

    frontal: MediaRef | None = None
    references: tuple[MediaRef, ...] = ()
    element_id: str | None = None


class Shot(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str
    duration: int


class GenerationRequest(BaseModel):
    model_config = ConfigDict(frozen=True, extra="forbid")

    prompt: str | None = None
    images: tuple[MediaRef, ...] = ()
    video: MediaRef | None = None
    aspect_ratio: AspectRatio = "16:9"
    duration: int = 5
    sound: bool = False
    keep_original_sound: bool = True
    tier: Tier = "standard"
    shot_type: ShotType = "intelligent"
    multi_prompt: tuple[Shot, ...] | None = None
    elements: tuple[Element, ...] = ()
    start_frame: MediaRef | None = None
    end_frame: MediaRef | None = None

    @classmethod
    def create(cls, **fields: Any) -> GenerationRequest:
        """Build a request, reporting every broken rule together."""
        violations = check_fields(fields)
        if violations:
            raise InvalidRequest(violations)
        return cls.model_validate(fields)

    @model_validator(mode="after")
    def _rules(self) -> GenerationRequest:
        violations = check_fields(self.model_dump())
        if violations:
            raise ValueError("; ".join(str(v) for v in violations))
        return self

    @property
    def texts(self) -> list[str]:
        """Every piece of prompt text: the prompt or each shot's prompt."""
        if self.multi_prompt:
            return [shot.prompt for shot in self.multi_prompt]
        return [self.prompt or ""]

    @property
    def caption(self) -> str:
        return " | ".join(self.texts)

    def all_media(self) -> list[MediaRef]:
        media = list(self.images)
        for element in self.elements:
            media += [m for m in (element.frontal, *element.references) if m is not None]
        media += [m for m in (self.video, self.start_frame, self.end_frame) if m is not None]
        return media


def _get(obj: Any, key: str) -> Any:
    return obj.get(key) if isinstance(obj, dict) else getattr(obj, key, None)


def _choice(fields: dict[str, Any], name: str, allowed: tuple[str, ...], out: list[Violation]) -> None:
    value = fields.get(name)
    if value is not None and value not in allowed:
        out.append(Violation(name, f"{value!r} is not allowed — choose one of {', '.join(allowed)}"))


def _is_int(value: Any) -> bool:
    return isinstance(value, int) and not isinstance(value, bool)


def check_fields(fields: dict[str, Any]) -> list[Violation]:
    """Every rule of the request, checked leniently on raw values so that all problems surface together."""
    out: list[Violation] = []
    known = set(GenerationRequest.model_fields)
    for name in sorted(set(fields) - known):
        out.append(Violation(name, "is not a known parameter"))

    prompt = fields.get("prompt")
    shots = fields.get("multi_prompt")
    images = list(fields.get("images") or ())
    elements = list(fields.get("elements") or ())
    video = fields.get("video")
    duration = fields.get("duration", 5)

    # prompt XOR multi_prompt
    if shots:
        if prompt:
            out.append(Violation("prompt", "must be left out when multi_prompt is given (each shot has its own)"))
    elif prompt is None or (isinstance(prompt, str) and not prompt.strip()):
        out.append(Violation("prompt", "is required (1–2500 characters) unless multi_prompt is given"))
    if isinstance(prompt, str) and len(prompt) > PROMPT_MAX:
        out.append(Violation("prompt", f"{len(prompt)} characters is over the {PROMPT_MAX}-character limit"))

    if not _is_int(duration):
        out.append(Violation("duration", f"{duration!r} must be a whole number of seconds"))
    elif not DURATION_MIN <= duration <= DURATION_MAX:
        out.append(Violation("duration", f"{duration} s is out of range — must be {DURATION_MIN}–{DURATION_MAX} s"))

    _choice(fields, "aspect_ratio", ASPECT_RATIOS, out)
    _choice(fields, "tier", TIERS, out)
    _choice(fields, "shot_type", SHOT_TYPES, out)

    # reference counts: images and elements share one budget, smaller with a video
    refs = len(images) + len(elements)
    limit = MAX_REFS_WITH_VIDEO if video is not None else MAX_REFS
    if refs > limit:
        what = f"{len(images)} images" + (f" + {len(elements)} elements" if elements else "")
        why = f"at most {limit} with a reference video" if video is not None else f"at most {limit}"
        out.append(Violation("images", f"{what} given — {why}"))

    if fields.get("sound") and video is not None:
        out.append(Violation("sound", "cannot be on with a reference video (use keep_original_sound instead)"))

    for index, element in enumerate(elements, start=1):
        frontal, element_id = _get(element, "frontal"), _get(element, "element_id")
        extra = _get(element, "references") or ()
        if element_id and (frontal is not None or extra):
            out.append(Violation(f"elements[{index}]", "give either an element id or images, not both"))
        elif not element_id:
            if frontal is None:
                out.append(Violation(f"elements[{index}]", "needs a frontal image (or a provider element id)"))
            if not 1 <= len(extra) <= ELEMENT_MAX_EXTRA_REFS:
                out.append(
                    Violation(
                        f"elements[{index}]",
                        f"{len(extra)} extra reference images — an element needs 1–{ELEMENT_MAX_EXTRA_REFS}",
                    )
                )

    if fields.get("end_frame") is not None and fields.get("start_frame") is None:
        out.append(Violation("end_frame", "needs a start_frame too"))

    texts: list[str] = [prompt] if isinstance(prompt, str) else []
    if shots:
        out += _check_shots(list(shots), duration)
        texts = [str(_get(shot, "prompt") or "") for shot in shots]

    out += _check_prompt_refs(texts, len(images), len(elements), video is not None)
    return out


def _check_shots(shots: list[Any], duration: Any) -> list[Violation]:
    out: list[Violation] = []
    if len(shots) > MAX_SHOTS:
        out.append(Violation("multi_prompt", f"{len(shots)} shots given — at most {MAX_SHOTS}"))
    total = 0
    for index, shot in enumerate(shots, start=1):
        text, seconds = _get(shot, "prompt"), _get(shot, "duration")
        if not isinstance(text, str) or not text.strip():
            out.append(Violation(f"multi_prompt[{index}].prompt", "is empty"))
        elif len(text) > SHOT_PROMPT_MAX:
            too_long = f"{len(text)} characters is over the {SHOT_PROMPT_MAX} limit"
            out.append(Violation(f"multi_prompt[{index}].prompt", too_long))
        if not _is_int(seconds) or seconds < 1:
            out.append(Violation(f"multi_prompt[{index}].duration", f"{seconds!r} must be a whole number ≥ 1 s"))
        else:
            total += seconds
    if _is_int(duration) and not out and total != duration:
        out.append(Violation("multi_prompt", f"shot durations add up to {total} s but duration is {duration} s"))
    return out


def _check_prompt_refs(texts: list[str], images: int, elements: int, has_video: bool) -> list[Violation]:
    out: list[Violation] = []
    available = {"image": images, "element": elements, "video": 1 if has_video else 0}
    seen: set[str] = set()
    for text in texts:
        for kind, number, written in find_refs(text):
            if written in seen:
                continue
            seen.add(written)
            count = available[kind]
            if not 1 <= number <= count:
                have = f"only {count} {kind}{'s' if count != 1 else ''}" if count else f"no {kind}s"
                out.append(Violation("prompt", f"refers to {written!r} but the request has {have}"))
    return out
