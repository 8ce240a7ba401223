"""A server's own settings: the defaults and limits `/generate` applies there. Core, no discord.py."""

from __future__ import annotations

from typing import Any

from pydantic import BaseModel, ConfigDict, Field

from bot.money import usd
from bot.request import AspectRatio, Tier


class GuildSettings(BaseModel):
    model_config = ConfigDict(extra="ignore", validate_assignment=True)

    default_tier: Tier = "standard"
    default_duration: int = Field(5, ge=3, le=15)
    default_aspect_ratio: AspectRatio = "16:9"
    max_tier: Tier = "pro"
    max_duration: int = Field(15, ge=3, le=15)
    # Above this, the member confirms the cost first (ephemeral Confirm/Cancel).
    confirm_threshold_micros: int = Field(usd("1.00"), ge=0)

    def tier_allowed(self, tier: str) -> bool:
        order = ["standard", "pro", "4k"]
        return order.index(tier) <= order.index(self.max_tier)

    def changed(self, **updates: Any) -> GuildSettings:
        return self.model_validate({**self.model_dump(), **updates})
