"""References to inputs inside a prompt, in every syntax the providers use.

People write "Figure 2", "image 2", "@Image2" or "<<<image_2>>>" (and the same for elements); each provider
wants exactly one of those syntaxes. We find them all, check they point at something that exists, and
rewrite them to the provider's style.
"""

from __future__ import annotations

import re
from enum import StrEnum


class RefStyle(StrEnum):
    FIGURE = "figure"  # "Figure 1"      (WaveSpeed, Atlas, RunComfy: natural language)
    AT = "at"  # "@Image1"              (fal, EvoLink new schema)
    ANGLE = "angle"  # "<<<image_1>>>"    (Kling official)


_REF = re.compile(
    r"<<<\s*(?P<a_kind>image|element|video)_(?P<a_num>\d+)\s*>>>"
    r"|@(?P<t_kind>image|element|video)\s?(?P<t_num>\d+)\b"
    r"|\b(?P<f_kind>figure|image|element)\s?#?(?P<f_num>\d+)\b",
    re.IGNORECASE,
)


def _kind_and_number(match: re.Match[str]) -> tuple[str, int]:
    for prefix in ("a", "t", "f"):
        kind = match.group(f"{prefix}_kind")
        if kind:
            kind = kind.lower()
            return ("image" if kind == "figure" else kind), int(match.group(f"{prefix}_num"))
    raise AssertionError("unreachable: the pattern always sets one group")


def find_refs(text: str) -> list[tuple[str, int, str]]:
    """Every reference as (kind, number, the text as written); kind is image, element or video."""
    return [(*_kind_and_number(m), m.group(0)) for m in _REF.finditer(text)]


def rewrite(text: str, style: RefStyle) -> str:
    """Rewrite every reference into one provider's syntax."""

    def render(match: re.Match[str]) -> str:
        kind, number = _kind_and_number(match)
        if style is RefStyle.ANGLE:
            return f"<<<{kind}_{number}>>>"
        if style is RefStyle.AT:
            return f"@{kind.capitalize()}{number}"
        return f"{'Figure' if kind == 'image' else kind.capitalize()} {number}"

    return _REF.sub(render, text)
