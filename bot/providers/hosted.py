"""The shared base of hosted adapters: settings → one configured ProviderHTTP."""

from __future__ import annotations

from collections.abc import Mapping

import httpx

from bot.providers.base import Provider
from bot.providers.http import Classifier, ProviderHTTP, default_classify, policy_from
from bot.settings import Settings


class HostedProvider(Provider):
    """A provider reached over HTTP. Subclasses define `auth_headers()` and may override `classify`."""

    def __init__(self, settings: Settings, http: httpx.AsyncClient | None = None) -> None:
        super().__init__(settings, http)
        self.api = ProviderHTTP(
            self.http,
            provider=self.name,
            base_url=settings.base_url(self.name),
            auth_headers=self.auth_headers,
            classify=self.classifier(),
            read_timeout_s=settings.http_timeout_s,
            submit_timeout_s=settings.http_submit_timeout_s,
            retry=policy_from(settings),
        )

    def classifier(self) -> Classifier:
        return default_classify(self.name)

    def auth_headers(self) -> Mapping[str, str]:
        raise NotImplementedError
