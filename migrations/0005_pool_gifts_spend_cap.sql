-- 0005: role allowances, the shared pool, gifts, and the operator's daily spend cap.

-- A member's allowance from their roles (the largest of their roles' allowances), refreshed each time the
-- Discord side sees the member; NULL: the guild's allowance policy applies. The ledger treats a change like a
-- policy change mid-period: a raise is topped up and a cut trims what is unspent, once.
ALTER TABLE accounts ADD COLUMN allowance_override_micros INTEGER
    CHECK (allowance_override_micros IS NULL OR allowance_override_micros >= 0);

-- Money put into a server's pool. A grant that never expires goes to the pool account 'pool:<guild>'; one that
-- expires gets an account of its own, 'pool:<guild>:<id>', so what is left of it at expiry is exactly that
-- account's balance (no attribution of spending to grants is needed). The sweep expires it and closes the
-- row once nothing is held there any more.
CREATE TABLE pool_grants (
    id              INTEGER PRIMARY KEY,
    guild_id        TEXT NOT NULL,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    amount_micros   INTEGER NOT NULL CHECK (amount_micros > 0),
    actor           TEXT NOT NULL CHECK (actor <> ''),
    reason          TEXT NOT NULL CHECK (reason <> ''),
    created_at      TEXT NOT NULL,
    expires_at      TEXT,
    -- what the sweep has expired so far (money held by jobs at expiry is expired when they release it)
    expired_micros  INTEGER NOT NULL DEFAULT 0 CHECK (expired_micros >= 0),
    closed_at       TEXT,
    CHECK (expires_at IS NOT NULL OR closed_at IS NULL)
);

CREATE INDEX pool_grants_guild ON pool_grants (guild_id, id);
CREATE INDEX pool_grants_due ON pool_grants (expires_at) WHERE expires_at IS NOT NULL AND closed_at IS NULL;

-- A job that drew on its server's pool (the money itself is the job's reserve entries on pool accounts; this
-- row says whose job it was, for the per-member cap and for /pool).
CREATE TABLE pool_draws (
    job_id          TEXT PRIMARY KEY,
    guild_id        TEXT NOT NULL,
    user_id         TEXT NOT NULL,
    amount_micros   INTEGER NOT NULL CHECK (amount_micros > 0),
    created_at      TEXT NOT NULL
);

CREATE INDEX pool_draws_member ON pool_draws (guild_id, user_id, created_at);
CREATE INDEX pool_draws_guild ON pool_draws (guild_id, created_at);

-- Member-to-member gifts (the money moves as a ledger transfer; this row makes the daily cap a cheap sum).
CREATE TABLE gifts (
    id              INTEGER PRIMARY KEY,
    guild_id        TEXT NOT NULL,
    giver_id        TEXT NOT NULL,
    receiver_id     TEXT NOT NULL CHECK (receiver_id <> giver_id),
    amount_micros   INTEGER NOT NULL CHECK (amount_micros > 0),
    created_at      TEXT NOT NULL
);

CREATE INDEX gifts_giver ON gifts (guild_id, giver_id, created_at);

-- The first refusal of each UTC day by REELBOT_DAILY_SPEND_CAP_USD, so the owners are told once a day however
-- many processes refuse jobs and however often they restart.
CREATE TABLE spend_cap_days (
    day                 TEXT PRIMARY KEY,  -- YYYY-MM-DD (UTC)
    cap_micros          INTEGER NOT NULL,
    committed_micros    INTEGER NOT NULL,  -- spent and reserved that day when the first job was refused
    first_refused_at    TEXT NOT NULL,
    told_at             TEXT
);

-- Today's committed spend is summed over the jobs whose reservation was made today.
CREATE INDEX ledger_entries_reserved_at ON ledger_entries (created_at) WHERE kind = 'reserve';
