from __future__ import annotations

from hypothesis import given
from hypothesis import strategies as st

from bot.prompt_refs import RefStyle, find_refs, rewrite

TEXT = "Figure 1 hands image 2 to @Image3 near <<<element_1>>>"


def test_finds_every_syntax() -> None:
    assert [(k, n) for k, n, _ in find_refs(TEXT)] == [("image", 1), ("image", 2), ("image", 3), ("element", 1)]


def test_rewrites_to_each_style() -> None:
    assert rewrite(TEXT, RefStyle.FIGURE) == "Figure 1 hands Figure 2 to Figure 3 near Element 1"
    assert rewrite(TEXT, RefStyle.AT) == "@Image1 hands @Image2 to @Image3 near @Element1"
    assert rewrite(TEXT, RefStyle.ANGLE) == "<<<image_1>>> hands <<<image_2>>> to <<<image_3>>> near <<<element_1>>>"


def test_words_that_merely_start_alike_are_left_alone() -> None:
    assert find_refs("imagery 4 and figures 2 and @Imagex") == []


@given(st.lists(st.tuples(st.sampled_from(["image", "element"]), st.integers(1, 7)), max_size=5))
def test_rewrite_is_stable_across_styles(refs: list[tuple[str, int]]) -> None:
    text = " and ".join(f"@{k.capitalize()}{n}" for k, n in refs)
    for style in RefStyle:
        assert [(k, n) for k, n, _ in find_refs(rewrite(text, style))] == refs
