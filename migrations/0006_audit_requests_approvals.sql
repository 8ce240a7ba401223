-- 0006: the admin-action audit trail, members' quota requests, and who approved a job.
--
-- Money changes are already ledger entries; admin_actions records the decisions around them (a settings
-- change, a request approved or denied, a job approved, a gift, a pool funded) with who, whom, how much
-- and why. `/audit` and `reelbot audit export` merge the two into one stream.

CREATE TABLE admin_actions (
    id              INTEGER PRIMARY KEY,
    -- NULL for actions that belong to no server (e.g. the operator's own).
    guild_id        TEXT,
    actor           TEXT NOT NULL CHECK (actor <> ''),
    -- settings_change, quota_request, quota_approve, quota_deny, gift, pool_fund, job_approve, job_deny,
    -- job_approval_expired, grant … (bot/store/audit.py); an identifier, so new kinds need no migration.
    kind            TEXT NOT NULL CHECK (kind <> '' AND kind NOT GLOB '*[^a-z0-9_]*'),
    -- whom it concerns: usually a member id
    target          TEXT,
    amount_micros   INTEGER,
    reason          TEXT NOT NULL CHECK (reason <> ''),
    -- the job it concerns, when there is one (copied from detail's job_id so it can be filtered and shown)
    job_id          TEXT,
    -- anything else worth keeping, as a JSON object
    detail_json     TEXT,
    created_at      TEXT NOT NULL
);

CREATE INDEX admin_actions_guild ON admin_actions (guild_id, created_at, id);
CREATE INDEX admin_actions_job ON admin_actions (job_id) WHERE job_id IS NOT NULL;

-- Append-only like the ledger: the audit trail is only ever added to.
CREATE TRIGGER admin_actions_no_update BEFORE UPDATE ON admin_actions
BEGIN
    SELECT RAISE(ABORT, 'admin_actions is append-only');
END;

CREATE TRIGGER admin_actions_no_delete BEFORE DELETE ON admin_actions
BEGIN
    SELECT RAISE(ABORT, 'admin_actions is append-only');
END;

-- The audit reads a guild's ledger entries through its accounts.
CREATE INDEX accounts_guild ON accounts (guild_id);

-- A member asks the moderators for more quota; one open request per member and server at a time.
CREATE TABLE quota_requests (
    id                  INTEGER PRIMARY KEY,
    guild_id            TEXT NOT NULL,
    user_id             TEXT NOT NULL,
    amount_micros       INTEGER NOT NULL CHECK (amount_micros > 0),
    reason              TEXT NOT NULL CHECK (reason <> ''),
    state               TEXT NOT NULL DEFAULT 'open' CHECK (state IN ('open', 'approved', 'denied', 'withdrawn')),
    -- what was granted: the full amount or part of it
    granted_micros      INTEGER,
    decided_by          TEXT,
    decision_reason     TEXT,
    decided_at          TEXT,
    -- the moderators' approval card, so it can be edited after a restart
    card_channel_id     TEXT,
    card_message_id     TEXT,
    created_at          TEXT NOT NULL,
    updated_at          TEXT NOT NULL,
    CHECK ((state = 'open') = (decided_at IS NULL)),
    CHECK (state NOT IN ('approved', 'denied') OR decided_by IS NOT NULL),
    CHECK ((state = 'approved') = (granted_micros IS NOT NULL)),
    CHECK (granted_micros IS NULL OR (granted_micros > 0 AND granted_micros <= amount_micros)),
    CHECK (state <> 'denied' OR (decision_reason IS NOT NULL AND decision_reason <> ''))
);

-- The last line of defence for "one open request at a time", across processes too.
CREATE UNIQUE INDEX quota_requests_one_open ON quota_requests (guild_id, user_id) WHERE state = 'open';
CREATE INDEX quota_requests_guild ON quota_requests (guild_id, state, id);

-- Who let a job out of awaiting_approval, and when: its deadline counts from then, not from its creation.
ALTER TABLE jobs ADD COLUMN approved_by TEXT;
ALTER TABLE jobs ADD COLUMN approved_at TEXT;
