-- 0004: each server's own settings (defaults, limits, thresholds, channels …) as one validated JSON document.
-- The shape lives in bot/guilds.py (pydantic); keeping it as a document lets settings grow without a
-- migration per field, while the audit of each change is kept in guild_settings_changes.

CREATE TABLE guild_settings (
    guild_id    TEXT PRIMARY KEY,
    settings    TEXT NOT NULL,
    updated_by  TEXT NOT NULL,
    updated_at  TEXT NOT NULL
);

CREATE TABLE guild_settings_changes (
    id          INTEGER PRIMARY KEY,
    guild_id    TEXT NOT NULL,
    field       TEXT NOT NULL,
    old_value   TEXT,
    new_value   TEXT,
    actor       TEXT NOT NULL,
    at          TEXT NOT NULL
);

CREATE INDEX guild_settings_changes_guild ON guild_settings_changes (guild_id, id);
