"""A server's settings: what a moderator types becomes the right value or a message naming the field and the
accepted form; the summary says every setting in plain words; the decisions (roles, channels, blocklist,
approval) follow the settings."""

from __future__ import annotations

import pytest
from hypothesis import given
from hypothesis import strategies as st

from bot.guilds import FIELDS, GuildSettings, set_field, summary
from bot.money import fmt_usd, usd


@pytest.mark.parametrize(
    ("name", "text", "field", "value"),
    [
        ("allowance", "$2.50", "member_allowance_micros", 2_500_000),
        ("member_allowance_micros", "0", "member_allowance_micros", 0),
        ("period", "Weekly", "allowance_period", "weekly"),
        ("tier", "pro", "default_tier", "pro"),
        ("max tier", "4K", "max_tier", "4k"),
        ("duration", "10", "default_duration", 10),
        ("duration", "10s", "default_duration", 10),
        ("aspect_ratio", "9:16", "default_aspect_ratio", "9:16"),
        ("channels", "<#111> 222, <#333>", "generate_channels", ["111", "222", "333"]),
        ("channels", "all", "generate_channels", []),
        ("trusted_roles", "<@&5> <@&6> <@&5>", "trusted_roles", ["5", "6"]),
        ("trusted_roles", "everyone", "trusted_roles", []),
        (
            "role_allowances",
            "<@&1>=$5, 2: 2.50; 3 1",
            "role_allowances",
            {"1": 5_000_000, "2": 2_500_000, "3": 1_000_000},
        ),
        ("role_allowances", "none", "role_allowances", {}),
        ("approval_threshold", "$3", "approval_threshold_micros", 3_000_000),
        ("approval_threshold", "off", "approval_threshold_micros", None),
        ("blocklist", "Gore,  bad   Word\nfoo, gore", "blocklist", ["gore", "bad word", "foo"]),
        ("nsfw", "age-restricted", "nsfw_policy", "age_restricted_only"),
        ("nsfw_policy", "BLOCK", "nsfw_policy", "block"),
        ("moderator_role", "<@&42>", "moderator_role_id", "42"),
        ("moderator_role", "none", "moderator_role_id", None),
        ("log_channel", "<#77>", "log_channel_id", "77"),
        ("pool_draws", "on", "pool_draws_allowed", True),
        ("pool_draws", "off", "pool_draws_allowed", False),
        ("pool_cap", "$2", "pool_draw_cap_micros", 2_000_000),
        ("pool_cap", "off", "pool_draw_cap_micros", None),
        ("gift_min_account_age", "30 days", "gift_min_account_age_days", 30),
        ("gift_min_membership", "0", "gift_min_membership_days", 0),
        ("gift_daily_cap", "1.25", "gift_daily_cap_micros", 1_250_000),
        ("approval_timeout", "1h30m", "approval_timeout_s", 5400),
        ("approval_timeout", "2d", "approval_timeout_s", 172800),
        ("approval_timeout", "3600", "approval_timeout_s", 3600),
        ("confirm_threshold", "$0.50", "confirm_threshold_micros", 500_000),
    ],
)
def test_what_a_moderator_types_becomes_the_right_value(name: str, text: str, field: str, value: object) -> None:
    updated = set_field(GuildSettings(), name, text)
    assert getattr(updated, field) == value
    untouched = {k: v for k, v in GuildSettings().model_dump().items() if k != field}
    assert {k: v for k, v in updated.model_dump().items() if k != field} == untouched


@pytest.mark.parametrize(
    ("name", "text", "message"),
    [
        ("duration", "20", r"^Default duration \(default_duration\): 20 is above 15; use a number of seconds"),
        ("duration", "ten", r"^Default duration \(default_duration\): 'ten' is not a whole number"),
        ("allowance", "-1", r"^Allowance per member \(member_allowance_micros\): it cannot be negative; use a dollar"),
        ("allowance", "lots", r"'lots' is not a dollar amount; use a dollar amount, e.g. \$2.50"),
        (
            "period",
            "yearly",
            r"^Allowance refills \(allowance_period\): 'yearly' is not one of them; use daily, ",
        ),
        ("tier", "ultra", r"^Default tier \(default_tier\): 'ultra' is not one of them; use standard, pro or 4k"),
        ("pool_draws", "maybe", r"'maybe' is neither on nor off; use on or off"),
        ("channels", "#general!", r"'#general!' is not a channel id; use channel mentions or ids"),
        ("role_allowances", "<@&1>", r"'<@&1>' has no amount; use role=amount pairs"),
        ("approval_timeout", "10", r"10 is below 60; use a length of time"),
        ("approval_timeout", "soon", r"'soon' is not a length of time"),
        ("max_duration", "4", r"the default duration 5 s is above the maximum duration 4 s"),
        ("max_tier", "standard", r"the default tier pro is above the maximum tier standard"),
        ("colour", "red", r"^there is no setting 'colour'; the settings are default_tier, "),
    ],
)
def test_a_wrong_value_names_the_field_and_the_accepted_form(name: str, text: str, message: str) -> None:
    start = GuildSettings(default_tier="pro")
    with pytest.raises(ValueError, match=message):
        set_field(start, name, text)


