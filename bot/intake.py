"""From raw inputs (paths, URLs, bytes and plain values) to a validated GenerationRequest.

Shared by the CLI and the Discord cogs. Media problems and parameter problems are gathered together,
so a person sees everything wrong with a request at once.
"""

from __future__ import annotations

from dataclasses import dataclass, field
from pathlib import Path
from typing import Any, Literal

import httpx

from bot.media.ingest import MediaStore
from bot.media.inspect import MediaError
from bot.request import Element, GenerationRequest, InvalidRequest, MediaRef, Shot, Violation

Source = str | Path | tuple[str, bytes]  # a path or URL, or (file name, bytes) already received


@dataclass
class RawElement:
    frontal: Source | None = None
    references: list[Source] = field(default_factory=list)
    element_id: str | None = None


@dataclass
class RawRequest:
    prompt: str | None = None
    images: list[Source] = field(default_factory=list)
    video: Source | None = None
    aspect_ratio: str | None = None
    duration: int | None = None
    sound: bool | None = None
    keep_original_sound: bool | None = None
    tier: str | None = None
    shot_type: str | None = None
    multi_prompt: list[tuple[int, str]] | None = None
    elements: list[RawElement] = field(default_factory=list)
    start_frame: Source | None = None
    end_frame: Source | None = None


def parse_shot(text: str) -> tuple[int, str]:
    """'3: a wide shot' -> (3, 'a wide shot'); the number is the shot's length in seconds."""
    head, sep, body = text.partition(":")
    if not sep or not head.strip().isdigit() or not body.strip():
        raise ValueError(f"{text!r} is not a shot — write it as 'SECONDS: what happens', e.g. '3: a wide shot'")
    return int(head.strip()), body.strip()


def parse_shots(text: str) -> list[tuple[int, str]]:
    """'2: wide shot | 3: close-up' -> [(2, 'wide shot'), (3, 'close-up')] (the Discord option's format)."""
    return [parse_shot(part) for part in text.split("|") if part.strip()]


async def build_request(raw: RawRequest, media: MediaStore, http: httpx.AsyncClient | None = None) -> GenerationRequest:
    """Receive every file, then validate everything; raises InvalidRequest listing all problems."""
    problems: list[Violation] = []

    async def take(label: str, source: Source | None, kind: Literal["image", "video"]) -> MediaRef | None:
        if source is None:
            return None
        try:
            if isinstance(source, tuple):
                return media.ingest_bytes(source[0], source[1], expect=kind)
            return await media.ingest(source, http=http, expect=kind)
        except MediaError as exc:
            problems.append(Violation(label, str(exc)))
            return None

    images = [await take(f"image {i}", src, "image") for i, src in enumerate(raw.images, start=1)]
    video = await take("video", raw.video, "video")
    elements = []
    for number, raw_element in enumerate(raw.elements, start=1):
        frontal = await take(f"element {number}", raw_element.frontal, "image")
        refs = [await take(f"element {number}", src, "image") for src in raw_element.references]
        elements.append(
            Element(
                frontal=frontal,
                references=tuple(r for r in refs if r is not None),
                element_id=raw_element.element_id,
            )
        )
    start = await take("start_frame", raw.start_frame, "image")
    end = await take("end_frame", raw.end_frame, "image")

    fields: dict[str, Any] = {
        "prompt": raw.prompt,
        "images": tuple(i for i in images if i is not None),
        "video": video,
        "elements": tuple(elements),
        "start_frame": start,
        "end_frame": end,
    }
    for name in ("aspect_ratio", "duration", "sound", "keep_original_sound", "tier", "shot_type"):
        value = getattr(raw, name)
        if value is not None:
            fields[name] = value
    if raw.multi_prompt:
        fields["multi_prompt"] = tuple(Shot(duration=d, prompt=p) for d, p in raw.multi_prompt)
    if raw.video is not None and video is None:
        fields["video"] = None
    try:
        request = GenerationRequest.create(**fields)
    except InvalidRequest as exc:
        problems += exc.violations
    if problems:
        raise InvalidRequest(problems)
    return request
