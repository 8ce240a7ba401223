"""What a request costs, per provider and tier, in integer micro-dollars.

Rates are per second of output. A reference video overrides sound (the model cannot add audio to it).
Where a provider's price is not documented we use the nearest documented sibling and mark the quote as
an estimate, so people are told it may differ; operators can set a rate with REELBOT_PRICE_<PROVIDER>_<TIER>.
"""

from __future__ import annotations

import os
from dataclasses import dataclass

from bot.money import Micros, scale, usd
from bot.request import GenerationRequest


@dataclass(frozen=True)
class Rates:
    """Micro-dollars per second of output for one provider and tier."""

    base: Micros
    sound: Micros
    video: Micros
    estimate: bool = False  # not from the provider's own price list


@dataclass(frozen=True)
class Quote:
    micros: Micros
    per_second: Micros
    basis: str  # e.g. "standard, with sound"
    estimate: bool


def _rates(base: str, sound: str, video: str, *, estimate: bool = False) -> Rates:
    return Rates(usd(base), usd(sound), usd(video), estimate)


# The seed prices: Standard $0.084/s, $0.112/s with sound, $0.126/s with a video reference;
# Pro $0.112/s, x1.2 with sound, x1.5 with a video reference.
STANDARD = _rates("0.084", "0.112", "0.126")
PRO = Rates(usd("0.112"), scale(usd("0.112"), "1.2"), scale(usd("0.112"), "1.5"))
# fal documents 4K reference-to-video at $0.42/s; sound and video surcharges are not published.
FOUR_K = _rates("0.42", "0.42", "0.42", estimate=True)

PRICE_TABLE: dict[str, dict[str, Rates]] = {
    "local": {tier: Rates(0, 0, 0) for tier in ("standard", "pro", "4k")},
    # WaveSpeed documents both tiers exactly as the seed table.
    "wavespeed": {"standard": STANDARD, "pro": PRO, "4k": FOUR_K},
    # Atlas Cloud sells the same model ids; its prices are not published: follow WaveSpeed, as an estimate.
    "atlascloud": {
        "standard": Rates(STANDARD.base, STANDARD.sound, STANDARD.video, estimate=True),
        "pro": Rates(PRO.base, PRO.sound, PRO.video, estimate=True),
    },
    # RunComfy documents Standard; Pro follows the seed Pro table as an estimate.
    "runcomfy": {"standard": STANDARD, "pro": Rates(PRO.base, PRO.sound, PRO.video, estimate=True)},
    # fal (PROVIDERS.md §3.4): O3 std $0.084/$0.112 (audio off/on) is documented for image-to-video, the same for
    # R2V and pro $0.112/$0.14 only by third parties; 4K $0.42 is fal's own. fal's R2V endpoint takes no reference
    # video, so the video rates are never used.
    "fal": {
        "standard": Rates(usd("0.084"), usd("0.112"), usd("0.126"), estimate=True),
        "pro": _rates("0.112", "0.14", "0.168", estimate=True),
        "4k": FOUR_K,
    },
    # EvoLink bills in credits and Kling in prepaid units: no per-second dollar price is published.
    "evolink": {
        "standard": Rates(STANDARD.base, STANDARD.sound, STANDARD.video, estimate=True),
        "pro": Rates(PRO.base, PRO.sound, PRO.video, estimate=True),
        "4k": FOUR_K,
    },
    "kling": {
        "standard": Rates(STANDARD.base, STANDARD.sound, STANDARD.video, estimate=True),
        "pro": Rates(PRO.base, PRO.sound, PRO.video, estimate=True),
    },
}


class PriceUnavailable(ValueError):
    pass


def rates_for(provider: str, tier: str, env: dict[str, str] | None = None) -> Rates:
    """The rates in force: an operator override (REELBOT_PRICE_FAL_PRO=0.15) wins over the table."""
    env = os.environ if env is None else env
    override = env.get(f"REELBOT_PRICE_{provider.upper()}_{tier.upper()}")
    table = PRICE_TABLE.get(provider, {})
    if override:
        per_second = usd(override)
        known = table.get(tier)
        if known and known.base:
            # keep the documented surcharge ratios relative to the base price
            return Rates(per_second, per_second * known.sound // known.base, per_second * known.video // known.base)
        return Rates(per_second, per_second, per_second)
    if tier not in table:
        raise PriceUnavailable(f"{provider} does not offer the {tier} tier")
    return table[tier]


def quote(request: GenerationRequest, provider: str, env: dict[str, str] | None = None) -> Quote:
    rates = rates_for(provider, request.tier, env)
    if request.video is not None:
        per_second, extra = rates.video, "with a reference video"
    elif request.sound:
        per_second, extra = rates.sound, "with sound"
    else:
        per_second, extra = rates.base, ""
    basis = f"{request.tier}, {request.duration} s" + (f", {extra}" if extra else "")
    return Quote(per_second * request.duration, per_second, basis, rates.estimate)