def test_the_summary_names_every_setting_in_plain_words() -> None:
    settings = GuildSettings(
        member_allowance_micros=usd("2.50"), allowance_period="weekly", role_allowances={"9": usd("10")},
        generate_channels=["1", "2"], approval_threshold_micros=None, pool_draws_allowed=True,
        pool_draw_cap_micros=usd("3"), approval_timeout_s=90 * 60, moderator_role_id="8",
    )  # fmt: skip
    rows = dict(summary(settings, role=lambda r: f"@role{r}", channel=lambda c: f"#ch{c}"))
    assert len(rows) == len(FIELDS)
    assert rows["Allowance per member"] == "$2.50"
    assert rows["Allowance refills"] == "weekly"
    assert rows["Allowance by role"] == "@role9 $10.00"
    assert rows["Channels where /generate works"] == "#ch1, #ch2"
    assert rows["Jobs need a moderator's approval above"] == "off (no threshold)"
    assert rows["Roles that generate without approval"] == "everyone"
    assert rows["Members may draw from the pool"] == "yes"
    assert rows["Most a member may draw from the pool per period"] == "$3.00"
    assert rows["Jobs waiting for approval are released after"] == "1 hour 30 minutes"
    assert rows["Moderator role"] == "@role8"
    assert rows["Clips flagged NSFW"] == "shown only in age-restricted channels"
    assert dict(summary(GuildSettings()))["Moderators' log channel"] == "none"


def test_role_allowance_is_the_largest_of_the_members_roles() -> None:
    settings = GuildSettings(role_allowances={"a": usd("1"), "b": usd("5"), "c": usd("2")})
    assert settings.allowance_for_roles(["a", "c", "x"]) == usd("2")
    assert settings.allowance_for_roles(["b", "a"]) == usd("5")
    assert settings.allowance_for_roles(["x"]) is None
    assert settings.allowance_for_roles([]) is None


def test_blocklist_matches_whole_words_case_insensitively() -> None:
    settings = GuildSettings(blocklist=["ass", "Bad Word"])
    assert settings.blocked_terms("a Bad   word here") == ["bad word"]
    assert settings.blocked_terms("ASS!") == ["ass"]
    assert settings.blocked_terms("a classy badword") == []


def test_channels_and_approval_follow_the_settings() -> None:
    anywhere = GuildSettings()
    assert anywhere.channel_allowed("1") and anywhere.channel_allowed(None)
    limited = GuildSettings(generate_channels=["1"])
    assert limited.channel_allowed("1") and not limited.channel_allowed("2") and not limited.channel_allowed(None)
    assert anywhere.approval_reason(usd("100"), []) is None
    gated = GuildSettings(approval_threshold_micros=usd("1"), trusted_roles=["t"])
    assert gated.approval_reason(usd("1"), ["t"]) is None
    reason = gated.approval_reason(usd("1.50"), ["t"])
    assert reason is not None and "$1.50" in reason and "$1.00" in reason
    assert gated.approval_reason(usd("0.50"), ["other"]) is not None


@given(st.integers(min_value=0, max_value=10**12))
def test_money_typed_as_shown_reads_back_exactly(micros: int) -> None:
    shown = fmt_usd(micros)
    for name in ("allowance", "gift_daily_cap", "pool_cap", "approval_threshold", "confirm_threshold"):
        updated = set_field(GuildSettings(), name, shown)
        assert getattr(updated, FIELDS_BY_ALIAS[name]) == micros


@given(st.integers(min_value=60, max_value=30 * 86400))
def test_a_timeout_shown_in_the_summary_reads_back(seconds: int) -> None:
    shown = dict(summary(GuildSettings(approval_timeout_s=seconds)))["Jobs waiting for approval are released after"]
    compact = shown.replace(" days", "d").replace(" day", "d").replace(" hours", "h").replace(" hour", "h")
    compact = compact.replace(" minutes", "m").replace(" minute", "m").replace(" seconds", "s").replace(" second", "s")
    assert set_field(GuildSettings(), "approval_timeout", compact).approval_timeout_s == seconds


FIELDS_BY_ALIAS = {
    "allowance": "member_allowance_micros",
    "gift_daily_cap": "gift_daily_cap_micros",
    "pool_cap": "pool_draw_cap_micros",
    "approval_threshold": "approval_threshold_micros",
    "confirm_threshold": "confirm_threshold_micros",
}
