"""Provider adapters, looked up by the names used in REELBOT_PROVIDER and --provider."""

from __future__ import annotations

from importlib import import_module

import httpx

from bot.providers.base import Provider
from bot.settings import PROVIDERS, Settings

# name -> "module:Class"; imported lazily so one adapter's import cost is paid only when used
ADAPTERS: dict[str, str] = {
    "local": "bot.providers.local:LocalProvider",
    "wavespeed": "bot.providers.wavespeed:WaveSpeedProvider",
    "atlascloud": "bot.providers.atlascloud:AtlasCloudProvider",
    "runcomfy": "bot.providers.runcomfy:RunComfyProvider",
    "evolink": "bot.providers.evolink:EvoLinkProvider",
    "fal": "bot.providers.fal:FalProvider",
    "kling": "bot.providers.kling:KlingProvider",
}


def available() -> list[str]:
    return [name for name in PROVIDERS if name in ADAPTERS]


def provider_class(name: str) -> type[Provider]:
    if name not in ADAPTERS:
        raise KeyError(f"unknown provider {name!r}: choose one of {', '.join(available())}")
    module, _, cls = ADAPTERS[name].partition(":")
    return getattr(import_module(module), cls)  # type: ignore[no-any-return]


def create_provider(name: str, settings: Settings, http: httpx.AsyncClient | None = None) -> Provider:
    """An adapter ready to use; raises SettingsError when its credentials are missing."""
    settings.require_provider(name)
    return provider_class(name)(settings, http)
