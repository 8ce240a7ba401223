"""What the log redactor masks, and what it leaves alone."""

from __future__ import annotations

import base64

import pytest
from pydantic import SecretStr

from bot.observe.redact import Redactor
from bot.settings import load_settings

CDN = (
    "https://cdn.discordapp.com/attachments/1100000000000000001/1200000000000000002/ref.png"
    "?ex=6790a1b2&is=678f5032&hm=4f1c2a9be0d3c8e7f6a5b4c3d2e1f0a9b8c7d6e5f4a3b2c1d0e9f8a7b6c5d4e3&"
)
S3 = (
    "https://bucket.s3.amazonaws.com/out/clip.mp4?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential=AKIAEXAMPLE"
    "%2F20260101%2Fus-east-1%2Fs3%2Faws4_request&X-Amz-Signature=deadbeefcafe"
)


@pytest.fixture
def redact() -> Redactor:
    return Redactor(["sk-live-0123456789abcdef"])


@pytest.mark.parametrize(
    ("text", "gone"),
    [
        ("calling with key sk-live-0123456789abcdef now", "sk-live-0123456789abcdef"),
        ("Authorization: Bearer xyz", "xyz"),
        ("headers={'Authorization': 'Bearer abc.def.ghi', 'Accept': 'json'}", "abc.def.ghi"),
        ('{"authorization": "Key 1234abcd:5678efgh9012"}', "5678efgh9012"),
        ("sent Bearer eyJhbGciOiJIUzI1NiJ9.e30.sig to fal", "eyJhbGciOiJIUzI1NiJ9"),
        ("fal says Key 0a1b2c3d-aaaa:ffffeeeeddddcccc", "ffffeeeeddddcccc"),
        (f"fetching {CDN} failed", "hm=4f1c2a9b"),
        (f"download {S3}", "X-Amz-Signature=deadbeefcafe"),
        ("https://api.example.com/v1/x?token=tok_123456&page=2", "tok_123456"),
        ("https://api.example.com/v1/x?key=AIzaSyExample&q=1", "AIzaSyExample"),
        ("X-Api-Key: 9f8e7d6c5b4a", "9f8e7d6c5b4a"),
        ("api_key=abcdef123456&x=1", "abcdef123456"),
        ("postgres://reelbot:hunter2-password@db:5432/x", "hunter2-password"),
    ],
)
def test_masks(redact: Redactor, text: str, gone: str) -> None:
    out = redact(text)
    assert gone not in out, out
    assert "***" in out or "<redacted>" in out


def test_signed_url_keeps_host_and_path(redact: Redactor) -> None:
    out = redact(f"fetching {CDN} failed")
    assert out == (
        "fetching https://cdn.discordapp.com/attachments/1100000000000000001/1200000000000000002/ref.png?<redacted>"
        " failed"
    )


def test_unsigned_urls_are_left_alone(redact: Redactor) -> None:
    text = "GET https://api.wavespeed.ai/api/v3/predictions/ws000001/result?page=2&limit=10"
    assert redact(text) == text


def test_long_base64_is_replaced_by_its_length(redact: Redactor) -> None:
    blob = base64.b64encode(bytes(range(256)) * 2).decode()
    out = redact(f'{{"image": "data:image/png;base64,{blob}"}}')
    assert blob[:40] not in out and f"<{len(blob)} chars of base64>" in out
    short = base64.b64encode(b"x" * 30).decode()
    assert short in redact(short)  # a short token-like string is not a blob


@pytest.mark.parametrize(
    "text",
    [
        "job abc123: queued -> submitting",
        "the interaction token was rejected; posting a status message",
        "WaveSpeed bearer of bad news: the key is missing",
        "dispatch failed; trying again",
        "wavespeed GET api.wavespeed.ai/api/v3/predictions/ws1/result -> 200",
    ],
)
def test_ordinary_messages_are_untouched(redact: Redactor, text: str) -> None:
    assert redact(text) == text


def test_every_secret_setting_is_learnt(tmp_path, monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.chdir(tmp_path)
    settings = load_settings(WAVESPEED_API_KEY="ws-secret-value-1", DISCORD_TOKEN="discord.token.value",
                             KLING_SECRET_KEY="kling-secret-value", REELBOT_PROVIDER="local")  # fmt: skip
    redact = Redactor()
    redact.add_settings(settings)
    for value in ("ws-secret-value-1", "discord.token.value", "kling-secret-value"):
        assert value not in redact(f"oops: {value}!")
    assert isinstance(settings.discord_token, SecretStr)
