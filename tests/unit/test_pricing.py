from __future__ import annotations

import pytest

from bot.money import fmt_usd, scale, usd, usd_str
from bot.pricing import PRICE_TABLE, PriceUnavailable, quote, rates_for
from bot.request import GenerationRequest
from tests.conftest import media_ref

VIDEO = media_ref("video", "ref.mp4")


@pytest.mark.parametrize(
    ("fields", "expected"),
    [
        ({"tier": "pro", "duration": 5, "sound": True}, "0.672"),
        ({"tier": "pro", "duration": 15, "video": VIDEO}, "2.52"),
        ({"tier": "standard", "duration": 10, "sound": True}, "1.12"),
        ({"tier": "standard", "duration": 15, "video": VIDEO}, "1.89"),
        ({"tier": "standard", "duration": 5}, "0.42"),
    ],
)
def test_seed_prices(fields: dict[str, object], expected: str) -> None:
    request = GenerationRequest.create(prompt="x", **fields)
    result = quote(request, "wavespeed", env={})
    assert usd_str(result.micros) == expected
    assert result.micros == usd(expected)
    assert isinstance(result.micros, int) and not result.estimate


def test_video_overrides_sound_in_price() -> None:
    with_video = GenerationRequest.create(prompt="x", video=VIDEO, duration=5)
    assert quote(with_video, "wavespeed", env={}).per_second == usd("0.126")


def test_local_is_free() -> None:
    for tier in ("standard", "pro", "4k"):
        request = GenerationRequest.create(prompt="x", tier=tier, duration=15, sound=True)
        assert quote(request, "local", env={}).micros == 0


def test_estimates_are_marked() -> None:
    request = GenerationRequest.create(prompt="x", tier="pro")
    assert quote(request, "atlascloud", env={}).estimate
    assert not quote(request, "wavespeed", env={}).estimate


def test_operator_override_keeps_surcharge_ratios() -> None:
    rates = rates_for("wavespeed", "pro", env={"REELBOT_PRICE_WAVESPEED_PRO": "0.2"})
    assert (rates.base, rates.sound, rates.video) == (200_000, 240_000, 300_000)


def test_unoffered_tier() -> None:
    with pytest.raises(PriceUnavailable):
        rates_for("runcomfy", "4k", env={})


def test_table_is_integers() -> None:
    for tiers in PRICE_TABLE.values():
        for rates in tiers.values():
            assert all(isinstance(v, int) for v in (rates.base, rates.sound, rates.video))


def test_money_parsing_and_formatting() -> None:
    assert usd("$1.25") == 1_250_000
    assert usd(3) == 3_000_000
    assert usd_str(0) == "0.00" and usd_str(1_500_000) == "1.50" and usd_str(134_400) == "0.1344"
    assert fmt_usd(-1_000_000) == "-$1.00"
    assert scale(112_000, "1.2") == 134_400
    for bad in ("abc", "1.0000001", "nan", "inf"):
        with pytest.raises(ValueError):
            usd(bad)
