-- 0002: the quota ledger — accounts, their append-only entries, and per-guild allowance policies.
--
-- Every change of money is one row in ledger_entries; an account's numbers are sums of its rows. The
-- accounts table caches those sums (updated in the same transaction as each entry) so that a reservation
-- need not scan history; `reelbot ledger verify` recomputes them and reports any difference.
-- All money is integer micro-dollars.

CREATE TABLE accounts (
    -- 'user:<guild>:<user>' (the CLI's own is 'user::local'), 'pool:<guild>', 'operator'
    id                          TEXT PRIMARY KEY,
    kind                        TEXT NOT NULL CHECK (kind IN ('user', 'pool', 'operator')),
    guild_id                    TEXT,
    user_id                     TEXT,
    -- An unlimited account may spend past zero (its spending is still recorded); see README.
    unlimited                   INTEGER NOT NULL DEFAULT 0 CHECK (unlimited IN (0, 1)),
    -- Cached sums of ledger_entries: the whole balance and what is held for jobs in progress, and the part
    -- of each that sits in the allowance bucket (the rest is the 'extra' bucket).
    balance_micros              INTEGER NOT NULL DEFAULT 0,
    reserved_micros             INTEGER NOT NULL DEFAULT 0,
    allowance_micros            INTEGER NOT NULL DEFAULT 0,
    allowance_reserved_micros   INTEGER NOT NULL DEFAULT 0,
    -- Allowance bookkeeping: the start of the period whose allowance this account has received, and how much
    -- it has received for that period net of any trim (so a policy change mid-period tops up or trims once).
    period_start                TEXT,
    period_granted_micros       INTEGER NOT NULL DEFAULT 0 CHECK (period_granted_micros >= 0),
    created_at                  TEXT NOT NULL,
    updated_at                  TEXT NOT NULL,
    CHECK ((kind = 'user') = (user_id IS NOT NULL)),
    CHECK (kind = 'operator' OR guild_id IS NOT NULL),
    -- The last line of defence against overspending: even a buggy caller cannot commit a state in which
    -- either bucket holds more for jobs than it contains (unlimited accounts excepted).
    CHECK (allowance_reserved_micros >= 0 AND reserved_micros >= allowance_reserved_micros),
    CHECK (allowance_micros >= allowance_reserved_micros),
    CHECK (unlimited = 1 OR balance_micros - allowance_micros >= reserved_micros - allowance_reserved_micros)
);

CREATE UNIQUE INDEX accounts_user ON accounts (guild_id, user_id) WHERE kind = 'user';

CREATE TABLE ledger_entries (
    id              INTEGER PRIMARY KEY,
    account_id      TEXT NOT NULL REFERENCES accounts (id),
    kind            TEXT NOT NULL CHECK (kind IN (
                        'grant', 'reserve', 'capture', 'release', 'transfer', 'adjust', 'expire')),
    bucket          TEXT NOT NULL CHECK (bucket IN ('allowance', 'extra')),
    -- Two effects per entry: amount_micros changes the balance, held_micros changes what is reserved.
    -- A reserve holds money without spending it (amount 0, held +x); a capture spends held money
    -- (amount = held = -x); a release lets it go (amount 0, held -x). Everything else moves the balance only.
    amount_micros   INTEGER NOT NULL,
    held_micros     INTEGER NOT NULL DEFAULT 0,
    -- For allowance-bucket entries: the allowance period the money belongs to (held allowance from an
    -- earlier period is expired when it is released, never handed back).
    period_start    TEXT,
    job_id          TEXT,
    -- The other side of a transfer.
    counterparty    TEXT REFERENCES accounts (id),
    actor           TEXT NOT NULL CHECK (actor <> ''),
    reason          TEXT NOT NULL CHECK (reason <> ''),
    created_at      TEXT NOT NULL,
    CHECK ((bucket = 'allowance') = (period_start IS NOT NULL)),
    CHECK (kind NOT IN ('reserve', 'capture', 'release') OR job_id IS NOT NULL),
    CHECK ((kind = 'transfer') = (counterparty IS NOT NULL)),
    CHECK (CASE kind
        WHEN 'reserve' THEN amount_micros = 0 AND held_micros >= 0
        WHEN 'capture' THEN amount_micros <= 0 AND held_micros = amount_micros
        WHEN 'release' THEN amount_micros = 0 AND held_micros <= 0
        WHEN 'grant'   THEN amount_micros > 0 AND held_micros = 0
        WHEN 'expire'  THEN amount_micros < 0 AND held_micros = 0
        ELSE amount_micros <> 0 AND held_micros = 0
    END)
);

CREATE INDEX ledger_entries_account ON ledger_entries (account_id, id);
CREATE INDEX ledger_entries_job ON ledger_entries (job_id) WHERE job_id IS NOT NULL;
-- One reservation per job, account and bucket, resolved at most once: a second capture or release of the
-- same job cannot be written even by code that forgot to check.
CREATE UNIQUE INDEX ledger_entries_one_reserve ON ledger_entries (job_id, account_id, bucket) WHERE kind = 'reserve';
CREATE UNIQUE INDEX ledger_entries_one_resolution
    ON ledger_entries (job_id, account_id, bucket, kind) WHERE kind IN ('capture', 'release');

-- Append-only: history is corrected with a new entry (an adjust), never by editing an old one.
CREATE TRIGGER ledger_entries_no_update BEFORE UPDATE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only: add an adjust entry instead');
END;

CREATE TRIGGER ledger_entries_no_delete BEFORE DELETE ON ledger_entries
BEGIN
    SELECT RAISE(ABORT, 'ledger_entries is append-only: add an adjust entry instead');
END;

-- A guild's periodic allowance per member; guilds without a row use REELBOT_DEFAULT_ALLOWANCE_USD.
CREATE TABLE allowance_policies (
    guild_id        TEXT PRIMARY KEY,
    amount_micros   INTEGER NOT NULL CHECK (amount_micros >= 0),
    period          TEXT NOT NULL CHECK (period IN ('daily', 'weekly', 'monthly')),
    updated_by      TEXT NOT NULL,
    updated_at      TEXT NOT NULL
);
