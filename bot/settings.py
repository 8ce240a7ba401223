"""All configuration, read once from the environment and an optional `.env` file.

Each field's validation alias is the environment variable itself, so an error names exactly what to fix.
Secrets are `SecretStr`: they print as '**********' in logs, errors and reprs.
"""

from __future__ import annotations

from pathlib import Path
from typing import Any, Literal

from pydantic import AliasChoices, Field, SecretStr, ValidationError, field_validator, model_validator
from pydantic_settings import BaseSettings, SettingsConfigDict

from bot.money import usd

HOSTED_PROVIDERS = ("wavespeed", "atlascloud", "runcomfy", "evolink", "fal", "kling")
PROVIDERS = ("local", *HOSTED_PROVIDERS)

# The credential variables each hosted provider needs before it can be used.
REQUIRED_SECRETS: dict[str, tuple[str, ...]] = {
    "wavespeed": ("WAVESPEED_API_KEY",),
    "atlascloud": ("ATLASCLOUD_API_KEY",),
    "runcomfy": ("RUNCOMFY_API_KEY",),
    "evolink": ("EVOLINK_API_KEY",),
    "fal": ("FAL_KEY",),
    "kling": ("KLING_ACCESS_KEY", "KLING_SECRET_KEY"),
}


def _env(name: str, *more: str) -> Any:
    return AliasChoices(name, *more) if more else name


class SettingsError(Exception):
    """A wrong or missing setting; the message is one line naming the variable."""


