"""Shared fixtures: real files, a real SQLite database, settings pointing into a temporary folder."""

from __future__ import annotations

from collections.abc import AsyncIterator
from pathlib import Path

import aiosqlite
import pytest

from bot.request import MediaRef
from bot.settings import Settings, load_settings
from bot.store.db import connect
from bot.store.migrate import migrate

FIXTURES = Path(__file__).parent / "fixtures"


@pytest.fixture
def fixtures_dir() -> Path:
    return FIXTURES


@pytest.fixture
def settings(tmp_path: Path, monkeypatch: pytest.MonkeyPatch) -> Settings:
    """Settings isolated in tmp_path, whatever the developer's environment or .env says."""
    monkeypatch.chdir(tmp_path)
    return load_settings(
        REELBOT_DB=tmp_path / "reelbot.db",
        REELBOT_DATA_DIR=tmp_path / "data",
        REELBOT_PROVIDER="local",
        REELBOT_POLL_FIRST_S=0.05,
        REELBOT_POLL_MAX_S=0.2,
    )


@pytest.fixture
async def db(tmp_path: Path) -> AsyncIterator[aiosqlite.Connection]:
    conn = await connect(tmp_path / "test.db")
    await migrate(conn)
    try:
        yield conn
    finally:
        await conn.close()


def media_ref(kind: str = "image", name: str = "a.png", **extra: object) -> MediaRef:
    """A MediaRef for model-level tests that never touch the file."""
    values: dict[str, object] = {
        "name": name,
        "path": f"/nonexistent/{name}",
        "sha256": "0" * 64,
        "kind": kind,
        "format": "png" if kind == "image" else "mp4",
        "width": 1280,
        "height": 720,
        "size_bytes": 1000,
    }
    if kind == "video":
        values.update(duration_s=5.0, has_audio=True)
    values.update(extra)
    return MediaRef.model_validate(values)
