"""The quota settings: money parsed exactly from text, a bad value named by its variable."""

from __future__ import annotations

import pytest

from bot.ledger import AllowancePolicy, Period
from bot.settings import SettingsError, load_settings


def test_default_is_no_allowance_daily(monkeypatch: pytest.MonkeyPatch, tmp_path) -> None:
    monkeypatch.chdir(tmp_path)
    for name in ("REELBOT_DEFAULT_ALLOWANCE_USD", "REELBOT_ALLOWANCE_PERIOD"):
        monkeypatch.delenv(name, raising=False)
    assert AllowancePolicy.from_settings(load_settings()) == AllowancePolicy(0, Period.DAILY)


def test_allowance_is_read_exactly(monkeypatch: pytest.MonkeyPatch) -> None:
    monkeypatch.setenv("REELBOT_DEFAULT_ALLOWANCE_USD", "$0.10")
    monkeypatch.setenv("REELBOT_ALLOWANCE_PERIOD", "monthly")
    assert AllowancePolicy.from_settings(load_settings()) == AllowancePolicy(100_000, Period.MONTHLY)


@pytest.mark.parametrize(
    ("name", "value", "message"),
    [
        ("REELBOT_DEFAULT_ALLOWANCE_USD", "lots", "is not a dollar amount"),
        ("REELBOT_DEFAULT_ALLOWANCE_USD", "-1", "is negative"),
        ("REELBOT_DEFAULT_ALLOWANCE_USD", "0.0000001", "more than 6 decimal places"),
        ("REELBOT_ALLOWANCE_PERIOD", "yearly", "'daily', 'weekly' or 'monthly'"),
    ],
)
def test_wrong_values_name_the_variable(monkeypatch: pytest.MonkeyPatch, name: str, value: str, message: str) -> None:
    monkeypatch.setenv(name, value)
    with pytest.raises(SettingsError, match=rf"^{name}: .*{message}"):
        load_settings()