class Settings(BaseSettings):
    model_config = SettingsConfigDict(
        env_file=".env", env_file_encoding="utf-8", extra="ignore", populate_by_name=False
    )

    # Core
    db_path: Path = Field(Path("reelbot.db"), validation_alias="REELBOT_DB")
    data_dir: Path = Field(Path("reelbot-data"), validation_alias="REELBOT_DATA_DIR")
    provider: str = Field("local", validation_alias="REELBOT_PROVIDER")
    log_level: str = Field("INFO", validation_alias="REELBOT_LOG_LEVEL")
    # text: readable lines; json: one JSON object per line (time, level, logger, message, job fields)
    log_format: Literal["text", "json"] = Field("text", validation_alias="REELBOT_LOG_FORMAT")

    # Operations endpoint for `run` and `worker`: /healthz and /metrics (unset: no server)
    http_port: int | None = Field(None, ge=0, le=65535, validation_alias="REELBOT_HTTP_PORT")
    http_host: str = Field("0.0.0.0", validation_alias="REELBOT_HTTP_HOST")

    # Job engine
    poll_first_s: float = Field(10.0, gt=0, validation_alias="REELBOT_POLL_FIRST_S")
    poll_max_s: float = Field(30.0, gt=0, validation_alias="REELBOT_POLL_MAX_S")
    job_deadline_s: float = Field(1800.0, gt=0, validation_alias="REELBOT_JOB_DEADLINE_S")
    max_output_bytes: int = Field(500 * 1024 * 1024, gt=0, validation_alias="REELBOT_MAX_OUTPUT_BYTES")
    # Public base URL providers call back to (e.g. https://bot.example.com); unset: polling only
    webhook_url: str | None = Field(None, validation_alias="REELBOT_WEBHOOK_URL")
    # With callbacks registered, polling is only a backstop against a lost callback: this often
    webhook_backstop_s: float = Field(120.0, gt=0, validation_alias="REELBOT_WEBHOOK_BACKSTOP_S")
    # Where the receiver listens (host:port); default: all interfaces on the public URL's port
    webhook_listen: str | None = Field(None, validation_alias="REELBOT_WEBHOOK_LISTEN")

    # Quotas: a member's periodic allowance where the guild has set none (dollars as text, parsed exactly)
    default_allowance_usd: str = Field("0", validation_alias="REELBOT_DEFAULT_ALLOWANCE_USD")
    allowance_period: Literal["daily", "weekly", "monthly"] = Field(
        "daily", validation_alias="REELBOT_ALLOWANCE_PERIOD"
    )
    # The bot's owners (Discord user ids, comma-separated): they fund pools anywhere and are told about the cap
    owner_ids_text: str = Field("", validation_alias="REELBOT_OWNER_IDS")
    # What all servers together may commit per UTC day on the operator's provider account (unset: no cap)
    daily_spend_cap_usd: str | None = Field(None, validation_alias="REELBOT_DAILY_SPEND_CAP_USD")

    # Scheduling: how many jobs run at once, in all and per member / server / provider (<NAME>_MAX_CONCURRENCY)
    max_concurrency: int = Field(16, ge=1, validation_alias="REELBOT_MAX_CONCURRENCY")
    user_max_jobs: int = Field(2, ge=1, validation_alias="REELBOT_USER_MAX_JOBS")
    guild_max_jobs: int = Field(8, ge=1, validation_alias="REELBOT_GUILD_MAX_JOBS")
    # Unset: the provider's documented default (WaveSpeed's entry tier allows 2), else 4; local renders use CPU: 2.
    local_max_concurrency: int = Field(2, ge=1, validation_alias="LOCAL_MAX_CONCURRENCY")
    wavespeed_max_concurrency: int | None = Field(None, ge=1, validation_alias="WAVESPEED_MAX_CONCURRENCY")
    atlascloud_max_concurrency: int | None = Field(None, ge=1, validation_alias="ATLASCLOUD_MAX_CONCURRENCY")
    runcomfy_max_concurrency: int | None = Field(None, ge=1, validation_alias="RUNCOMFY_MAX_CONCURRENCY")
    evolink_max_concurrency: int | None = Field(None, ge=1, validation_alias="EVOLINK_MAX_CONCURRENCY")
    fal_max_concurrency: int | None = Field(None, ge=1, validation_alias="FAL_MAX_CONCURRENCY")
    kling_max_concurrency: int | None = Field(None, ge=1, validation_alias="KLING_MAX_CONCURRENCY")

    # Provider HTTP: reads are retried with backoff; a submit is sent once
    http_timeout_s: float = Field(30.0, gt=0, validation_alias="REELBOT_HTTP_TIMEOUT_S")
    http_submit_timeout_s: float = Field(60.0, gt=0, validation_alias="REELBOT_HTTP_SUBMIT_TIMEOUT_S")
    http_retries: int = Field(5, ge=1, le=20, validation_alias="REELBOT_HTTP_RETRIES")
    http_backoff_s: float = Field(0.5, gt=0, validation_alias="REELBOT_HTTP_BACKOFF_S")
    http_backoff_max_s: float = Field(10.0, gt=0, validation_alias="REELBOT_HTTP_BACKOFF_MAX_S")

    # Discord
    discord_token: SecretStr | None = Field(None, validation_alias="DISCORD_TOKEN")
    discord_api_base: str = Field("https://discord.com/api/v10", validation_alias="DISCORD_API_BASE")
    discord_gateway_url: str | None = Field(None, validation_alias="DISCORD_GATEWAY_URL")
    dev_guild: int | None = Field(None, validation_alias="REELBOT_DEV_GUILD")
    # Status messages: edited on a state change at most this often, and for progress alone at most every …
    status_state_edit_s: float = Field(1.5, ge=0, validation_alias="REELBOT_STATUS_STATE_EDIT_S")
    status_progress_edit_s: float = Field(10.0, ge=0, validation_alias="REELBOT_STATUS_PROGRESS_EDIT_S")

    # Hosted providers: credentials and base URLs (a base URL points an adapter at a proxy or a test server)
    wavespeed_api_key: SecretStr | None = Field(None, validation_alias="WAVESPEED_API_KEY")
    wavespeed_base_url: str = Field("https://api.wavespeed.ai", validation_alias="WAVESPEED_BASE_URL")
    wavespeed_webhook_secret: SecretStr | None = Field(None, validation_alias="WAVESPEED_WEBHOOK_SECRET")
    atlascloud_api_key: SecretStr | None = Field(None, validation_alias="ATLASCLOUD_API_KEY")
    atlascloud_base_url: str = Field("https://api.atlascloud.ai", validation_alias="ATLASCLOUD_BASE_URL")
    runcomfy_api_key: SecretStr | None = Field(None, validation_alias="RUNCOMFY_API_KEY")
    runcomfy_base_url: str = Field("https://model-api.runcomfy.net", validation_alias="RUNCOMFY_BASE_URL")
    # Where the operator publishes REELBOT_DATA_DIR/media over HTTPS (a web server or a synced bucket), for
    # providers that only fetch inputs by public URL and offer no upload API (RunComfy)
    public_media_url: str | None = Field(None, validation_alias="REELBOT_PUBLIC_MEDIA_URL")
    evolink_api_key: SecretStr | None = Field(None, validation_alias="EVOLINK_API_KEY")
    evolink_base_url: str = Field("https://api.evolink.ai", validation_alias="EVOLINK_BASE_URL")
    # EvoLink's file upload API lives on its own host (files kept 72 h)
    evolink_files_url: str = Field("https://files-api.evolink.ai", validation_alias="EVOLINK_FILES_URL")
    fal_key: SecretStr | None = Field(None, validation_alias=_env("FAL_KEY", "FAL_API_KEY"))
    fal_base_url: str = Field("https://queue.fal.run", validation_alias="FAL_BASE_URL")
    # fal's REST host: CDN upload tokens (the CDN host comes back with the token)
    fal_storage_url: str = Field("https://rest.alpha.fal.ai", validation_alias="FAL_STORAGE_URL")
    # the Ed25519 keys fal signs webhooks with
    fal_jwks_url: str = Field("https://rest.alpha.fal.ai/.well-known/jwks.json", validation_alias="FAL_JWKS_URL")
    kling_access_key: SecretStr | None = Field(None, validation_alias="KLING_ACCESS_KEY")
    kling_secret_key: SecretStr | None = Field(None, validation_alias="KLING_SECRET_KEY")
    kling_base_url: str = Field("https://api-singapore.klingai.com", validation_alias="KLING_BASE_URL")

    @field_validator("default_allowance_usd", mode="before")
    @classmethod
    def _dollars(cls, value: Any) -> str:
        if usd(value) < 0:  # usd() itself rejects what is not an exact dollar amount
            raise ValueError(f"{value!r} is negative: an allowance is 0 or more dollars")
        return str(value).strip()

    @field_validator("owner_ids_text", mode="before")
    @classmethod
    def _owner_ids(cls, value: Any) -> str:
        ids = [part.strip() for part in str(value or "").split(",") if part.strip()]
        bad = [part for part in ids if not part.isdigit()]
        if bad:
            raise ValueError(f"{bad[0]!r} is not a Discord user id: use comma-separated numbers")
        return ",".join(ids)

    @field_validator("daily_spend_cap_usd", mode="before")
    @classmethod
    def _cap(cls, value: Any) -> str | None:
        if value is None or not str(value).strip():
            return None
        if usd(value) < 0:  # usd() itself rejects what is not an exact dollar amount
            raise ValueError(f"{value!r} is negative: the cap is 0 or more dollars")
        return str(value).strip()

    @property
    def owner_ids(self) -> frozenset[str]:
        return frozenset(part for part in self.owner_ids_text.split(",") if part)

    @property
    def daily_spend_cap_micros(self) -> int | None:
        return None if self.daily_spend_cap_usd is None else usd(self.daily_spend_cap_usd)

    @model_validator(mode="after")
    def _known_provider(self) -> Settings:
        if self.provider not in PROVIDERS:
            raise ValueError(f"REELBOT_PROVIDER={self.provider!r} is not one of {', '.join(PROVIDERS)}")
        missing = self.missing_credentials(self.provider)
        if missing:
            raise ValueError(f"{' and '.join(missing)} must be set because REELBOT_PROVIDER={self.provider}")
        return self

    def secret(self, env_name: str) -> SecretStr | None:
        """The secret behind an environment variable name, e.g. secret("FAL_KEY")."""
        return getattr(self, env_name.lower())

    def missing_credentials(self, provider: str) -> list[str]:
        return [name for name in REQUIRED_SECRETS.get(provider, ()) if not self.secret(name)]

    def require_provider(self, provider: str) -> None:
        """Fail with one line when `provider` cannot be used with these settings."""
        if provider not in PROVIDERS:
            raise SettingsError(f"unknown provider {provider!r}: choose one of {', '.join(PROVIDERS)}")
        missing = self.missing_credentials(provider)
        if missing:
            raise SettingsError(f"{' and '.join(missing)} must be set to use the {provider} provider")

    def provider_concurrency(self, provider: str, documented: int | None = None) -> int:
        configured = getattr(self, f"{provider}_max_concurrency", None)
        return int(configured or documented or 4)

    def base_url(self, provider: str) -> str:
        return str(getattr(self, f"{provider}_base_url")).rstrip("/")


def load_settings(**overrides: Any) -> Settings:
    """Read settings; a bad or missing value raises SettingsError with one line naming the variable."""
    try:
        return Settings(**overrides)
    except ValidationError as exc:
        first = exc.errors(include_url=False, include_input=False)[0]
        name = ".".join(str(part) for part in first["loc"]) or "settings"
        message = first["msg"].removeprefix("Value error, ")
        if name == "settings" or message.startswith(name):
            raise SettingsError(message) from None
        raise SettingsError(f"{name}: {message}") from None
