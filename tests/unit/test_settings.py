from __future__ import annotations

import pytest

from bot.settings import SettingsError, load_settings


def test_defaults(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("REELBOT_DB", "REELBOT_PROVIDER"):
        monkeypatch.delenv(name, raising=False)
    settings = load_settings()
    assert str(settings.db_path) == "reelbot.db" and settings.provider == "local"


def test_wrong_value_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_POLL_FIRST_S", "soon")
    with pytest.raises(SettingsError, match=r"^REELBOT_POLL_FIRST_S: "):
        load_settings()


def test_unknown_provider_names_the_variable(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_PROVIDER", "midjourney")
    with pytest.raises(SettingsError, match=r"^REELBOT_PROVIDER='midjourney' is not one of local, wavespeed"):
        load_settings()


def test_missing_credentials_name_the_variables(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.delenv("KLING_ACCESS_KEY", raising=False)
    monkeypatch.delenv("KLING_SECRET_KEY", raising=False)
    settings = load_settings()
    with pytest.raises(SettingsError, match="KLING_ACCESS_KEY and KLING_SECRET_KEY must be set to use the kling"):
        settings.require_provider("kling")


def test_secrets_never_in_repr_or_str(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("FAL_API_KEY", "fal-secret-123")
    monkeypatch.setenv("DISCORD_TOKEN", "discord-secret-456")
    settings = load_settings()
    assert settings.fal_key is not None and settings.fal_key.get_secret_value() == "fal-secret-123"
    for text in (repr(settings), str(settings), str(settings.model_dump())):
        assert "fal-secret-123" not in text and "discord-secret-456" not in text


def test_dotenv_file_is_read(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    monkeypatch.delenv("REELBOT_DB", raising=False)
    (tmp_path / ".env").write_text("REELBOT_DB=from-dotenv.db\n")
    assert str(load_settings().db_path) == "from-dotenv.db"
