-- 0001: the jobs table — one row per accepted generation, its whole life in one place.
-- A timestamp column per state records when the job entered it; job_events keeps the full history.

CREATE TABLE jobs (
    id                  TEXT PRIMARY KEY,
    user_id             TEXT NOT NULL,
    guild_id            TEXT,
    channel_id          TEXT,
    request_json        TEXT NOT NULL,
    provider            TEXT NOT NULL,
    provider_task_id    TEXT,
    poll_url            TEXT,
    result_url          TEXT,
    cancel_url          TEXT,
    handle_json         TEXT,
    state               TEXT NOT NULL CHECK (state IN (
                            'queued', 'awaiting_approval', 'submitting', 'submitted', 'running',
                            'downloading', 'delivering', 'done', 'failed', 'cancelled', 'unknown')),
    cost_micros         INTEGER NOT NULL DEFAULT 0 CHECK (cost_micros >= 0),
    price_is_estimate   INTEGER NOT NULL DEFAULT 0,
    progress            REAL,
    queue_position      INTEGER,
    output_path         TEXT,
    output_url          TEXT,
    nsfw                INTEGER NOT NULL DEFAULT 0,
    error_code          TEXT,
    error_message       TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    queued_at           TEXT,
    awaiting_approval_at TEXT,
    submitting_at       TEXT,
    submitted_at        TEXT,
    running_at          TEXT,
    downloading_at      TEXT,
    delivering_at       TEXT,
    done_at             TEXT,
    failed_at           TEXT,
    cancelled_at        TEXT,
    unknown_at          TEXT
);

CREATE INDEX jobs_state ON jobs (state);
CREATE INDEX jobs_user ON jobs (user_id, created_at);
CREATE UNIQUE INDEX jobs_provider_task ON jobs (provider, provider_task_id) WHERE provider_task_id IS NOT NULL;

CREATE TABLE job_events (
    id          INTEGER PRIMARY KEY,
    job_id      TEXT NOT NULL REFERENCES jobs (id) ON DELETE CASCADE,
    at          TEXT NOT NULL,
    from_state  TEXT,
    to_state    TEXT NOT NULL,
    detail      TEXT
);

CREATE INDEX job_events_job ON job_events (job_id, id);
